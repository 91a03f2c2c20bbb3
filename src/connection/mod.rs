//! One SSH connection from accept to close: the protocol runs in russh, decisions in
//! [`handler`], and this module owns what outlives single callbacks: the login grace
//! timer, the hard close of the socket, and hanging up every process at the end.

pub mod access;
pub mod agent;
mod flow;
pub mod forward;
pub mod handler;
mod inflow;
mod limits;
pub mod methods;
pub mod pump;
mod remote;
pub mod session;
pub mod stream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::ChannelId;

use tokio::sync::watch;

use crate::admin::{Control, Facts, Registry, registry::Entry};
use crate::config::{Config, ConnSpec, Settings};
use crate::host::ProcessKiller;
use crate::lifetime::{Action, Driver, Ending, Event, Events, Policy};
use crate::log::{human_duration, peer};
use handler::{ConnHandler, Login};
use session::HANGUP_GRACE;
use stream::{StampedStream, Transport};

/// Fixed facts about a connection, shared by its handler and tasks.
///
/// An unspecified address (`0.0.0.0`) with port 65535 is sshd's `UNKNOWN`: a
/// connection on pipes (`-i` under a ProxyCommand) has no addresses, and no accepted
/// TCP connection can have that one. It prints as `UNKNOWN` (see
/// [`crate::log::display_ip`]) and matches no `Match Address`/`LocalAddress`.
pub struct ConnContext {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub config: Arc<Config>,
    /// Settings for this address before a user is known (Banner, LoginGraceTime).
    pub pre_auth: Settings,
    pub daemon_uid: u32,
}

impl ConnContext {
    /// The name Match Host and `from=` see: without UseDNS, the address itself.
    pub fn remote_host(&self) -> String {
        crate::log::display_ip(&self.peer)
    }

    /// The Match criteria of this connection, for `user` once known.
    pub fn spec(&self, user: Option<&str>, groups: Option<Vec<String>>) -> ConnSpec {
        ConnSpec {
            user: user.map(str::to_string),
            host: Some(self.remote_host()),
            addr: Some(self.peer.ip()).filter(|a| !a.is_unspecified()),
            laddr: Some(self.local.ip()).filter(|a| !a.is_unspecified()),
            lport: Some(self.local.port()),
            groups,
        }
    }

    /// The lifetime policy `config` gives this connection now.
    fn policy_under(&self, config: &Config, login: Option<&Login>) -> Policy {
        let spec = match login {
            Some(l) => self.spec(Some(&l.user.name), Some(l.user.group_names.clone())),
            None => self.spec(None, None),
        };
        Policy::from_settings(&config.resolve(&spec))
    }
}

/// State the handler writes and the connection task reads.
pub struct ConnShared {
    user: Mutex<Option<String>>,
    login: watch::Sender<Option<Arc<Login>>>,
    pub processes: Mutex<Vec<ProcessKiller>>,
    /// Lifetime events go here.
    pub events: Events,
    /// Open session channels by number, and whether each has a PTY (for warnings).
    pub channels: Mutex<HashMap<u32, (ChannelId, bool)>>,
    /// This connection's row in the daemon's registry.
    pub entry: Arc<Entry>,
}

impl ConnShared {
    fn new(events: Events, entry: Arc<Entry>) -> Self {
        ConnShared {
            user: Mutex::new(None),
            login: watch::channel(None).0,
            processes: Mutex::new(Vec::new()),
            events,
            channels: Mutex::new(HashMap::new()),
            entry,
        }
    }

    /// Update the registry's facts about this connection.
    pub fn facts(&self, f: impl FnOnce(&mut Facts)) {
        if let Ok(mut facts) = self.entry.facts.lock() {
            f(&mut facts);
        }
    }

    /// Remember the user name last asked for, for the preauth close log line.
    pub fn set_user(&self, user: &str) {
        if let Ok(mut u) = self.user.lock() {
            *u = Some(user.to_string());
        }
    }

    /// The login is complete: its policy replaces the pre-auth one.
    pub fn authenticated(&self, login: Arc<Login>) {
        self.events
            .send(Event::PolicyReplaced(Box::new(Policy::from_settings(
                &login.settings,
            ))));
        self.events.send(Event::Authenticated);
        self.facts(|f| {
            f.user = Some(login.user.name.clone());
            f.uid = Some(login.user.uid);
            f.login_at = Some(std::time::SystemTime::now());
        });
        self.login.send_replace(Some(login));
    }

    fn login(&self) -> Option<Arc<Login>> {
        self.login.borrow().clone()
    }

    fn pty_channels(&self) -> Vec<ChannelId> {
        self.channels
            .lock()
            .map(|c| {
                c.values()
                    .filter(|(_, pty)| *pty)
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The address named in our probe requests (see `Action::SendProbe`).
const PROBE_NAME: &str = "keepalive@rsshd";

/// How long SSH_MSG_DISCONNECT may take to leave before the socket is cut.
const DISCONNECT_FLUSH: Duration = Duration::from_secs(2);

/// How a connection ended, as `sshd -i` reports it in its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Someone logged in (exit 0).
    LoggedIn,
    /// LoginGraceTime ran out first (exit 1, sshd's signal death).
    GraceExpired,
    /// Protocol error or a close before authentication (exit 255).
    Failed,
}

impl Served {
    /// The exit status `sshd -i` has for the same ending.
    pub fn exit_code(self) -> u8 {
        match self {
            Served::LoggedIn => 0,
            Served::GraceExpired => 1,
            Served::Failed => 255,
        }
    }
}

/// Serve one connection to its end. `on_auth` is called once when it
/// authenticates (the daemon uses it to free its MaxStartups slot).
pub async fn serve(
    stream: impl Into<Transport>,
    ctx: ConnContext,
    server_config: Arc<russh::server::Config>,
    registry: Arc<Registry>,
    on_auth: impl FnOnce() + Send + 'static,
) -> Served {
    let stream = stream.into();
    let ctx = Arc::new(ctx);
    let (registration, mut control) = registry.register(ctx.peer);
    let (mut driver, events) = Driver::new(Policy::from_settings(&ctx.pre_auth));
    let shared = Arc::new(ConnShared::new(
        events.clone(),
        Arc::clone(&registration.entry),
    ));
    let started = Instant::now();
    stream.set_nodelay();
    let (stream, cutter) = StampedStream::new(stream, Arc::clone(&events.received));
    let handler = ConnHandler::new(Arc::clone(&ctx), Arc::clone(&shared));
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
            tracing::debug!("connection from {} failed: {e}", peer(&ctx.peer));
            cut();
            return Served::Failed;
        }
        Err(_) => {
            tracing::info!("Timeout before authentication for {}", peer(&ctx.peer));
            cut();
            return Served::GraceExpired;
        }
    };
    let handle = running.handle();
    let run = running;
    tokio::pin!(run);
    let mut login_rx = shared.login.subscribe();
    let mut on_auth = Some(on_auth);
    let mut ending: Option<Ending> = None;
    loop {
        tokio::select! {
            _ = &mut run => break,
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
                    let id = shared.channels.lock().ok().and_then(|c| c.get(&n).map(|(id, _)| *id));
                    if let Some(id) = id {
                        tracing::debug!("channel {n}: ChannelTimeout expired, closing");
                        let _ = Box::pin(handle.close(id)).await;
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
        None if ending.is_none() => {
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
    let killers: Vec<ProcessKiller> = shared
        .processes
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    let mut hangups = tokio::task::JoinSet::new();
    for k in killers {
        hangups.spawn(async move { k.hang_up(HANGUP_GRACE).await });
    }
    while hangups.join_next().await.is_some() {}
    match (shared.login(), &ending) {
        (Some(_), _) => Served::LoggedIn,
        (None, Some(Ending::LoginGrace)) => Served::GraceExpired,
        (None, _) => Served::Failed,
    }
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
