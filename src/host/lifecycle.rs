//! What the host keeps of a connection after its login, and how each of it ends:
//! the session programs it started (their exit, utmp/wtmp logout, hang-ups under
//! `SessionCleanup`, the reap), the agent sockets it made, and the requests that
//! reach them (`Wait`, `HangUp`, `TcpListen`, `Accept`, `AgentSocket`,
//! `RemoveAgentSocket`, `Banner`). The network side only ever names these by the host's numbers and
//! holds only descriptors: a compromised network side can wait on, hang up or
//! accept for its own connection's login and nothing else.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, watch};

use super::api::{ConnId, HangUpHow, LoginToken, Reply, Request, Response};
use super::as_user::Creds;
use super::process::{HANGUP_GRACE, LOST_SETTLE, ProcessKiller};
use super::service::Service;
use super::spawn::{ExitOutcome, SessionProcess};
use super::{HostError, LoginRecord};
use crate::config::SessionCleanup;

/// Most connections one `Accept` takes (a burst costs one trip to the user's
/// identity per this many).
const ACCEPT_MAX: u32 = 64;

/// Most bytes of a `Banner` file sent: the whole answer must fit in one of the
/// monitor protocol's datagrams (64 KiB) in step 2.
const BANNER_MAX: u64 = 48 * 1024;

/// A session program as the host tracks it, shared by its entry in the host's
/// table and the task that sees it end.
pub(super) struct Tracked {
    killer: ProcessKiller,
    /// The host's SessionCleanup for the login that started it.
    policy: SessionCleanup,
    /// Its end, once seen (and its utmp/wtmp logout written).
    exit: watch::Sender<Option<Result<ExitOutcome, String>>>,
    /// Its session's end was decided (a `HangUp`, or the connection's end).
    ended: AtomicBool,
    /// The decided end's hang-up is under way: the leader may be reaped once it
    /// has ended.
    release: Notify,
}

impl Tracked {
    pub(super) fn killer(&self) -> &ProcessKiller {
        &self.killer
    }

    fn exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// End the session `how`, once (later calls do nothing): the host's copy of
    /// the terminal is closed, and under the host's own policy: a normal end
    /// signals nothing under `hangup` and leaves the session alone from then on;
    /// `kill` hangs the session up (SIGHUP, SIGKILL after the grace); a lost
    /// session under `hangup` gets SIGHUP once its program has ended or after
    /// `LOST_SETTLE`. Returns once that is done; the leader is reaped after.
    pub(super) async fn end(&self, how: HangUpHow) {
        if self.ended.swap(true, Ordering::SeqCst) {
            return;
        }
        self.killer.close_terminal();
        let work: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> =
            match (how, self.policy) {
                (HangUpHow::Ended, SessionCleanup::Hangup) => {
                    self.killer.leave();
                    None
                }
                (_, SessionCleanup::Kill) => Some(Box::pin(self.killer.hang_up(HANGUP_GRACE))),
                (HangUpHow::Lost, SessionCleanup::Hangup) => {
                    Some(Box::pin(self.killer.hang_up_lost(LOST_SETTLE)))
                }
            };
        // Counted by the killer already: the reap waits for it either way.
        self.release.notify_one();
        if let Some(work) = work {
            work.await;
        }
    }

    /// The connection is gone: a program that already ended had a normal end;
    /// one still running is lost.
    pub(super) async fn conn_gone(&self) {
        let how = if self.exited() {
            HangUpHow::Ended
        } else {
            HangUpHow::Lost
        };
        self.end(how).await;
    }
}

/// Start tracking `process`: its utmp/wtmp login now, its logout when it ends,
/// and its reap once its session's end was decided.
pub(super) fn track(
    host: Service,
    id: u64,
    process: SessionProcess,
    policy: SessionCleanup,
    record: Option<LoginRecord>,
) -> Arc<Tracked> {
    let tracked = Arc::new(Tracked {
        killer: process.killer(),
        policy,
        exit: watch::channel(None).0,
        ended: AtomicBool::new(false),
        release: Notify::new(),
    });
    tokio::spawn(run(host, id, process, Arc::clone(&tracked), record));
    tracked
}

async fn run(
    host: Service,
    id: u64,
    mut process: SessionProcess,
    tracked: Arc<Tracked>,
    record: Option<LoginRecord>,
) {
    let login = record.clone().map(|rec| {
        tokio::task::spawn_blocking(move || {
            if let Err(e) = super::record_login(&rec) {
                tracing::error!("utmp/wtmp login record for {}: {e}", rec.tty.display());
            }
        })
    });
    let outcome = process.wait().await;
    // Boxed: only the wait above is in this task's state while the program runs.
    Box::pin(async move {
        if let Some(login) = login {
            let _ = login.await;
        }
        if let Some(rec) = record {
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = super::record_logout(&rec.tty, rec.pid) {
                    tracing::error!("utmp/wtmp logout record for {}: {e}", rec.tty.display());
                }
            })
            .await;
        }
        tracked
            .exit
            .send_replace(Some(outcome.map_err(|e| e.to_string())));
        tracked.release.notified().await;
        // Reap the leader once the hang-ups in progress are done.
        process.finish().await;
        host.forget_process(id);
    })
    .await;
}

/// An agent socket the host made for a connection.
pub(super) struct AgentDir {
    pub(super) conn: ConnId,
    pub(super) creds: Creds,
    pub(super) dir: PathBuf,
}

impl AgentDir {
    /// Remove its directory as the user who owns it.
    pub(super) async fn remove(self) {
        if let Err(e) = super::user_socket::remove_user_socket(&self.creds, self.dir.clone()).await
        {
            tracing::debug!("agent socket {}: not removed: {e}", self.dir.display());
        }
    }
}

/// Refuse a request and log it as the boundary's other refusals are.
fn refuse(what: &str, conn: ConnId, why: &str) -> HostError {
    tracing::error!("host: refused {what} on connection {}: {why}", conn.0);
    HostError::NotPermitted(why.to_string())
}

/// Whether `fd` is a listening TCP socket: what `Accept` accepts on.
fn is_tcp_listener(fd: &OwnedFd) -> bool {
    use nix::sys::socket::sockopt::{AcceptConn, SockType as SoType};
    use nix::sys::socket::{SockType, getsockopt};
    let stream = getsockopt(&fd.as_fd(), SoType).is_ok_and(|t| t == SockType::Stream);
    let listening = getsockopt(&fd.as_fd(), AcceptConn).unwrap_or(false);
    let inet = socket2::SockRef::from(fd)
        .local_addr()
        .is_ok_and(|a| a.as_socket().is_some());
    stream && listening && inet
}

/// Why the host refuses to listen on `addr` for the user `uid`, by what it can
/// tell without the config: no TCP listener on a multicast or broadcast
/// address, and a privileged port only for root (the network side refuses the
/// latter first, logging it as sshd does; binding as the user would refuse it
/// again, unless the system lowered `ip_unprivileged_port_start`, which sshd
/// does not follow either).
fn listen_refusal(addr: SocketAddr, uid: u32) -> Result<(), String> {
    let ip = addr.ip();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_multicast() || broadcast {
        return Err(format!("no listening on {ip}"));
    }
    let port = addr.port();
    if port != 0 && port < 1024 && uid != 0 {
        return Err(format!("privileged port {port} for uid {uid}"));
    }
    Ok(())
}

/// `Wait`: a long poll, answered when the program has ended. Kept small: the
/// caller's session task holds it for the program's whole life.
pub(super) async fn wait(
    host: &Service,
    conn: ConnId,
    token: LoginToken,
    process: u64,
) -> Result<Reply, HostError> {
    host.login(conn, &token, "Wait")?;
    let mut rx = host.program(conn, process, "Wait")?.exit.subscribe();
    let outcome = match rx.wait_for(Option::is_some).await {
        Ok(o) => o.clone(),
        Err(_) => None,
    };
    match outcome {
        Some(Ok(outcome)) => Ok(Response::Exited(outcome).into()),
        Some(Err(e)) => Err(HostError::NotPermitted(e)),
        None => Err(HostError::NotPermitted("program gone".into())),
    }
}

/// Serve this module's requests.
pub(super) async fn serve(
    host: &Service,
    request: Request,
    mut fds: Vec<OwnedFd>,
) -> Result<Reply, HostError> {
    Ok(match request {
        Request::Wait {
            conn,
            token,
            process,
        } => return wait(host, conn, token, process).await,
        Request::HangUp {
            conn,
            token,
            process,
            how,
        } => {
            host.login(conn, &token, "HangUp")?;
            let tracked = host.program(conn, process, "HangUp")?;
            tracked.end(how).await;
            Response::Done.into()
        }
        Request::Accept { conn, token, max } => {
            let (_, login) = host.login(conn, &token, "Accept")?;
            let listener = match (fds.pop(), fds.is_empty()) {
                (Some(l), true) if is_tcp_listener(&l) => l,
                _ => return Err(refuse("Accept", conn, "not one listening TCP socket")),
            };
            let creds = Creds::from(&login.user);
            let max = max.clamp(1, ACCEPT_MAX) as usize;
            let got = super::user_socket::user_accept(&creds, listener, max).await?;
            let (fds, peers) = got.into_iter().unzip();
            Reply {
                response: Response::Accepted(peers),
                fds,
            }
        }
        Request::TcpListen { conn, token, addr } => {
            let (_, login) = host.login(conn, &token, "TcpListen")?;
            if let Err(why) = listen_refusal(addr, login.user.uid) {
                return Err(refuse("TcpListen", conn, &why));
            }
            let creds = Creds::from(&login.user);
            let fd = super::user_socket::user_tcp_listener(&creds, addr).await?;
            Reply {
                response: Response::Socket,
                fds: vec![fd],
            }
        }
        Request::AgentSocket { conn, token } => {
            let (_, login) = host.login(conn, &token, "AgentSocket")?;
            let creds = Creds::from(&login.user);
            let name = format!("agent.{}", std::process::id());
            let made = super::user_socket::user_socket(&creds, &name).await?;
            let path = made.path.to_string_lossy().into_owned();
            let dir = AgentDir {
                conn,
                creds,
                dir: made.dir,
            };
            match host.add_agent_dir(dir) {
                Ok(socket) => Reply {
                    response: Response::Agent { socket, path },
                    fds: vec![OwnedFd::from(made.listener)],
                },
                // The connection closed meanwhile: removed already.
                Err(e) => return Err(e),
            }
        }
        Request::RemoveAgentSocket {
            conn,
            token,
            socket,
        } => {
            host.login(conn, &token, "RemoveAgentSocket")?;
            match host.take_agent_dir(conn, socket) {
                Some(dir) => dir.remove().await,
                None => {
                    return Err(refuse(
                        "RemoveAgentSocket",
                        conn,
                        &format!("agent socket {socket} is not one of its own"),
                    ));
                }
            }
            Response::Done.into()
        }
        Request::Banner { conn } => {
            let path = host.conn(conn)?.lock().await.banner.clone();
            let text = match path {
                Some(p) => tokio::task::spawn_blocking(move || read_banner(&p))
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            Response::Banner(text).into()
        }
        _ => return Err(HostError::NotPermitted("not a lifecycle request".into())),
    })
}

/// The banner file's text (`None` if unreadable or not UTF-8, as before), at
/// most [`BANNER_MAX`] bytes of it.
fn read_banner(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(BANNER_MAX + 1).read_to_end(&mut bytes).ok()?;
    if bytes.len() as u64 > BANNER_MAX {
        tracing::info!(
            "Banner {}: only its first {BANNER_MAX} bytes are sent",
            path.display()
        );
        bytes.truncate(BANNER_MAX as usize);
        // Cut at a character boundary (a character the cap split in two).
        if let Err(e) = std::str::from_utf8(&bytes)
            && e.error_len().is_none()
        {
            bytes.truncate(e.valid_up_to());
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::listen_refusal;

    #[test]
    fn privileged_ports_are_root_s_and_port_zero_anyone_s() {
        let at = |s: &str| s.parse().expect("addr");
        assert!(listen_refusal(at("127.0.0.1:22"), 1000).is_err());
        assert!(listen_refusal(at("[::1]:1023"), 1000).is_err());
        assert!(listen_refusal(at("127.0.0.1:22"), 0).is_ok());
        assert!(listen_refusal(at("127.0.0.1:1024"), 1000).is_ok());
        assert!(listen_refusal(at("0.0.0.0:0"), 1000).is_ok());
        assert!(listen_refusal(at("[::]:0"), 1000).is_ok());
    }
}
