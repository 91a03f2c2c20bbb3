//! The typed, effective settings one connection runs under (after `Match`).
//!
//! Everything else in rsshd reads these fields; only the config module writes them,
//! driven by its keyword table.

use std::path::PathBuf;
use std::time::Duration;

use super::algorithms::List;
pub use super::persource::PenaltySettings;

/// `PermitRootLogin`'s four values, as sshd_config(5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitRootLogin {
    Yes,
    /// Also spelled `without-password` (the older name, which `sshd -T` still prints).
    ProhibitPassword,
    ForcedCommandsOnly,
    No,
}

/// `AllowTcpForwarding` (and `AllowStreamLocalForwarding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    Yes,
    No,
    Local,
    Remote,
}

/// `GatewayPorts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayPorts {
    No,
    Yes,
    ClientSpecified,
}

/// `IdleActivity`: what resets the idle timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleActivity {
    Input,
    InputOutput,
}

/// `SessionCleanup`: what happens to a session's processes when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCleanup {
    /// As sshd at a normal end (a terminal is hung up by closing it, a command's
    /// leftover processes are left alone); SIGHUP to what is left after a lost
    /// connection or a lifetime limit.
    Hangup,
    /// SIGHUP, then SIGKILL after a grace, to every process of the session at
    /// every end.
    Kill,
}

/// One `ChannelTimeout` entry: a channel-type pattern (`session`, `direct-tcpip`,
/// `global`, wildcards) and its timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelTimeoutRule {
    pub pattern: String,
    pub timeout: Duration,
}

/// `ListenAddress host[:port]`; `port` is `None` when the `Port` list applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    pub host: String,
    pub port: Option<u16>,
}

/// The log verbosity names sshd uses.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum LogLevel {
    Quiet,
    Fatal,
    Error,
    Info,
    Verbose,
    Debug1,
    Debug2,
    Debug3,
}

/// `RekeyLimit BYTES [INTERVAL]`: 0 bytes is `default` (the cipher's own limit),
/// no interval is `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RekeyLimit {
    pub bytes: u64,
    pub interval: Option<Duration>,
}

/// `PubkeyAuthOptions`: what every security-key signature must show, whatever
/// the key's own options say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PubkeyAuthOptions {
    pub touch_required: bool,
    pub verify_required: bool,
}

/// `FingerprintHash`: how key fingerprints are written in log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FingerprintHash {
    Md5,
    Sha256,
}

/// Effective server settings. Defaults are OpenSSH's (see [`Settings::default`]),
/// except for rsshd's own embedded defaults (README's first section), which the config module
/// applies when no config file exists.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    // --- listening (global only) ---
    pub port: Vec<u16>,
    pub listen_address: Vec<ListenAddress>,
    /// `any`, `inet` or `inet6`.
    pub address_family: String,
    pub host_key: Vec<PathBuf>,
    /// `HostCertificate` files, each for one of the host keys.
    pub host_certificate: Vec<PathBuf>,
    /// `HostKeyAgent` as written (`SSH_AUTH_SOCK` or a path, resolved when the
    /// keys are loaded, as sshd does); `None` for `none`.
    pub host_key_agent: Option<String>,
    pub pid_file: Option<PathBuf>,
    pub login_grace_time: Duration,
    /// `MaxStartups start:rate:full`.
    pub max_startups: (u32, u32, u32),
    /// `PerSourceMaxStartups`: unauthenticated connections per source; `None` = no limit.
    pub per_source_max_startups: Option<u32>,
    /// `PerSourceNetBlockSize`: prefix lengths (IPv4, IPv6) that make one source.
    pub per_source_net_block_size: (u8, u8),
    /// `PerSourcePenalties`, each sub-option as configured (defaults applied on use).
    pub per_source_penalties: PenaltySettings,
    /// `PerSourcePenaltyExemptList` as written; `None` = no exemption.
    pub per_source_penalty_exempt_list: Option<String>,
    pub tcp_keep_alive: bool,
    pub use_dns: bool,
    pub log_level: LogLevel,
    pub syslog_facility: String,
    // --- transport (see `config::algorithms`: lists as assembled, `ssh -Q` names) ---
    pub ciphers: Vec<&'static str>,
    pub macs: Vec<&'static str>,
    pub kex_algorithms: Vec<&'static str>,
    pub host_key_algorithms: Vec<&'static str>,
    /// `Compression`: `yes`/`delayed` offer `zlib@openssh.com` (after authentication).
    pub compression: bool,
    pub rekey_limit: RekeyLimit,
    pub fingerprint_hash: FingerprintHash,
    pub pubkey_auth_options: PubkeyAuthOptions,
    // --- authentication ---
    pub permit_root_login: PermitRootLogin,
    pub strict_modes: bool,
    pub max_auth_tries: u32,
    pub max_sessions: u32,
    pub pubkey_authentication: bool,
    /// Enforced through `config::algorithms::check_user_key_named`, which the
    /// host asks for every key; only this module reads the list itself.
    pub(in crate::config) pubkey_accepted_algorithms: Vec<&'static str>,
    /// Signature algorithms a CA may have signed a user certificate with.
    pub ca_signature_algorithms: Vec<&'static str>,
    /// RSA keys (user and host) shorter than this many bits are refused.
    pub required_rsa_size: u32,
    /// Tokens (`%h`, `%u`, `%%`) not yet expanded; relative paths are under the home.
    pub authorized_keys_file: Vec<String>,
    pub password_authentication: bool,
    pub kbd_interactive_authentication: bool,
    pub permit_empty_passwords: bool,
    /// `RevokedKeys`: a KRL or a list of public keys; `None` for `none`.
    pub revoked_keys: Option<PathBuf>,
    /// `TrustedUserCAKeys`: the CA keys whose user certificates are accepted.
    pub trusted_user_ca_keys: Option<PathBuf>,
    /// `AuthorizedPrincipalsFile`, tokens (`%h`, `%u`, `%U`) not yet expanded.
    pub authorized_principals_file: Option<PathBuf>,
    /// `AuthorizedKeysCommand` (tokens not yet expanded) and the user it runs as.
    pub authorized_keys_command: Option<String>,
    pub authorized_keys_command_user: Option<String>,
    /// `AuthorizedPrincipalsCommand` and the user it runs as.
    pub authorized_principals_command: Option<String>,
    pub authorized_principals_command_user: Option<String>,
    /// `RefuseConnection` (OpenSSH 9.9+): drop the connection once the user name
    /// is known.
    pub refuse_connection: bool,
    pub use_pam: bool,
    pub pam_service_name: String,
    /// Each entry a comma-joined chain, e.g. `publickey,password`; empty = any one method.
    pub authentication_methods: Vec<String>,
    pub allow_users: Vec<String>,
    pub deny_users: Vec<String>,
    pub allow_groups: Vec<String>,
    pub deny_groups: Vec<String>,
    // --- sessions ---
    pub accept_env: Vec<String>,
    /// `SetEnv NAME=VALUE`, kept in order.
    pub set_env: Vec<(String, String)>,
    /// `PermitUserEnvironment`: `no` = empty, `yes` = `["*"]`, else patterns.
    pub permit_user_environment: Vec<String>,
    /// `Subsystem name command...`, first definition of a name wins.
    pub subsystem: Vec<(String, String)>,
    pub force_command: Option<String>,
    pub banner: Option<PathBuf>,
    pub print_motd: bool,
    pub print_last_log: bool,
    pub permit_tty: bool,
    /// `PermitUserRC`: run `~/.ssh/rc` before the shell or command.
    pub permit_user_rc: bool,
    /// `ExposeAuthInfo`: sessions get `SSH_USER_AUTH`, the file of the login's
    /// methods.
    pub expose_auth_info: bool,
    pub chroot_directory: Option<PathBuf>,
    // --- forwarding ---
    pub allow_tcp_forwarding: Forwarding,
    pub allow_agent_forwarding: bool,
    /// `DisableForwarding`: no forwarding of any kind, whatever else says.
    pub disable_forwarding: bool,
    pub gateway_ports: GatewayPorts,
    /// `PermitOpen`: `any` = `["any"]`, `none` = `["none"]`, else `host:port` entries.
    pub permit_open: Vec<String>,
    pub permit_listen: Vec<String>,
    // --- lifetime (README, "Why rsshd") ---
    pub client_alive_interval: Duration,
    pub client_alive_count_max: u32,
    pub idle_timeout: Option<Duration>,
    pub idle_warning: Option<Duration>,
    pub idle_activity: IdleActivity,
    pub channel_timeout: Vec<ChannelTimeoutRule>,
    /// `ChannelTimeout` as written, which `-T` prints verbatim as sshd does.
    pub(in crate::config) channel_timeout_text: Vec<String>,
    pub unused_connection_timeout: Option<Duration>,
    // --- rsshd's own ---
    pub session_cleanup: SessionCleanup,
    /// Where the control socket lives (`ControlSocket`).
    pub control_socket: ControlSocket,
}

/// `ControlSocket`: where `rsshd sessions` and `rsshd kill` reach the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ControlSocket {
    /// Not configured: the built-in place. A loaded [`super::Config`] has
    /// [`ControlSocket::At`] instead.
    #[default]
    BuiltIn,
    /// `ControlSocket none`: no control socket, as `PidFile none` writes no file
    /// (for a second daemon beside the main one, say).
    Off,
    At(PathBuf),
}

impl ControlSocket {
    /// The socket's path, or `None` when it is off.
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            ControlSocket::BuiltIn => Some(crate::paths::control_socket()),
            ControlSocket::Off => None,
            ControlSocket::At(p) => Some(p.clone()),
        }
    }
}

/// Where the daemon writes its PID when the config does not say: `/run/rsshd.pid`
/// as root, as sshd writes `/run/sshd.pid` by default; nowhere otherwise (an
/// unprivileged run cannot write /run). The embedded defaults say `PidFile none`.
fn default_pid_file() -> Option<PathBuf> {
    crate::privilege::Privilege::current()
        .is_root()
        .then(|| PathBuf::from("/run/rsshd.pid"))
}

impl Default for Settings {
    /// OpenSSH 9.2's built-in defaults (`fill_default_server_options`), so that a config
    /// file written for sshd means the same here. `host_key` and `control_socket`
    /// stay empty: loading a config fills them in (see `config::defaults`).
    fn default() -> Self {
        Settings {
            port: vec![22],
            listen_address: vec![
                ListenAddress {
                    host: "0.0.0.0".to_string(),
                    port: None,
                },
                ListenAddress {
                    host: "::".to_string(),
                    port: None,
                },
            ],
            address_family: "any".to_string(),
            host_key: Vec::new(),
            host_certificate: Vec::new(),
            host_key_agent: None,
            pid_file: default_pid_file(),
            login_grace_time: Duration::from_secs(120),
            max_startups: (10, 30, 100),
            per_source_max_startups: None,
            per_source_net_block_size: (32, 128),
            per_source_penalties: PenaltySettings::default(),
            per_source_penalty_exempt_list: None,
            tcp_keep_alive: true,
            use_dns: false,
            log_level: LogLevel::Info,
            syslog_facility: "AUTH".to_string(),
            ciphers: List::Cipher.defaults(),
            macs: List::Mac.defaults(),
            kex_algorithms: List::Kex.defaults(),
            host_key_algorithms: List::Key.defaults(),
            compression: true,
            rekey_limit: RekeyLimit::default(),
            fingerprint_hash: FingerprintHash::Sha256,
            pubkey_auth_options: PubkeyAuthOptions::default(),
            permit_root_login: PermitRootLogin::ProhibitPassword,
            strict_modes: true,
            max_auth_tries: 6,
            max_sessions: 10,
            pubkey_authentication: true,
            pubkey_accepted_algorithms: List::Key.defaults(),
            ca_signature_algorithms: List::Sig.defaults(),
            required_rsa_size: 1024,
            authorized_keys_file: vec![
                ".ssh/authorized_keys".to_string(),
                ".ssh/authorized_keys2".to_string(),
            ],
            password_authentication: true,
            kbd_interactive_authentication: true,
            permit_empty_passwords: false,
            revoked_keys: None,
            trusted_user_ca_keys: None,
            authorized_principals_file: None,
            authorized_keys_command: None,
            authorized_keys_command_user: None,
            authorized_principals_command: None,
            authorized_principals_command_user: None,
            refuse_connection: false,
            use_pam: false,
            pam_service_name: "sshd".to_string(),
            authentication_methods: Vec::new(),
            allow_users: Vec::new(),
            deny_users: Vec::new(),
            allow_groups: Vec::new(),
            deny_groups: Vec::new(),
            accept_env: Vec::new(),
            set_env: Vec::new(),
            permit_user_environment: Vec::new(),
            subsystem: Vec::new(),
            force_command: None,
            banner: None,
            print_motd: true,
            print_last_log: true,
            permit_tty: true,
            permit_user_rc: true,
            expose_auth_info: false,
            chroot_directory: None,
            allow_tcp_forwarding: Forwarding::Yes,
            allow_agent_forwarding: true,
            disable_forwarding: false,
            gateway_ports: GatewayPorts::No,
            permit_open: vec!["any".to_string()],
            permit_listen: vec!["any".to_string()],
            client_alive_interval: Duration::ZERO,
            client_alive_count_max: 3,
            idle_timeout: None,
            idle_warning: None,
            idle_activity: IdleActivity::Input,
            channel_timeout: Vec::new(),
            channel_timeout_text: Vec::new(),
            unused_connection_timeout: None,
            session_cleanup: SessionCleanup::Hangup,
            control_socket: ControlSocket::BuiltIn,
        }
    }
}

impl Settings {
    /// The idle timeout in force: `IdleTimeout`, else under the
    /// classic recipe (`ClientAliveCountMax 0`) the `ClientAliveInterval`.
    pub fn effective_idle_timeout(&self) -> Option<Duration> {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        let recipe = (self.client_alive_count_max == 0)
            .then_some(self.client_alive_interval)
            .and_then(nonzero);
        self.idle_timeout.and_then(nonzero).or(recipe)
    }

    /// The idle warning in force: only one shorter than the idle timeout is given.
    pub fn effective_idle_warning(&self) -> Option<Duration> {
        match (self.effective_idle_timeout(), self.idle_warning) {
            (Some(t), Some(w)) if !w.is_zero() && w < t => Some(w),
            _ => None,
        }
    }
}
