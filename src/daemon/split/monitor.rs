//! The monitor: the root process of a split daemon (see the module above). It
//! starts the network process, hands it the sockets and the config, restarts it
//! if it dies, and turns SIGHUP and SIGTERM into messages to it.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::link;
use super::{Hello, Layout, NET_ARG, Setup, TEST_NET_PROGRAM_ENV};
use crate::config::{Config, LogLevel, Recorded};
use crate::daemon::{
    Action, Prepared, ReloadSource, SHUTDOWN_GRACE, StartError, hostkeys, notify, notify_reloading,
    reload_from, signal_actions,
};
use crate::host::Privilege;
use crate::host::netproc::{self, Monitor};
use crate::host::wire::{Notice, Notifier};

/// What the monitor keeps to start a network process again.
struct Start {
    program: PathBuf,
    listeners: Vec<std::net::TcpListener>,
    control: Option<std::os::unix::net::UnixListener>,
    level: LogLevel,
    /// Debug mode: one connection, then the monitor ends with the network process.
    once: bool,
}

/// A running network process.
struct Net {
    child: tokio::process::Child,
    notifier: Notifier,
}

/// The monitor's service takes the host keys (it signs with them); the network
/// process gets the recorded config.
fn setup(
    host: &Monitor,
    config: &Config,
    recorded: Recorded,
    keys: Vec<hostkeys::HostKey>,
) -> Setup {
    host.set_host_keys(hostkeys::HostKeySet::new(
        keys,
        &config.global().host_certificate,
    ));
    Setup { config: recorded }
}

impl Start {
    /// Exec the network process with its descriptors and send it the hello.
    fn spawn(&self, setup: &Setup, host: &Monitor) -> Result<Net, StartError> {
        let (mine, theirs) = link::pair()?;
        let mut fds: Vec<OwnedFd> = vec![theirs];
        let mut next = netproc::FIRST_FD + 1;
        let mut layout = Layout::default();
        let mut place = |fd: OwnedFd, fds: &mut Vec<OwnedFd>| {
            fds.push(fd);
            next += 1;
            next - 1
        };
        if let Some(c) = &self.control {
            layout.control = Some(place(c.try_clone()?.into(), &mut fds));
        }
        // Its log lines come back on a link of their own and are written by a
        // thread here, until the process is gone.
        let (log_mine, log_theirs) = crate::log::monitor_link()?;
        let log = place(log_theirs, &mut fds);
        crate::log::forward_from(log_mine)?;
        for l in &self.listeners {
            layout
                .listeners
                .push(place(l.try_clone()?.into(), &mut fds));
        }
        let setup = place(link::to_memfd(setup)?, &mut fds);
        let child = netproc::spawn(&self.program, &[NET_ARG], fds)?;
        let hello = Hello {
            setup,
            level: self.level,
            log,
            layout,
            once: self.once,
        };
        link::send_blocking(&mine, &hello)?;
        // From here on the link speaks the host protocol; the serving loop ends
        // with the link (the process's death closes it), on its own task.
        let (serving, notifier) = host.serve(mine)?;
        tokio::spawn(serving);
        tracing::debug!(
            "network process started, pid {}",
            child.id().unwrap_or_default()
        );
        Ok(Net { child, notifier })
    }
}

/// sshd's words for a child that ended (`preauth child exited with status N`).
fn ended(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("network process exited with status {c}"),
            (None, Some(sig)) => format!("network process terminated by signal {sig}"),
            _ => "network process ended".into(),
        },
        Err(e) => format!("network process: wait: {e}"),
    }
}

/// Restarts after deaths that come close together wait longer: 1 s, doubling
/// to 60 s; a process that ran for a minute resets it.
struct Backoff {
    delay: Duration,
    started: Instant,
}

impl Backoff {
    const STABLE: Duration = Duration::from_secs(60);
    const MAX: Duration = Duration::from_secs(60);

    fn new() -> Backoff {
        Backoff {
            delay: Duration::ZERO,
            started: Instant::now(),
        }
    }

    /// The wait before the next start, after a death now.
    fn after_death(&mut self) -> Duration {
        if self.started.elapsed() >= Self::STABLE {
            self.delay = Duration::ZERO;
        }
        let wait = self.delay;
        self.delay = (self.delay * 2).clamp(Duration::from_secs(1), Self::MAX);
        wait
    }
}

/// Run the monitor until SIGTERM or SIGINT.
pub async fn run(p: Prepared, level: LogLevel) -> Result<(), StartError> {
    let mut actions = signal_actions()?;
    let config = Arc::new(p.config);
    // The monitor's host: what the network process asks for is served by it.
    let host = Monitor::new(Privilege::current(), Arc::clone(&config));
    let (control, _socket_file) = match p.control {
        Some(c) => (Some(c.listener), Some(c.guard)),
        None => (None, None),
    };
    let program = std::env::var_os(TEST_NET_PROGRAM_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    let mut start = Start {
        program,
        listeners: p.listeners,
        control,
        level,
        once: p.once,
    };
    let source = ReloadSource {
        source: p.source,
        overrides: p.overrides,
        extra_host_keys: p.extra_host_keys,
    };
    let mut current = setup(&host, &config, p.recorded, p.keys);
    let mut backoff = Backoff::new();
    let mut net = Some(start.spawn(&current, &host)?);
    if start.once {
        // Never restarted in debug mode: the network process's copies are the
        // only ones, so its listeners close when it takes its one connection.
        start.listeners.clear();
    }
    let mut restart_at: Option<Instant> = None;
    let mut lost = tokio::task::JoinSet::new();
    notify(&[sd_notify::NotifyState::Ready]);
    loop {
        let restart = async {
            match restart_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let exited = async {
            match net.as_mut() {
                Some(n) => n.child.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = exited => {
                net = None;
                if start.once {
                    // sshd -d: the one connection has ended (or the process
                    // died); the monitor ends too, after the hang-ups below.
                    tracing::debug!("{}", ended(status));
                    break;
                }
                tracing::error!("{}", ended(status));
                // On its own task: the hang-ups wait out SessionCleanup's grace,
                // and the restart need not wait for them.
                let host = host.clone();
                lost.spawn(async move { host.network_lost().await });
                let wait = backoff.after_death();
                if !wait.is_zero() {
                    tracing::info!(
                        "restarting the network process in {} s",
                        wait.as_secs()
                    );
                }
                restart_at = Some(Instant::now() + wait);
            }
            () = restart => {
                restart_at = None;
                backoff.started = Instant::now();
                match start.spawn(&current, &host) {
                    Ok(n) => net = Some(n),
                    Err(e) => {
                        tracing::error!("cannot start the network process: {e}");
                        restart_at = Some(Instant::now() + backoff.after_death());
                    }
                }
            }
            action = actions.recv() => match action {
                Some(Action::Reload) => {
                    tracing::info!("Received SIGHUP; reloading configuration.");
                    notify_reloading();
                    match reload_from(&source) {
                        Ok((config, recorded, keys)) => {
                            let s = setup(&host, &config, recorded, keys);
                            crate::daemon::pidfile::reloaded(config.global().pid_file.as_deref());
                            host.set_config(Arc::new(config));
                            current = s;
                            if let Some(n) = &net {
                                reload(n, &current).await;
                            }
                        }
                        Err(e) => {
                            tracing::error!("reload failed, keeping the old configuration: {e}")
                        }
                    }
                    notify(&[sd_notify::NotifyState::Ready]);
                }
                Some(Action::Stop) | None => {
                    tracing::info!("Received signal; terminating.");
                    break;
                }
            },
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(mut n) = net {
        let _ = n.notifier.send(Notice::Shutdown, Vec::new()).await;
        let grace = SHUTDOWN_GRACE + Duration::from_secs(2);
        if tokio::time::timeout(grace, n.child.wait()).await.is_err() {
            tracing::error!("network process did not stop in time; killing it");
            let _ = n.child.kill().await;
        }
    }
    host.network_lost().await;
    while lost.join_next().await.is_some() {}
    Ok(())
}

/// Send the network process the new configuration.
async fn reload(net: &Net, setup: &Setup) {
    let sent = match link::to_memfd(setup) {
        Ok(fd) => net
            .notifier
            .send(Notice::Reload, vec![fd])
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = sent {
        tracing::error!("network process: sending the new configuration: {e}");
    }
}
