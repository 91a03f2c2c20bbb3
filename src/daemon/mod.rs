//! The daemon: loads config and host keys, binds listeners, accepts connections
//! under `MaxStartups`, and turns signals into server actions.

mod accept;
pub mod activation;
pub mod algorithms;
pub mod inetd;
pub mod listener;
pub mod pidfile;
pub mod split;
mod srclimit;

/// Host key files: loaded by the host (the privileged side), which signs with them.
pub use crate::host::host_keys as hostkeys;

use std::path::PathBuf;
use std::sync::Arc;

use russh::{MethodKind, MethodSet};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::admin::{Control, Registry};
use crate::config::{Config, ConfigError, Settings, Warning};
use crate::lifetime::Ending;
use crate::log::display_ip;

/// Where the configuration came from, so a reload reads the same place.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    /// No config file: the safe built-in defaults README describes.
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

    /// As [`ConfigSource::load`], with what the load read (for the network process).
    pub fn load_recorded(
        &self,
        overrides: &[String],
    ) -> Result<(Config, Vec<Warning>, crate::config::Recorded), ConfigError> {
        match self {
            ConfigSource::File(p) => Config::load_recorded(Some(p), overrides),
            ConfigSource::Embedded => Config::load_recorded(None, overrides),
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
    #[error(transparent)]
    Algorithms(#[from] algorithms::AlgorithmError),
    #[error(transparent)]
    Control(#[from] crate::admin::server::BindError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("host: {0}")]
    Host(#[from] crate::host::HostError),
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

/// The russh configuration: the host's keys (as signers: the private halves
/// stay with the host), the configured algorithms, and every timer of russh's
/// own turned off because session lifetime is rsshd's job.
pub fn protocol_config(offer: crate::host::HostKeyOffer, s: &Settings) -> russh::server::Config {
    // Ciphers, MACs, KexAlgorithms, HostKeyAlgorithms, Compression.
    let preferred = algorithms::preferred(s);
    // HostCertificate: offered under the certificate names HostKeyAlgorithms lists.
    let certificates = offer
        .certificates
        .into_iter()
        .filter(|c| {
            let name = c.algorithm().to_certificate_type();
            let listed = s.host_key_algorithms.iter().any(|n| *n == name);
            // An RSA certificate serves under any RSA certificate name listed.
            listed
                || (c.algorithm().is_rsa()
                    && s.host_key_algorithms
                        .iter()
                        .any(|n| n.starts_with("rsa-sha2-") && n.contains("-cert-")))
        })
        .collect();
    russh::server::Config {
        server_id: russh::SshId::Standard(
            format!("SSH-2.0-rsshd_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods: auth_methods(s),
        auth_rejection_time: std::time::Duration::ZERO,
        auth_rejection_time_initial: Some(std::time::Duration::ZERO),
        keys: Vec::new(),
        host_key_signers: offer.signers,
        certificates,
        preferred,
        limits: algorithms::limits(s),
        // rsshd counts failures as sshd does and ends the connection itself at
        // MaxAuthTries, with sshd's reason and words (the connection task sends the
        // disconnect). russh's own cap is only a backstop, set well past that so the
        // two do not race: on a busy machine russh's "Too many authentication
        // attempts" (reason 14) was seen winning when it sat one request behind.
        max_auth_attempts: (s.max_auth_tries as usize).saturating_add(16),
        inactivity_timeout: None,
        keepalive_interval: None,
        nodelay: true,
        window_size: crate::connection::flow::WINDOW,
        // Each channel's window follows its consumer (src/connection/inflow.rs).
        manual_window: true,
        ..Default::default()
    }
}

/// How long SIGTERM waits for sessions to take their leave (each needs at most 2 s
/// to flush its DISCONNECT, plus the hang-up of its processes).
pub(crate) const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Tell systemd (when started by it) what state we are in; a no-op otherwise.
pub(crate) fn notify(states: &[sd_notify::NotifyState]) {
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
pub(crate) enum Action {
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
    /// What loading `config` read, so the network process can repeat it.
    pub recorded: crate::config::Recorded,
    pub listeners: Vec<std::net::TcpListener>,
    pub keys: Vec<hostkeys::HostKey>,
    /// The control socket, bound once here; `None` if it could not be set up for a
    /// reason that does not stop the daemon (logged).
    pub control: Option<crate::admin::server::ControlSocket>,
    /// Debug mode (`-d`), as sshd's: serve one connection, then exit.
    pub once: bool,
}

/// Load config and keys and bind listeners; logs each `Server listening on` line.
pub fn prepare(
    source: ConfigSource,
    overrides: Vec<String>,
    extra_host_keys: Vec<PathBuf>,
) -> Result<Prepared, StartError> {
    let (config, warnings, recorded) = source.load_recorded(&overrides)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    // First, so that a start refused because another daemon owns the socket opens
    // no port and touches no file.
    let control = match config.global().control_socket.path() {
        None => None,
        Some(path) => match crate::admin::server::bind(&path) {
            Ok(c) => Some(c),
            Err(e @ crate::admin::server::BindError::Io { .. }) => {
                tracing::error!("{e}; `rsshd sessions` will not work");
                None
            }
            Err(e) => return Err(e.into()),
        },
    };
    let paths = host_key_paths(&config, &extra_host_keys, true)?;
    let keys = hostkeys::load(&paths, config.global().host_key_agent.as_deref())?;
    algorithms::check_host_keys(&paths, &keys, config.global())?;
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
        recorded,
        listeners,
        keys,
        control,
        once: false,
    })
}

/// The in-process host for `config`, holding the host keys `keys`, and russh's
/// settings with signers that ask it (the private halves stay with the host).
pub(crate) async fn local_host(
    config: &Arc<Config>,
    keys: Vec<hostkeys::HostKey>,
) -> Result<(crate::host::Host, russh::server::Config), StartError> {
    let host = crate::host::Host::new(crate::host::Privilege::current(), Arc::clone(config));
    host.set_host_keys(hostkeys::HostKeySet::new(
        keys,
        &config.global().host_certificate,
    ));
    let protocol = protocol_config(host.host_key_offer().await?, config.global());
    Ok((host, protocol))
}

/// Current configuration, replaced as a whole on a successful reload.
struct Live {
    config: Arc<Config>,
    protocol: Arc<russh::server::Config>,
}

/// What the serving loop is told to do (by signals in a single process, by the
/// monitor in the network process).
pub(crate) enum Event {
    /// A configuration that loaded, with the protocol settings built from it.
    Reload(Arc<Config>, Arc<russh::server::Config>),
    Stop,
}

/// The sockets the serving loop works on.
pub(crate) struct Sockets {
    pub listeners: Vec<std::net::TcpListener>,
    /// The control socket's listener (its file stays with whoever bound it).
    pub control: Option<std::os::unix::net::UnixListener>,
}

/// The config and host keys `source` names now, loaded as at start; a failure is
/// the reason the old ones stay.
pub(crate) fn reload_from(
    p: &ReloadSource,
) -> Result<(Config, crate::config::Recorded, Vec<hostkeys::HostKey>), StartError> {
    let (config, warnings, recorded) = p.source.load_recorded(&p.overrides)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let paths = host_key_paths(&config, &p.extra_host_keys, true)?;
    let keys = hostkeys::load(&paths, config.global().host_key_agent.as_deref())?;
    algorithms::check_host_keys(&paths, &keys, config.global())?;
    Ok((config, recorded, keys))
}

/// Where a reload reads from.
pub(crate) struct ReloadSource {
    pub source: ConfigSource,
    pub overrides: Vec<String>,
    pub extra_host_keys: Vec<PathBuf>,
}

/// SIGHUP, SIGTERM and SIGINT as actions, from now on (a SIGTERM that arrives
/// while we start must still go through the orderly stop).
pub(crate) fn signal_actions()
-> Result<tokio::sync::mpsc::UnboundedReceiver<Action>, std::io::Error> {
    let (action_tx, action_rx) = tokio::sync::mpsc::unbounded_channel();
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
    Ok(action_rx)
}

/// Tell systemd a reload has begun.
pub(crate) fn notify_reloading() {
    let mut states = vec![sd_notify::NotifyState::Reloading];
    if let Ok(t) = sd_notify::NotifyState::monotonic_usec_now() {
        states.push(t);
    }
    notify(&states);
}

/// Run until SIGTERM/SIGINT. SIGHUP re-reads the config; a broken one is logged and
/// the old one kept. One process: the host is in-process.
pub async fn run(p: Prepared) -> Result<(), StartError> {
    let mut actions = signal_actions()?;
    let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
    let config = Arc::new(p.config);
    // The privileged boundary: every connection reaches it through this handle.
    let (host, protocol) = local_host(&config, p.keys).await?;
    let protocol = Arc::new(protocol);
    // The guard removes the socket file when run() ends, however it ends, if the
    // file is still the one we created.
    let (control, _socket_file) = match p.control {
        Some(c) => (Some(c.listener), Some(c.guard)),
        None => (None, None),
    };
    let sockets = Sockets {
        listeners: p.listeners,
        control,
    };
    let source = ReloadSource {
        source: p.source,
        overrides: p.overrides,
        extra_host_keys: p.extra_host_keys,
    };
    let mut serving = tokio::spawn(serve_network(
        sockets,
        config,
        protocol,
        host.clone(),
        events,
        p.once,
    ));
    notify(&[sd_notify::NotifyState::Ready]);
    loop {
        let action = tokio::select! {
            a = actions.recv() => a,
            // Only in debug mode does serving end by itself: its one connection ended.
            r = &mut serving => {
                notify(&[sd_notify::NotifyState::Stopping]);
                return r.unwrap_or_else(|e| Err(StartError::Io(std::io::Error::other(e))));
            }
        };
        let Some(action) = action else { break };
        match action {
            Action::Reload => {
                tracing::info!("Received SIGHUP; reloading configuration.");
                notify_reloading();
                match reload_from(&source) {
                    Ok((config, _, keys)) => {
                        // The host takes the keys; russh gets signers that ask it.
                        host.set_host_keys(hostkeys::HostKeySet::new(
                            keys,
                            &config.global().host_certificate,
                        ));
                        match host.host_key_offer().await {
                            Ok(offer) => {
                                let protocol = Arc::new(protocol_config(offer, config.global()));
                                pidfile::reloaded(config.global().pid_file.as_deref());
                                let _ = events_tx.send(Event::Reload(Arc::new(config), protocol));
                            }
                            Err(e) => {
                                tracing::error!("reload failed, keeping the old configuration: {e}")
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!("reload failed, keeping the old configuration: {e}")
                    }
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
    let _ = events_tx.send(Event::Stop);
    match serving.await {
        Ok(r) => r,
        Err(e) => Err(StartError::Io(std::io::Error::other(e))),
    }
}

/// The network side of the daemon: accept loops under `MaxStartups`, every
/// connection, the registry and the control socket, with `host` as the
/// privileged boundary; until [`Event::Stop`] (or the sender is gone), or with
/// `once` (debug mode) until its one connection has ended.
pub(crate) async fn serve_network(
    sockets: Sockets,
    config: Arc<Config>,
    protocol: Arc<russh::server::Config>,
    host: crate::host::Host,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    once: bool,
) -> Result<(), StartError> {
    let registry = Registry::new();
    let control = sockets.control.map(|l| {
        tokio::spawn(crate::admin::server::serve(
            l,
            Arc::clone(&registry),
            host.clone(),
        ))
    });
    let limits = srclimit::SourceLimits::new(srclimit::Limits::from_settings(config.global()));
    let live = Arc::new(std::sync::RwLock::new(Live { config, protocol }));
    let one = once.then(|| Arc::new(accept::OneConnection::default()));
    let shared = accept::Shared::new(
        Arc::clone(&live),
        Arc::clone(&registry),
        Arc::clone(&limits),
        host.clone(),
        one.clone(),
    );
    let mut accepts = tokio::task::JoinSet::new();
    for l in sockets.listeners {
        let l = TcpListener::from_std(l)?;
        accepts.spawn(accept::accept_loop(l, Arc::clone(&shared)));
    }
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            // sshd -d: no second connection is accepted on any listener, and
            // the daemon ends with the first.
            () = accept::OneConnection::accepted(&one) => {
                accepts.abort_all();
                continue;
            }
            () = accept::OneConnection::ended(&one) => {
                tracing::debug!("debug mode: the connection ended; exiting");
                break;
            }
        };
        let Some(event) = event else { break };
        match event {
            Event::Reload(config, protocol) => {
                limits.reconfigure(srclimit::Limits::from_settings(config.global()));
                if let Ok(mut l) = live.write() {
                    // Under the same lock, so the host judges new
                    // connections by the config they were accepted under.
                    host.set_config(Arc::clone(&config));
                    *l = Live {
                        config: Arc::clone(&config),
                        protocol,
                    };
                }
                // Unlike sshd, live sessions follow the new lifetime rules.
                registry.broadcast(|| Control::Reload(Arc::clone(&config)));
                tracing::info!(
                    "Configuration reloaded; {} live connection(s) re-evaluated.",
                    registry.len()
                );
            }
            Event::Stop => break,
        }
    }
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
    Ok(())
}
