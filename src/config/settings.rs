//! The typed, effective settings one connection runs under (after `Match`).
//!
//! Everything else in rsshd reads these fields; only the config module writes them,
//! driven by its keyword table.

use std::path::PathBuf;
use std::time::Duration;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

/// Effective server settings. Defaults are OpenSSH's (see [`Settings::default`]),
/// except where SPEC.md gives rsshd's own embedded defaults, which the config module
/// applies when no config file exists.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    // --- listening (global only) ---
    pub port: Vec<u16>,
    pub listen_address: Vec<ListenAddress>,
    /// `any`, `inet` or `inet6`.
    pub address_family: String,
    pub host_key: Vec<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub login_grace_time: Duration,
    /// `MaxStartups start:rate:full`.
    pub max_startups: (u32, u32, u32),
    pub tcp_keep_alive: bool,
    pub use_dns: bool,
    pub log_level: LogLevel,
    pub syslog_facility: String,
    pub ciphers: Option<Vec<String>>,
    pub macs: Option<Vec<String>>,
    pub kex_algorithms: Option<Vec<String>>,
    // --- authentication ---
    pub permit_root_login: PermitRootLogin,
    pub strict_modes: bool,
    pub max_auth_tries: u32,
    pub max_sessions: u32,
    pub pubkey_authentication: bool,
    /// Tokens (`%h`, `%u`, `%%`) not yet expanded; relative paths are under the home.
    pub authorized_keys_file: Vec<String>,
    pub password_authentication: bool,
    pub kbd_interactive_authentication: bool,
    pub permit_empty_passwords: bool,
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
    pub chroot_directory: Option<PathBuf>,
    // --- forwarding ---
    pub allow_tcp_forwarding: Forwarding,
    pub allow_agent_forwarding: bool,
    pub gateway_ports: GatewayPorts,
    /// `PermitOpen`: `any` = `["any"]`, `none` = `["none"]`, else `host:port` entries.
    pub permit_open: Vec<String>,
    pub permit_listen: Vec<String>,
    // --- lifetime (SPEC section 3) ---
    pub client_alive_interval: Duration,
    pub client_alive_count_max: u32,
    pub idle_timeout: Option<Duration>,
    pub idle_warning: Option<Duration>,
    pub idle_activity: IdleActivity,
    pub channel_timeout: Vec<ChannelTimeoutRule>,
    pub unused_connection_timeout: Option<Duration>,
    // --- rsshd's own ---
    /// Where the control socket lives (`ControlSocket`); `None` = the built-in place.
    pub control_socket: Option<PathBuf>,
}
