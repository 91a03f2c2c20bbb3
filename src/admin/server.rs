//! The control socket: a Unix socket only root and the daemon's own user may use
//! (checked with SO_PEERCRED on every connection, on top of mode 0600).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Instant;

use super::protocol::{Command, Request, Response, SessionInfo, VERSION};
use super::registry::{Control, Entry, Registry};
use crate::lifetime::{Ending, Snapshot};

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another daemon answers there: taking its socket over would cut its admin off.
    #[error(
        "control socket {0} is in use by a running rsshd; stop it first or set another ControlSocket"
    )]
    InUse(PathBuf),
    /// Something that is not a socket (or a symlink) sits at the path; it is not ours
    /// to delete.
    #[error("control socket {0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The bound control socket and the identity (device, inode) of the file this
/// process created, so that on exit it removes that file and nothing else.
#[derive(Debug)]
pub struct ControlSocket {
    pub listener: std::os::unix::net::UnixListener,
    pub guard: SocketFile,
}

/// Removes the socket file on drop, if the path still names the file we created.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        // Another daemon may have replaced the file since (after we were thought
        // dead), or an admin may have put something else there: leave those alone.
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && m.dev() == self.dev
            && m.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What is at the socket path now.
enum Occupant {
    Nothing,
    /// A socket nobody accepts on: left behind by a daemon that died.
    Stale,
    Live,
    Other,
}

/// Probe the path without following a symlink and without blocking: a live daemon
/// whose backlog is full still counts as live (EAGAIN on a non-blocking connect).
fn occupant(path: &Path) -> Result<Occupant, std::io::Error> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Occupant::Nothing),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Ok(Occupant::Other);
    }
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
        Ok(()) | Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINPROGRESS) => {
            Ok(Occupant::Live)
        }
        Err(nix::errno::Errno::ECONNREFUSED) => Ok(Occupant::Stale),
        Err(nix::errno::Errno::ENOENT) => Ok(Occupant::Nothing),
        Err(e) => Err(e.into()),
    }
}

/// Bind the socket with mode 0600, once per daemon start. Refuses when a live
/// daemon answers on the path or something other than a socket is there; a stale
/// socket (nobody listening) is replaced. A std listener, so the daemon can bind it
/// before it starts its runtime and announces itself.
pub fn bind(path: &Path) -> Result<ControlSocket, BindError> {
    use std::os::unix::fs::MetadataExt;
    let io = |source: std::io::Error| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match occupant(path).map_err(io)? {
        Occupant::Live => return Err(BindError::InUse(path.to_path_buf())),
        Occupant::Other => return Err(BindError::NotASocket(path.to_path_buf())),
        Occupant::Stale => match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        },
        Occupant::Nothing => {}
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let l = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = match l {
        Ok(l) => l,
        // Another daemon bound it between our probe and our bind.
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(BindError::InUse(path.to_path_buf()));
        }
        Err(e) => return Err(io(e)),
    };
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    let guard = SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    Ok(ControlSocket { listener, guard })
}

/// Serve requests until the task is dropped.
pub(crate) async fn serve(
    listener: std::os::unix::net::UnixListener,
    registry: Arc<Registry>,
    host: crate::host::Host,
) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("control socket: {e}");
            return;
        }
    };
    let daemon_uid = crate::host::Privilege::current().uid();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let registry = Arc::clone(&registry);
        let host = host.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                handle(stream, registry, &host, daemon_uid),
            )
            .await;
        });
    }
}

async fn handle(
    stream: UnixStream,
    registry: Arc<Registry>,
    host: &crate::host::Host,
    daemon_uid: u32,
) -> std::io::Result<()> {
    let caller = stream.peer_cred()?.uid();
    let (read, mut write) = stream.into_split();
    // Read the request even from a caller we refuse, so the refusal is an answer
    // and not a broken pipe.
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(REQUEST_LIMIT as u64));
    reader.read_line(&mut line).await?;
    if caller != 0 && caller != daemon_uid {
        tracing::info!("control socket: refused caller uid {caller}");
        return reply(
            &mut write,
            &Response::error("permission denied: root or the daemon's user only"),
        )
        .await;
    }
    let response = match parse_request(&line) {
        Err(text) => Response::error(text),
        Ok(Command::List) => Response::ok(list(&registry, host).await),
        Ok(Command::Kill { id, reason }) => match registry.get(id) {
            None => Response::error(format!("no session {id}")),
            Some(entry) => {
                let reason = reason.unwrap_or_else(|| "session ended by the administrator".into());
                tracing::info!("control socket: uid {caller} ends session {id}: {reason}");
                let _ = entry.control.send(Control::End(Ending::Killed { reason }));
                Response::ok(Vec::new())
            }
        },
    };
    reply(&mut write, &response).await
}

/// The most a request line may be; the rest of a longer one is never read.
pub const REQUEST_LIMIT: usize = 64 * 1024;

/// Decide what one request line asks for, or the error text it is answered with.
/// Apart from the socket so that the fuzz target (fuzz/src/targets/control.rs) drives
/// exactly what the daemon does.
pub fn parse_request(line: &str) -> Result<Command, String> {
    match serde_json::from_str::<Request>(line) {
        Err(e) => Err(format!("bad request: {e}")),
        Ok(r) if r.version != VERSION => Err(format!(
            "protocol version {} not supported (daemon speaks {VERSION})",
            r.version
        )),
        Ok(r) => Ok(r.command),
    }
}

async fn reply(write: &mut tokio::net::unix::OwnedWriteHalf, r: &Response) -> std::io::Result<()> {
    let mut text = serde_json::to_string(r).map_err(std::io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

use tokio::io::AsyncReadExt as _;

/// Ask every connection at once, then wait for the answers together, so one busy
/// connection delays the listing by at most the deadline, not once per session.
/// The WHAT column comes from the host, which reads `/proc`.
async fn list(registry: &Registry, host: &crate::host::Host) -> Vec<SessionInfo> {
    let pending: Vec<_> = registry
        .entries()
        .into_iter()
        .filter_map(|entry| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            entry.control.send(Control::Query(tx)).ok()?;
            Some((entry, rx))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut rows = Vec::with_capacity(pending.len());
    let mut leaders = Vec::new();
    for (entry, rx) in pending {
        if let Ok(Ok(snap)) = tokio::time::timeout_at(deadline, rx).await {
            let (row, leader) = row(&entry, &snap);
            if let Some(pid) = leader {
                leaders.push((rows.len(), pid));
            }
            rows.push(row);
        }
    }
    let pids: Vec<i32> = leaders.iter().map(|(_, pid)| *pid).collect();
    for ((at, _), what) in leaders.iter().zip(host.commands(&pids).await) {
        rows[*at].what = what;
    }
    rows.sort_by_key(|r| (r.login, r.id));
    rows
}

/// The session's row (WHAT left empty) and its leader's pid.
fn row(entry: &Entry, snap: &Snapshot) -> (SessionInfo, Option<i32>) {
    let facts = entry.facts.lock().map(|f| f.clone()).unwrap_or_default();
    let now = Instant::now();
    let secs_until = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(now).as_secs_f64());
    let login_at = facts.login_at.unwrap_or(entry.connected_at);
    let p = &snap.policy;
    let opt = |d: Option<Duration>| {
        d.map(|d| d.as_secs().to_string())
            .unwrap_or_else(|| "none".into())
    };
    let info = SessionInfo {
        id: entry.id,
        user: facts.user.clone(),
        uid: facts.uid,
        tty: facts.tty.clone(),
        from: crate::log::display_ip(&entry.peer),
        port: entry.peer.port(),
        login: login_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        authenticated: facts.login_at.is_some(),
        idle_seconds: now.saturating_duration_since(snap.last_input).as_secs_f64(),
        limit_seconds: secs_until(snap.idle_deadline),
        warning_in_seconds: secs_until(snap.warn_at),
        probe_in_seconds: secs_until(snap.next_probe),
        unused_limit_seconds: secs_until(snap.unused_deadline),
        login_limit_seconds: secs_until(snap.login_deadline),
        what: None,
        keys: facts.keys.clone(),
        policy: vec![
            ("idletimeout".into(), opt(p.idle_timeout)),
            ("idlewarning".into(), opt(p.idle_warning)),
            (
                "idleactivity".into(),
                if p.output_is_activity {
                    "input,output"
                } else {
                    "input"
                }
                .into(),
            ),
            ("clientaliveinterval".into(), opt(p.probe_interval)),
            ("clientalivecountmax".into(), p.probe_max.to_string()),
            ("unusedconnectiontimeout".into(), opt(p.unused_timeout)),
        ],
    };
    (info, facts.leader)
}

/// Seconds since the epoch, for tests and the client.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
