//! One SSH connection from accept to close: the protocol runs in russh, decisions in
//! [`handler`], and this module owns what outlives single callbacks: the login grace
//! timer, the hard close of the socket, and hanging up every process at the end.

pub mod access;
pub mod handler;
pub mod session;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::{Config, Settings};
use crate::host::ProcessKiller;
use crate::log::{human_duration, peer};
use handler::{ConnHandler, Login};
use session::HANGUP_GRACE;

/// Fixed facts about a connection, shared by its handler and tasks.
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
}

/// State the handler writes and the connection task reads.
pub struct ConnShared {
    user: Mutex<Option<String>>,
    login: watch::Sender<Option<Arc<Login>>>,
    pub processes: Mutex<Vec<ProcessKiller>>,
}

impl ConnShared {
    fn new() -> Self {
        ConnShared {
            user: Mutex::new(None),
            login: watch::channel(None).0,
            processes: Mutex::new(Vec::new()),
        }
    }

    /// Remember the user name last asked for, for the preauth close log line.
    pub fn set_user(&self, user: &str) {
        if let Ok(mut u) = self.user.lock() {
            *u = Some(user.to_string());
        }
    }

    pub fn authenticated(&self, login: Arc<Login>) {
        self.login.send_replace(Some(login));
    }

    fn login(&self) -> Option<Arc<Login>> {
        self.login.borrow().clone()
    }
}

/// Serve one accepted connection to its end. `on_auth` is called once when it
/// authenticates (the daemon uses it to free its MaxStartups slot).
pub async fn serve(
    stream: TcpStream,
    ctx: ConnContext,
    server_config: Arc<russh::server::Config>,
    on_auth: impl FnOnce() + Send + 'static,
) {
    let ctx = Arc::new(ctx);
    let shared = Arc::new(ConnShared::new());
    let started = Instant::now();
    // A second descriptor of the socket lets us shut it down even while russh is
    // blocked writing to a client that stopped reading.
    let hard_close: Option<OwnedFd> = nix::unistd::dup(&stream).ok();
    let _ = stream.set_nodelay(true);
    let handler = ConnHandler::new(Arc::clone(&ctx), Arc::clone(&shared));
    let grace = ctx.pre_auth.login_grace_time;
    let mut login_rx = shared.login.subscribe();

    let run = async {
        let session = russh::server::run_stream(server_config, stream, handler).await?;
        session.await
    };
    tokio::pin!(run);
    let grace_timer = async {
        if grace.is_zero() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(grace_timer);

    let mut on_auth = Some(on_auth);
    let result = loop {
        tokio::select! {
            r = &mut run => break Some(r),
            changed = login_rx.changed(), if on_auth.is_some() => {
                if changed.is_ok() && login_rx.borrow().is_some() {
                    if let Some(f) = on_auth.take() { f(); }
                }
            }
            _ = &mut grace_timer, if on_auth.is_some() => {
                tracing::info!("Timeout before authentication for {}", peer(&ctx.peer));
                break None;
            }
        }
    };
    if let Some(fd) = &hard_close {
        let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
    drop(run);

    match shared.login() {
        Some(login) => {
            tracing::info!("Disconnected from user {} {}", login.user.name, peer(&ctx.peer));
            tracing::debug!("session of {} lasted {}", login.user.name, human_duration(started.elapsed()));
        }
        None => {
            let user = shared.user.lock().ok().and_then(|u| u.clone());
            match (result, user) {
                (None, _) => {}
                (_, Some(u)) => tracing::info!(
                    "Connection closed by authenticating user {u} {} [preauth]",
                    peer(&ctx.peer)
                ),
                (_, None) => tracing::info!("Connection closed by {} [preauth]", peer(&ctx.peer)),
            }
        }
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
}
