//! The daemon: loads config and host keys, binds listeners, accepts connections
//! under `MaxStartups`, and turns signals into server actions.

pub mod activation;
pub mod hostkeys;
pub mod inetd;
pub mod listener;
pub mod pidfile;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PrivateKey};
use russh::{MethodKind, MethodSet, Preferred, cipher};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::admin::{Control, Registry};
use crate::config::{Config, ConfigError, ConnSpec, Settings, Warning};
use crate::connection::{self, ConnContext};
use crate::lifetime::Ending;
use crate::log::display_ip;

/// Where the configuration came from, so a reload reads the same place.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    /// No config file: SPEC section 1's safe built-in defaults.
    Embedded,
}

impl ConfigSource {
    /// `-f` if given; else the system file if it exists; else embedded defaults.
    pub fn choose(explicit: Option<PathBuf>) -> Self {
        match explicit {
            Some(p) => ConfigSource::File(p),
            None if std::path::Path::new(crate::paths::SYSTEM_CONFIG).exists() => {
                ConfigSource::File(PathBuf::from(crate::paths::SYSTEM_CONFIG))
            }
            None => ConfigSource::Embedded,
        }
    }

    pub fn load(&self, overrides: &[String]) -> Result<(Config, Vec<Warning>), ConfigError> {
        match self {
            ConfigSource::File(p) => Config::load_file(p, overrides),
            ConfigSource::Embedded => Config::embedded(overrides),
        }
    }
}

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    HostKey(#[from] hostkeys::HostKeyError),
    #[error(transparent)]
    Listen(#[from] listener::ListenError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The host key files to use: `extra`, then what the config says is in force (its
/// `HostKey` lines, sshd's default keys, or on the embedded defaults the generated
/// key, which is created here when `generate`).
pub fn host_key_paths(
    config: &Config,
    extra: &[PathBuf],
    generate: bool,
) -> Result<Vec<PathBuf>, hostkeys::HostKeyError> {
    let mut paths: Vec<PathBuf> = extra.to_vec();
    paths.extend(config.global().host_key.iter().cloned());
    if generate && let Some(dir) = config.generated_host_key().and_then(|p| p.parent()) {
        hostkeys::ensure_generated(dir)?;
    }
    Ok(paths)
}

/// The russh configuration: our keys, modern algorithms only, and every timer of
/// russh's own turned off because session lifetime is rsshd's job.
pub fn protocol_config(keys: Vec<PrivateKey>, s: &Settings) -> russh::server::Config {
    let preferred = Preferred {
        key: std::borrow::Cow::Owned(vec![
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP521,
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        ]),
        cipher: std::borrow::Cow::Owned(vec![
            cipher::CHACHA20_POLY1305,
            cipher::AES_128_GCM,
            cipher::AES_256_GCM,
            cipher::AES_128_CTR,
            cipher::AES_192_CTR,
            cipher::AES_256_CTR,
        ]),
        ..Preferred::DEFAULT
    };
    russh::server::Config {
        server_id: russh::SshId::Standard(
            format!("SSH-2.0-rsshd_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods: auth_methods(s),
        auth_rejection_time: std::time::Duration::ZERO,
        auth_rejection_time_initial: Some(std::time::Duration::ZERO),
        keys,
        preferred,
        // russh counts the client's initial "none" probe as an attempt; sshd does not.
        max_auth_attempts: s.max_auth_tries as usize + 1,
        inactivity_timeout: None,
        keepalive_interval: None,
        nodelay: true,
        window_size: crate::connection::session::WINDOW,
        // Each channel's window follows its consumer (src/connection/inflow.rs).
        manual_window: true,
        ..Default::default()
    }
}

/// How long SIGTERM waits for sessions to take their leave (each needs at most 2 s
/// to flush its DISCONNECT, plus the hang-up of its processes).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Tell systemd (when started by it) what state we are in; a no-op otherwise.
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// The methods offered to clients. Passwords are checked only through PAM
/// (Debian's yescrypt hashes are not ours to read), so without a usable libpam the
/// password methods are not offered at all.
fn auth_methods(s: &Settings) -> MethodSet {
    let mut kinds = Vec::new();
    if s.pubkey_authentication {
        kinds.push(MethodKind::PublicKey);
    }
    if s.use_pam && (s.password_authentication || s.kbd_interactive_authentication) {
        match crate::host::pam::available() {
            Ok(()) => {
                if s.password_authentication {
                    kinds.push(MethodKind::Password);
                }
                if s.kbd_interactive_authentication {
                    kinds.push(MethodKind::KeyboardInteractive);
                }
            }
            Err(e) => tracing::error!("UsePAM yes, but {e}; password logins are disabled"),
        }
    }
    MethodSet::from(&kinds[..])
}

/// What a signal asks the daemon to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Reload,
    Stop,
}

/// Everything a running daemon needs, prepared before daemonizing so that errors
/// reach the terminal.
pub struct Prepared {
    pub source: ConfigSource,
    pub overrides: Vec<String>,
    pub extra_host_keys: Vec<PathBuf>,
    pub config: Config,
    pub listeners: Vec<std::net::TcpListener>,
    pub keys: Vec<PrivateKey>,
    pub control: Option<std::os::unix::net::UnixListener>,
    pub control_path: PathBuf,
}

/// Load config and keys and bind listeners; logs each `Server listening on` line.
pub fn prepare(
    source: ConfigSource,
    overrides: Vec<String>,
    extra_host_keys: Vec<PathBuf>,
) -> Result<Prepared, StartError> {
    let (config, warnings) = source.load(&overrides)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let paths = host_key_paths(&config, &extra_host_keys, true)?;
    let keys = hostkeys::load(&paths)?;
    let control_path = config
        .global()
        .control_socket
        .clone()
        .unwrap_or_else(crate::admin::server::default_socket_path);
    let control = match crate::admin::server::bind(&control_path) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(
                "control socket {}: {e}; `rsshd sessions` will not work",
                control_path.display()
            );
            None
        }
    };
    let mut listeners = Vec::new();
    // Sockets from the service manager (socket activation) replace binding.
    let activated = activation::take_listeners()?;
    let addrs = if activated.is_empty() {
        listener::addresses(config.global())?
    } else {
        Vec::new()
    };
    listeners.extend(activated);
    for addr in addrs {
        match listener::bind(addr) {
            Ok(l) => {
                // Port 0 asks the kernel for a free port; report the one it chose.
                let bound = l.local_addr().unwrap_or(addr);
                tracing::info!(
                    "Server listening on {} port {}.",
                    display_ip(&bound),
                    bound.port()
                );
                listeners.push(l);
            }
            Err(e) => tracing::error!("error: {e}"),
        }
    }
    if listeners.is_empty() {
        return Err(listener::ListenError::NoneBound.into());
    }
    Ok(Prepared {
        source,
        overrides,
        extra_host_keys,
        config,
        listeners,
        keys,
        control,
        control_path,
    })
}

/// Current configuration, replaced as a whole on a successful reload.
struct Live {
    config: Arc<Config>,
    protocol: Arc<russh::server::Config>,
}

/// Run until SIGTERM/SIGINT. SIGHUP re-reads the config; a broken one is logged and
/// the old one kept.
pub async fn run(p: Prepared) -> Result<(), StartError> {
    let registry = Registry::new();
    let socket_path = p
        .config
        .global()
        .control_socket
        .clone()
        .unwrap_or_else(crate::admin::server::default_socket_path);
    let control = match crate::admin::server::bind(&socket_path) {
        Ok(l) => Some(tokio::spawn(crate::admin::server::serve(
            l,
            Arc::clone(&registry),
        ))),
        Err(e) => {
            tracing::error!(
                "control socket {}: {e}; `rsshd sessions` will not work",
                socket_path.display()
            );
            None
        }
    };
    let protocol = Arc::new(protocol_config(p.keys, p.config.global()));
    let live = Arc::new(std::sync::RwLock::new(Live {
        config: Arc::new(p.config),
        protocol,
    }));
    let preauth = Arc::new(AtomicU32::new(0));
    let daemon_uid = nix::unistd::geteuid().as_raw();

    let mut accepts = tokio::task::JoinSet::new();
    for l in p.listeners {
        let l = TcpListener::from_std(l)?;
        let live = Arc::clone(&live);
        let preauth = Arc::clone(&preauth);
        accepts.spawn(accept_loop(
            l,
            live,
            preauth,
            daemon_uid,
            Arc::clone(&registry),
        ));
    }

    let (action_tx, mut action_rx) = tokio::sync::mpsc::unbounded_channel();
    for (kind, action) in [
        (SignalKind::hangup(), Action::Reload),
        (SignalKind::terminate(), Action::Stop),
        (SignalKind::interrupt(), Action::Stop),
    ] {
        let mut s = signal(kind)?;
        let tx = action_tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if tx.send(action).is_err() {
                    break;
                }
            }
        });
    }
    notify(&[sd_notify::NotifyState::Ready]);
    while let Some(action) = action_rx.recv().await {
        match action {
            Action::Reload => {
                tracing::info!("Received SIGHUP; reloading configuration.");
                let mut states = vec![sd_notify::NotifyState::Reloading];
                if let Ok(t) = sd_notify::NotifyState::monotonic_usec_now() {
                    states.push(t);
                }
                notify(&states);
                match p.source.load(&p.overrides) {
                    Ok((config, warnings)) => {
                        for w in &warnings {
                            tracing::warn!("{w}");
                        }
                        let keys = host_key_paths(&config, &p.extra_host_keys, true)
                            .and_then(|paths| hostkeys::load(&paths));
                        match keys {
                            Ok(keys) => {
                                let protocol = Arc::new(protocol_config(keys, config.global()));
                                let config = Arc::new(config);
                                if let Ok(mut l) = live.write() {
                                    *l = Live {
                                        config: Arc::clone(&config),
                                        protocol,
                                    };
                                }
                                pidfile::reloaded(config.global().pid_file.as_deref());
                                // Unlike sshd, live sessions follow the new lifetime rules.
                                registry.broadcast(|| Control::Reload(Arc::clone(&config)));
                                tracing::info!(
                                    "Configuration reloaded; {} live connection(s) re-evaluated.",
                                    registry.len()
                                );
                            }
                            Err(e) => {
                                tracing::error!("reload failed, keeping the old configuration: {e}")
                            }
                        }
                    }
                    Err(e) => tracing::error!("reload failed, keeping the old configuration: {e}"),
                }
            }
            Action::Stop => {
                tracing::info!("Received signal; terminating.");
                break;
            }
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    // Stop listening first, then end every session with the reason.
    accepts.abort_all();
    registry.broadcast(|| Control::End(Ending::Shutdown));
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while !registry.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if let Some(c) = control {
        c.abort();
    }
    let _ = std::fs::remove_file(&socket_path);
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    live: Arc<std::sync::RwLock<Live>>,
    preauth: Arc<AtomicU32>,
    daemon_uid: u32,
    registry: Arc<Registry>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let local = stream.local_addr().unwrap_or(peer);
        let Ok((config, protocol)) = live
            .read()
            .map(|l| (Arc::clone(&l.config), Arc::clone(&l.protocol)))
        else {
            continue;
        };
        let pre_auth = config.resolve(&ConnSpec {
            user: None,
            host: Some(display_ip(&peer)),
            addr: Some(peer.ip()),
            laddr: Some(local.ip()),
            lport: Some(local.port()),
            groups: None,
        });
        let n = preauth.load(Ordering::Relaxed);
        if should_drop(n, pre_auth.max_startups) {
            tracing::info!(
                "drop connection #{n} from [{}]:{} on [{}]:{} past MaxStartups",
                display_ip(&peer),
                peer.port(),
                display_ip(&local),
                local.port()
            );
            continue;
        }
        if pre_auth.tcp_keep_alive {
            let _ = socket2::SockRef::from(&stream).set_keepalive(true);
        }
        preauth.fetch_add(1, Ordering::Relaxed);
        let slot = PreauthSlot(
            Arc::clone(&preauth),
            std::sync::atomic::AtomicBool::new(true),
        );
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let slot = Arc::new(slot);
            let on_auth = {
                let slot = Arc::clone(&slot);
                move || slot.release()
            };
            let ctx = ConnContext {
                peer,
                local,
                config,
                pre_auth,
                daemon_uid,
            };
            connection::serve(stream, ctx, protocol, registry, on_auth).await;
            slot.release();
        });
    }
}

/// One unauthenticated connection counted against MaxStartups, released once.
struct PreauthSlot(Arc<AtomicU32>, std::sync::atomic::AtomicBool);

impl PreauthSlot {
    fn release(&self) {
        if self.1.swap(false, Ordering::Relaxed) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// OpenSSH's random early drop: below `start` accept, at or past `full` refuse,
/// between them refuse with a probability rising linearly from `rate`%.
fn should_drop(n: u32, (start, rate, full): (u32, u32, u32)) -> bool {
    if n < start {
        return false;
    }
    if n >= full {
        return true;
    }
    let p = rate + (100 - rate.min(100)) * (n - start) / (full - start).max(1);
    rand::random_range(0..100) < p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_startups_bounds() {
        assert!(!should_drop(9, (10, 30, 100)));
        assert!(should_drop(100, (10, 30, 100)));
        assert!(should_drop(5, (5, 100, 10)));
    }
}
