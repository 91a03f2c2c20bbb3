//! One SSH connection from accept to close: the protocol runs in russh, decisions in
//! [`handler`], and this module owns what outlives single callbacks: the login grace
//! timer, the hard close of the socket, and hanging up every process at the end.
//!
//! The submodules form layers, each using only those below it (checked by the
//! `layering` test; `a: b c` means `a` uses `b` and `c`):
//!
//! ```text
//! handler:  flow forward limits login session shared
//! forward:  agent limits login pump remote shared tunnels
//! agent:    limits pump tunnels
//! remote:   pump tunnels
//! session:  channels cleanup flow inflow limits pump shared
//! pump:     inflow tunnels
//! tunnels:  channels flow inflow limits shared
//! shared:   channels cleanup gate login
//! channels: flow inflow limits
//! inflow:   flow
//! flow:     limits
//! stream:   banner gate
//! banner, cleanup, gate, limits, login: nothing in `connection`
//!
//! Who may log in and how (AuthenticationMethods, access lists, keys, PAM) is
//! the host's to decide (`crate::host::api`); the handler asks.
//! ```
//!
//! Per-channel state has one owner, [`channels`]' table (kind, place, PTY flag,
//! retire wake-up, input queue, window credit); the handler keeps only the
//! not-yet-started session state it mutates across awaits (see there).

mod agent;
mod banner;
mod channels;
mod cleanup;
pub(crate) mod flow;
mod forward;
pub(crate) mod gate;
mod handler;
mod inflow;
#[cfg(test)]
mod layering;
pub(crate) mod limits;
mod login;
mod pump;
mod remote;
mod session;
mod shared;
pub(crate) mod stream;
mod tunnels;

use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::ChannelId;

use crate::admin::{Control, Registry};
use crate::lifetime::{Action, Driver, Ending, Event, Policy};
use crate::log::{human_duration, peer};
use handler::ConnHandler;
use login::Login;
pub(crate) use shared::ConnContext;
use shared::ConnShared;
use stream::{StampedStream, Transport};

/// The routing domain of a connection's socket as sshd's `get_rdomain` reports it on
/// Linux: the device it is bound to (`SO_BINDTODEVICE`, a VRF), `""` when none;
/// `None` when the descriptor is no socket (or the kernel would not say).
pub(crate) fn rdomain_of(fd: &impl std::os::fd::AsFd) -> Option<String> {
    nix::sys::socket::getsockopt(fd, nix::sys::socket::sockopt::BindToDevice)
        .ok()
        .map(|d| d.to_string_lossy().into_owned())
}

/// The address named in our probe requests (see `Action::SendProbe`).
const PROBE_NAME: &str = "keepalive@rsshd";

/// How long SSH_MSG_DISCONNECT may take to leave before the socket is cut.
const DISCONNECT_FLUSH: Duration = Duration::from_secs(2);

/// How a connection ended as far as authentication goes, for PerSourcePenalties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreauthEnd {
    /// It logged in (whatever happened after).
    Authenticated,
    /// The daemon ended it (shutdown, `rsshd kill`) before it logged in.
    Stopped,
    /// LoginGraceTime ran out.
    GraceExceeded,
    /// Its protocol task died from a panic.
    Crashed,
    /// It tried at least one method other than `none` and went away.
    AuthFailed,
    /// It went away without trying to authenticate.
    NoAuth,
}

impl PreauthEnd {
    /// The exit status `sshd -i` has for the same ending: 0 once someone logged
    /// in, 1 (sshd's signal death) when LoginGraceTime ran out, 255 otherwise.
    pub fn exit_code(self) -> u8 {
        match self {
            PreauthEnd::Authenticated => 0,
            PreauthEnd::GraceExceeded => 1,
            _ => 255,
        }
    }
}

/// Serve one connection to its end. `on_auth` is called once when it
/// authenticates (the daemon uses it to free its MaxStartups slot).
pub(crate) async fn serve(
    stream: impl Into<Transport>,
    ctx: ConnContext,
    server_config: Arc<russh::server::Config>,
    registry: Arc<Registry>,
    on_auth: impl FnOnce() + Send + 'static,
) -> PreauthEnd {
    let host = ctx.host.clone();
    // The host's state for this connection, from first packet to last.
    let conn = match host
        .open_conn(ctx.peer, ctx.local, ctx.rdomain.clone())
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("host: {e}");
            return PreauthEnd::NoAuth;
        }
    };
    let end = serve_conn(stream, ctx, conn, server_config, registry, on_auth).await;
    // Every ending, early or not, closes the host's connection once, here: after
    // `serve_conn` told the host of each session's end.
    host.close_conn(conn).await;
    end
}

async fn serve_conn(
    stream: impl Into<Transport>,
    ctx: ConnContext,
    conn: crate::host::api::ConnId,
    server_config: Arc<russh::server::Config>,
    registry: Arc<Registry>,
    on_auth: impl FnOnce() + Send + 'static,
) -> PreauthEnd {
    let stream = stream.into();
    let ctx = Arc::new(ctx);
    let (registration, mut control) = registry.register(ctx.peer);
    let (mut driver, events) = Driver::new(Policy::from_settings(&ctx.pre_auth));
    let ticket = ctx.preauth_gate.clone().map(gate::Ticket::new);
    let shared = Arc::new(ConnShared::new(
        events.clone(),
        Arc::clone(&registration.entry),
        ticket.clone(),
    ));
    let started = Instant::now();
    stream.set_nodelay();
    let (stream, cutter) = StampedStream::new(stream, Arc::clone(&events.received));
    let stream = match ticket {
        Some(t) => stream.gated(gate::Waiter::new(t)),
        None => stream,
    };
    let handler = ConnHandler::new(Arc::clone(&ctx), Arc::clone(&shared), conn);
    let cut = || cutter.cut();

    // The version exchange happens inside run_stream; a silent client must not
    // hold us past the login grace time there either.
    let grace = ctx.pre_auth.login_grace_time;
    // Boxed, like the goodbye below: russh's handshake future is large, and a
    // future held inline would size this task's state for the connection's whole
    // life, a few kB on each of thousands of idle connections.
    let opened = Box::pin(async {
        if grace.is_zero() {
            Ok(russh::server::run_stream(server_config, stream, handler).await)
        } else {
            tokio::time::timeout(
                grace,
                russh::server::run_stream(server_config, stream, handler),
            )
            .await
        }
    });
    let running = match opened.await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            if let Some(major) = cutter.refused_version() {
                // sshd's two lines for an SSH-1 client (kex.c, then the fatal).
                tracing::error!("Protocol major versions differ: 2 vs. {major}");
                tracing::info!(
                    "banner exchange: Connection from {}: could not read protocol version",
                    peer(&ctx.peer)
                );
            }
            tracing::debug!("connection from {} failed: {e}", peer(&ctx.peer));
            cut();
            return PreauthEnd::NoAuth;
        }
        Err(_) => {
            tracing::info!("Timeout before authentication for {}", peer(&ctx.peer));
            cut();
            return PreauthEnd::GraceExceeded;
        }
    };
    let handle = running.handle();
    // Boxed, so that it can be dropped (with the handler and its channels) before
    // the sessions are ended.
    let mut run = Box::pin(running);
    let mut login_rx = shared.login.subscribe();
    let mut on_auth = Some(on_auth);
    let mut ending: Option<Ending> = None;
    let mut crashed = false;
    loop {
        tokio::select! {
            r = &mut run => {
                // russh reports its task's panic as a join error.
                crashed = matches!(r, Err(handler::ConnError::Protocol(russh::Error::Join(_))));
                break;
            }
            changed = login_rx.changed(), if on_auth.is_some() => {
                if changed.is_ok() && login_rx.borrow().is_some()
                    && let Some(f) = on_auth.take() { f(); }
            }
            Some(msg) = control.recv() => match msg {
                Control::End(e) => {
                    ending = Some(e);
                    break;
                }
                Control::Reload(config) => {
                    let policy = ctx.policy_under(&config, shared.login().as_deref());
                    events.send(Event::PolicyReplaced(Box::new(policy)));
                }
                Control::Query(reply) => {
                    let _ = reply.send(driver.snapshot());
                }
            },
            action = driver.next() => match action {
                Action::SendProbe => {
                    // russh 0.65 has no server-side keepalive on its Handle; any global
                    // request with want-reply makes every client answer, and the answer
                    // (like any packet) stamps liveness.
                    let h = handle.clone();
                    tokio::spawn(async move {
                        let _ = h.cancel_forward_tcpip(PROBE_NAME.into(), 0).await;
                    });
                }
                Action::Warn(text) => {
                    tracing::info!("{}: {text}", shared.login().map(|l| l.user.name.clone()).unwrap_or_default());
                    Box::pin(write_to_ptys(&handle, &shared.pty_channels(), &text)).await;
                }
                Action::CloseChannel(n) => {
                    if let Some(id) = shared.channels.id(n) {
                        tracing::debug!("channel {n}: ChannelTimeout expired, closing");
                        // A lifetime limit: its session ends as a lost one.
                        // Decided before the close, which the session's reader
                        // would otherwise take for the client's.
                        for end in shared.sessions.live(Some(n)) {
                            if end.mark_lost() {
                                tokio::spawn(async move { end.apply_lost().await });
                            }
                        }
                        let _ = Box::pin(handle.close(id)).await;
                        // russh forgot it with our CLOSE: retire it here.
                        shared.retire(n);
                    }
                }
                Action::Disconnect(e) => {
                    ending = Some(e);
                    break;
                }
            }
        }
    }

    if let Some(e) = &ending {
        log_ending(e, &ctx, shared.login().as_deref(), started.elapsed());
    }
    // Before authentication there is nobody to explain anything to (and maybe no
    // finished key exchange to carry a DISCONNECT): close at once, as sshd does.
    if let Some(e) = ending.as_ref().filter(|_| shared.login().is_some()) {
        let text = e.user_text();
        let goodbye = Box::pin(async {
            let ptys = shared.pty_channels();
            if !ptys.is_empty() {
                write_to_ptys(&handle, &ptys, &text).await;
                // A request the client must answer after the line: once answered, the
                // line has reached the client and it gets a moment to draw it, since
                // clients exit on DISCONNECT without flushing the terminal.
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    handle.cancel_forward_tcpip(PROBE_NAME.into(), 0),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    text.clone(),
                    String::new(),
                )
                .await;
            (&mut run).await
        });
        let _ = tokio::time::timeout(DISCONNECT_FLUSH, goodbye).await;
    }
    cut();

    match shared.login() {
        Some(login) => {
            tracing::info!(
                "Disconnected from user {} {}",
                login.user.name,
                peer(&ctx.peer)
            );
            tracing::debug!(
                "session of {} lasted {}",
                login.user.name,
                human_duration(started.elapsed())
            );
        }
        None if shared.refused.load(std::sync::atomic::Ordering::Relaxed) => {}
        None if ending.is_none()
            // Ended for too many authentication failures (logged as sshd does).
            && !shared.auth_exhausted.load(std::sync::atomic::Ordering::Relaxed) =>
        {
            let user = shared.user.lock().ok().and_then(|u| u.clone());
            match user {
                Some(u) => tracing::info!(
                    "Connection closed by authenticating user {u} {} [preauth]",
                    peer(&ctx.peer)
                ),
                None => tracing::info!("Connection closed by {} [preauth]", peer(&ctx.peer)),
            }
        }
        None => {}
    }
    let end = match (&ending, shared.login().is_some()) {
        (_, true) => PreauthEnd::Authenticated,
        (Some(Ending::LoginGrace), _) => PreauthEnd::GraceExceeded,
        (Some(Ending::Shutdown | Ending::Killed { .. }), _) => PreauthEnd::Stopped,
        _ if crashed => PreauthEnd::Crashed,
        _ if shared.attempted.load(std::sync::atomic::Ordering::Relaxed) => PreauthEnd::AuthFailed,
        _ => PreauthEnd::NoAuth,
    };
    drop(run);
    // Whatever still runs lost its connection (see `cleanup`); once the host
    // was told of every session's end, `serve` closes the connection: the PAM
    // session, as sshd's at the connection's end, and anything left over.
    let mut hangups = tokio::task::JoinSet::new();
    for end in shared.sessions.live(None) {
        hangups.spawn(async move { end.lost().await });
    }
    while hangups.join_next().await.is_some() {}
    end
}

/// One line on each of the connection's terminals, on a line of its own.
async fn write_to_ptys(handle: &russh::server::Handle, channels: &[ChannelId], text: &str) {
    let line = bytes::Bytes::from(format!("\r\n{text}\r\n"));
    for id in channels {
        let _ = handle.data(*id, line.clone()).await;
    }
}

/// The one log line for an ending the engine decided, in OpenSSH's words where
/// OpenSSH has them.
fn log_ending(e: &Ending, ctx: &ConnContext, login: Option<&Login>, length: Duration) {
    let who = login.map(|l| l.user.name.as_str()).unwrap_or("unknown");
    let p = peer(&ctx.peer);
    match e {
        Ending::LoginGrace => tracing::info!("Timeout before authentication for {p}"),
        Ending::NotResponding => {
            tracing::info!("Timeout, client not responding from user {who} {p}")
        }
        Ending::Idle { after } => tracing::info!(
            "Idle timeout for user {who} from {p} after {} (no input); session length {}",
            human_duration(*after),
            human_duration(length)
        ),
        Ending::Unused { after } => tracing::info!(
            "Unused connection timeout for user {who} from {p} after {}; session length {}",
            human_duration(*after),
            human_duration(length)
        ),
        Ending::Killed { reason } => tracing::info!(
            "Session of user {who} from {p} ended by the administrator: {reason}; session length {}",
            human_duration(length)
        ),
        Ending::Shutdown => tracing::info!(
            "Disconnecting user {who} {p}: server shutting down; session length {}",
            human_duration(length)
        ),
    }
}
