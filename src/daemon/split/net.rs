//! The network process: `rsshd __net`, started by the monitor (see the module
//! above). Takes the descriptors and the config the monitor hands over, confines
//! itself, then serves every connection until the monitor says stop or goes away.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::{Hello, Setup, link};
use crate::config::Config;
use crate::daemon::{Event, Sockets, protocol_config, serve_network};
use crate::host::netproc;
use crate::host::sandbox;
use crate::host::wire::Notice;

/// Entry point of `rsshd __net`; returns the exit status.
pub fn net_main() -> i32 {
    // Decided now, as root, as in the monitor: the same defaults (state
    // directory, control socket path) follow from it.
    crate::host::Privilege::current();
    match run() {
        Ok(()) => 0,
        Err(e) => {
            // Both: the log may not be set up yet.
            tracing::error!("network process: {e}");
            eprintln!("rsshd: network process: {e}");
            255
        }
    }
}

/// The config a [`Setup`] describes, built without touching the file system.
fn build(setup: &Setup) -> Result<Config, String> {
    Config::replay(&setup.config)
        .map(|(config, _warnings)| config)
        .map_err(|e| e.to_string())
}

/// russh's settings for `config`: the host keys are the monitor's, offered by
/// their public halves, each signature asked of the monitor (`SignKex`).
async fn protocol_for(
    host: &crate::host::Host,
    config: &Config,
) -> Result<russh::server::Config, String> {
    let offer = host
        .host_key_offer()
        .await
        .map_err(|e| format!("host keys: {e}"))?;
    Ok(protocol_config(offer, config.global()))
}

fn claim(fd: i32) -> Result<OwnedFd, String> {
    netproc::claim(fd).map_err(|e| e.to_string())
}

fn run() -> Result<(), String> {
    let link_fd = claim(netproc::FIRST_FD)?;
    let hello: Hello = match link::recv_blocking(&link_fd).map_err(|e| e.to_string())? {
        Some(h) => h,
        None => return Err("the monitor closed the link before its hello".into()),
    };
    // While files can still be opened: the zone for time stamps.
    netproc::load_time_zone();
    // Every line goes to the monitor, which writes it where its own go.
    crate::log::init(
        crate::log::Sink::Monitor(claim(hello.log)?),
        hello.level,
        "",
    );
    let setup: Setup =
        link::from_memfd(&claim(hello.setup)?).map_err(|e| format!("configuration: {e}"))?;
    let config = build(&setup)?;
    let control = match hello.layout.control {
        Some(fd) => {
            let l = std::os::unix::net::UnixListener::from(claim(fd)?);
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Some(l)
        }
        None => None,
    };
    let mut listeners = Vec::new();
    for fd in &hello.layout.listeners {
        let l = std::net::TcpListener::from(claim(*fd)?);
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        listeners.push(l);
    }

    // Which password methods to offer depends on whether libpam loads (the
    // answer is kept): asked now, since dlopen cannot work once confined. PAM
    // itself only ever runs in the monitor's helpers.
    if config.global().use_pam {
        let _ = crate::host::pam::available();
    }
    // The memory trimmer reads its resident size from here: /proc is out of
    // reach once chrooted.
    let statm = crate::host::memory::Statm::open();
    let entered = sandbox::enter(&sandbox::SandboxOptions::default()).map_err(|e| e.to_string())?;
    for w in &entered.warnings {
        tracing::warn!("{w}");
    }
    tracing::debug!(
        "network process: confined as {} (uid {})",
        entered.user.name,
        entered.user.uid
    );
    // A thread of its own, so started now: after confinement (which wants one
    // thread) and before the lock (no new threads after it).
    match statm {
        Ok(statm) => crate::host::memory::start_trimmer_on(statm),
        Err(e) => tracing::debug!("memory trimmer not started: /proc/self/statm: {e}"),
    }
    let runtime = sandbox::runtime(sandbox::WARM_BLOCKING_THREADS).map_err(|e| e.to_string())?;
    // Before the lock: tokio's signal driver makes a socketpair on first use.
    // SIGTERM, SIGINT and SIGHUP are the monitor's to act on (a terminal's ^C
    // or systemd's stop reaches the whole group); caught here and ignored, so the
    // monitor's orderly stop ends the sessions.
    let ignored = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        [
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::hangup(),
        ]
        .into_iter()
        .map(signal)
        .collect::<Result<Vec<_>, _>>()
    });
    let _ignored = ignored.map_err(|e| format!("signals: {e}"))?;
    // The host is the monitor's, across the link; its reader task starts now.
    let (host, notices) = runtime
        .block_on(async { crate::host::Host::remote(crate::host::Privilege::current(), link_fd) })
        .map_err(|e| e.to_string())?;
    // Read once and kept: getrlimit is not allowed once confined.
    crate::connection::limits::user_fd_cap();
    entered.lock().map_err(|e| e.to_string())?;
    runtime.block_on(serve(host, notices, config, listeners, control, hello.once))
}

async fn serve(
    host: crate::host::Host,
    mut notices: crate::host::wire::Notices,
    config: Config,
    listeners: Vec<std::net::TcpListener>,
    control: Option<std::os::unix::net::UnixListener>,
    once: bool,
) -> Result<(), String> {
    let protocol = protocol_for(&host, &config).await?;
    let config = Arc::new(config);
    let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
    let mut serving = tokio::spawn(serve_network(
        Sockets { listeners, control },
        config,
        Arc::new(protocol),
        host.clone(),
        events,
        once,
    ));
    loop {
        let notice = tokio::select! {
            n = notices.recv() => n,
            // Only in debug mode does serving end by itself.
            r = &mut serving => {
                return match r {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
            }
        };
        match notice {
            Some((Notice::Reload, fds)) => {
                let setup = match fds.first() {
                    Some(fd) => link::from_memfd::<Setup>(fd).map_err(|e| e.to_string()),
                    None => Err("no configuration attached".into()),
                };
                let built = match setup.and_then(|s| build(&s)) {
                    Ok(config) => protocol_for(&host, &config).await.map(|p| (config, p)),
                    Err(e) => Err(e),
                };
                match built {
                    Ok((config, protocol)) => {
                        let _ = events_tx.send(Event::Reload(Arc::new(config), Arc::new(protocol)));
                    }
                    // The monitor loaded it; this would be a bug. The old one stays.
                    Err(e) => tracing::error!("network process: reload: {e}"),
                }
            }
            Some((Notice::Shutdown, _)) => break,
            None => {
                tracing::error!("network process: the link to the monitor is gone; stopping");
                break;
            }
        }
    }
    let _ = events_tx.send(Event::Stop);
    match serving.await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}
