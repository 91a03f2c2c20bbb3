//! The accept loop: which new connections are served, under `MaxStartups`,
//! `PerSourceMaxStartups` and `PerSourcePenalties`, and the penalty each one
//! earns when it ends (sshd's `drop_connection` and `child_reap`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::Live;
use super::srclimit::{Offence, SourceLimits, SourceSlot};
use crate::admin::Registry;
use crate::config::ConnSpec;
use crate::connection::{self, ConnContext, PreauthEnd};
use crate::log::display_ip;

/// What every listener's loop shares.
pub(crate) struct Shared {
    pub live: Arc<std::sync::RwLock<Live>>,
    pub registry: Arc<Registry>,
    pub limits: Arc<SourceLimits>,
    /// The privileged boundary's handle.
    pub host: crate::host::Host,
    /// At most this many unauthenticated connections at work at once.
    gate: Arc<tokio::sync::Semaphore>,
    /// Unauthenticated connections now (sshd's `startups`).
    preauth: Arc<AtomicU32>,
    throttle: Mutex<Throttle>,
    /// Debug mode: the one connection served.
    one: Option<Arc<OneConnection>>,
}

/// Debug mode's single connection (sshd `-d`): the first one admitted is served,
/// the listeners close, and the daemon ends when it ends.
#[derive(Default)]
pub(crate) struct OneConnection {
    taken: AtomicBool,
    accepted: tokio::sync::Notify,
    ended: tokio::sync::Notify,
}

impl OneConnection {
    /// Whether this connection may be served: only the first.
    fn take(&self) -> bool {
        !self.taken.swap(true, Ordering::AcqRel)
    }

    /// Resolves once the connection was accepted (never without debug mode).
    pub(crate) async fn accepted(one: &Option<Arc<OneConnection>>) {
        match one {
            Some(o) => o.accepted.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Resolves once the connection ended (never without debug mode).
    pub(crate) async fn ended(one: &Option<Arc<OneConnection>>) {
        match one {
            Some(o) => o.ended.notified().await,
            None => std::future::pending().await,
        }
    }
}

impl Shared {
    pub(crate) fn new(
        live: Arc<std::sync::RwLock<Live>>,
        registry: Arc<Registry>,
        limits: Arc<SourceLimits>,
        host: crate::host::Host,
        one: Option<Arc<OneConnection>>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            live,
            registry,
            limits,
            host,
            gate: Arc::new(tokio::sync::Semaphore::new(
                crate::connection::gate::default_width(),
            )),
            preauth: Arc::new(AtomicU32::new(0)),
            throttle: Mutex::new(Throttle::default()),
            one,
        })
    }
}

/// sshd's bookkeeping for its MaxStartups log lines: one when throttling begins,
/// one every 5 minutes while it lasts, one when it ends.
#[derive(Default)]
struct Throttle {
    last_drop: Option<Instant>,
    first_drop: Option<Instant>,
    dropped: u32,
}

/// How often sshd repeats that it is still throttling.
const THROTTLE_LOG_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// What a refused client reads before the close, as from sshd.
const REFUSED: &[u8] = b"Not allowed at this time\r\n";

/// sshd's `fmt_timeframe`: `hh:mm:ss` under a day, then days and weeks.
fn timeframe(d: Duration) -> String {
    let t = d.as_secs();
    let (sec, min, hrs, day, week) = (
        t % 60,
        t / 60 % 60,
        t / 3600 % 24,
        t / 86400 % 7,
        t / 604800,
    );
    if week > 0 {
        format!("{week:02}w{day:01}d{hrs:02}h")
    } else if day > 0 {
        format!("{day:01}d{hrs:02}h{min:02}m")
    } else {
        format!("{hrs:02}:{min:02}:{sec:02}")
    }
}

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let local = stream.local_addr().unwrap_or(peer);
        match admit(&shared, &stream, peer, local) {
            Some(slot) => match &shared.one {
                None => serve(&shared, stream, peer, local, slot),
                Some(one) if one.take() => {
                    serve(&shared, stream, peer, local, slot);
                    // notify_one keeps the wake-up if nobody waits yet.
                    one.accepted.notify_one();
                    return;
                }
                // Another listener's loop took the one connection meanwhile.
                Some(_) => return,
            },
            // A refused flood is accepted as fast as it comes (tokio lets one poll
            // accept up to 128): let sessions' tasks run between refusals.
            None => tokio::task::yield_now().await,
        }
    }
}

/// The penalty check, then MaxStartups and PerSourceMaxStartups, in sshd's order;
/// a refused connection is told so and closed.
fn admit(
    shared: &Arc<Shared>,
    stream: &TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<SourceSlot> {
    let n = shared.preauth.load(Ordering::Relaxed);
    let line = |reason: &str| {
        format!(
            "drop connection #{n} from [{}]:{} on [{}]:{} {reason}",
            display_ip(&peer),
            peer.port(),
            display_ip(&local),
            local.port()
        )
    };
    if let Some(reason) = shared.limits.refusal(peer.ip()) {
        tracing::info!("{}", line(reason));
        let _ = stream.try_write(REFUSED);
        return None;
    }
    let max_startups = shared
        .live
        .read()
        .map(|l| l.config.global().max_startups)
        .unwrap_or((10, 30, 100));
    let slot = if should_drop(n, max_startups) {
        None
    } else {
        shared.limits.admit(peer.ip())
    };
    let now = Instant::now();
    let Ok(mut t) = shared.throttle.lock() else {
        return slot;
    };
    if slot.is_some() {
        if let Some(first) = t.first_drop.filter(|_| t.last_drop.is_some())
            && n + 1 < max_startups.0
        {
            tracing::info!(
                "exited MaxStartups throttling after {}, {} connections dropped",
                timeframe(now - first),
                t.dropped
            );
            t.last_drop = None;
        }
        return slot;
    }
    let mut loud = false;
    match t.last_drop {
        None => {
            tracing::error!("beginning MaxStartups throttling");
            loud = true;
            t.first_drop = Some(now);
            t.dropped = 0;
        }
        Some(last) if last + THROTTLE_LOG_INTERVAL < now => {
            let first = t.first_drop.unwrap_or(now);
            tracing::error!(
                "in MaxStartups throttling for {}, {} connections dropped",
                timeframe(now - first),
                t.dropped + 1
            );
            loud = true;
        }
        Some(_) => {}
    }
    t.last_drop = Some(now);
    t.dropped += 1;
    // sshd logs every other drop at VERBOSE: a flood must not flood the log.
    if loud {
        tracing::info!("{}", line("past Maxstartups"));
    } else {
        tracing::debug!("{}", line("past Maxstartups"));
    }
    let _ = stream.try_write(REFUSED);
    None
}

fn serve(
    shared: &Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    source: SourceSlot,
) {
    let Ok((config, protocol)) = shared
        .live
        .read()
        .map(|l| (Arc::clone(&l.config), Arc::clone(&l.protocol)))
    else {
        return;
    };
    let rdomain = connection::rdomain_of(&stream);
    let pre_auth = config.resolve_shared(&ConnSpec {
        user: None,
        host: Some(display_ip(&peer)),
        addr: Some(peer.ip()),
        laddr: Some(local.ip()),
        lport: Some(local.port()),
        rdomain: rdomain.clone(),
        groups: None,
    });
    if pre_auth.tcp_keep_alive {
        let _ = socket2::SockRef::from(&stream).set_keepalive(true);
    }
    shared.preauth.fetch_add(1, Ordering::Relaxed);
    let slot = Arc::new(PreauthSlot {
        count: Arc::clone(&shared.preauth),
        held: AtomicBool::new(true),
        source: Mutex::new(Some(source)),
    });
    let registry = Arc::clone(&shared.registry);
    let limits = Arc::clone(&shared.limits);
    let host = shared.host.clone();
    let preauth_gate = Some(Arc::clone(&shared.gate));
    let one = shared.one.clone();
    tokio::spawn(async move {
        let on_auth = {
            let slot = Arc::clone(&slot);
            move || slot.release()
        };
        let ctx = ConnContext {
            peer,
            local,
            config,
            pre_auth,
            host,
            preauth_gate,
            rdomain,
            dns_name: Default::default(),
        };
        // RekeyLimit from a Match on the address or port.
        let protocol =
            super::algorithms::for_connection(&protocol, ctx.config.global(), &ctx.pre_auth);
        let end = connection::serve(stream, ctx, protocol, registry, on_auth).await;
        slot.release();
        let offence = match end {
            PreauthEnd::Authenticated | PreauthEnd::Stopped => None,
            PreauthEnd::GraceExceeded => Some(Offence::GraceExceeded),
            PreauthEnd::Crashed => Some(Offence::Crash),
            PreauthEnd::AuthFailed => Some(Offence::AuthFail),
            PreauthEnd::NoAuth => Some(Offence::NoAuth),
        };
        if let Some(o) = offence {
            limits.penalise(peer.ip(), o);
        }
        if let Some(one) = one {
            one.ended.notify_one();
        }
    });
}

/// One unauthenticated connection counted against MaxStartups and its source's
/// PerSourceMaxStartups, released once (on login or at the end).
struct PreauthSlot {
    count: Arc<AtomicU32>,
    held: AtomicBool,
    source: Mutex<Option<SourceSlot>>,
}

impl PreauthSlot {
    fn release(&self) {
        if self.held.swap(false, Ordering::Relaxed) {
            self.count.fetch_sub(1, Ordering::Relaxed);
            if let Ok(mut s) = self.source.lock() {
                s.take();
            }
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

    #[test]
    fn timeframes_read_like_sshd() {
        assert_eq!(timeframe(Duration::from_secs(83)), "00:01:23");
        assert_eq!(
            timeframe(Duration::from_secs(86400 + 7200 + 180)),
            "1d02h03m"
        );
        assert_eq!(
            timeframe(Duration::from_secs(2 * 604800 + 86400 + 3600)),
            "02w1d01h"
        );
    }
}
