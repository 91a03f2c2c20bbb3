//! Sockets that belong to the user they serve, created with the user's identity
//! (`as_user`), as sshd creates them in the user's own post-authentication
//! process:
//!
//! - TCP sockets for `-L`/`-D`/`-W` connections, `-R` listeners and the
//!   connections accepted on them. The kernel
//!   records a socket's owner from the creating thread's filesystem uid when it
//!   is created (what `ss -e` shows as `uid:`, what `iptables -m owner
//!   --uid-owner` and nft `skuid` match), so egress rules and accounting written
//!   for the user apply to their tunnels. The daemon connects `-L`/`-D`/`-W`
//!   sockets itself; a `-R` listener is bound and listening before it leaves
//!   here, bound as the user so that a privileged port is bindable only when
//!   the user could bind it (root), whatever the caller's own capabilities
//!   (the sandboxed network side has none and no `bind`/`listen` at all).
//!   Accept must run as the user too, since an accepted socket is its
//!   accepting thread's.
//! - The agent-forwarding socket, in a fresh private directory: mkdtemp and bind
//!   as the user make both the user's from birth, with no chown afterwards and no
//!   moment at which root owns a path in /tmp that the user will use.
//!
//! Plain data in, a descriptor or paths out: each call can become a request to a
//! privileged monitor that passes the descriptor back over SCM_RIGHTS.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use super::HostError;
use super::as_user::{Creds, as_user};

/// Creating a socket or a directory does not block; this only bounds a thread
/// stuck on a hung /tmp.
const DEADLINE: Duration = Duration::from_secs(10);

/// `as_user` with this module's deadline (a burst of these quick calls, a
/// browser opening twenty tunnels through `ssh -D`, queues for the user's
/// identity threads there).
async fn as_user_waiting<T, F>(creds: &Creds, f: F) -> Result<T, HostError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    as_user(creds, DEADLINE, f).await
}

/// A TCP socket (IPv6 when `ipv6`) owned by the user `creds` names:
/// non-blocking and close-on-exec from birth, neither bound nor connected.
pub(crate) async fn user_tcp_socket(creds: &Creds, ipv6: bool) -> Result<OwnedFd, HostError> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let family = if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    as_user_waiting(creds, move || {
        socket(
            family,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
    })
    .await?
    .map_err(|e| HostError::Os {
        what: "socket".into(),
        source: e,
    })
}

/// Backlog of a `-R` listener: sshd's `SSH_LISTEN_BACKLOG`.
const LISTEN_BACKLOG: i32 = 128;

/// A TCP listener owned by the user `creds` names, bound to `addr` and
/// listening, with the user's identity throughout (socket, bind, listen): the
/// kernel then decides a privileged port by the user's capabilities. Like
/// sshd's: SO_REUSEADDR, and an IPv6 socket kept to IPv6 so both families can
/// share a port. Non-blocking and close-on-exec from birth.
pub(crate) async fn user_tcp_listener(
    creds: &Creds,
    addr: SocketAddr,
) -> Result<OwnedFd, HostError> {
    as_user_waiting(creds, move || listen_on(addr))
        .await?
        .map_err(HostError::Io)
}

/// Runs as the user.
fn listen_on(addr: SocketAddr) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let socket = socket2::Socket::from(socket(family, SockType::Stream, flags, None)?);
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(OwnedFd::from(socket))
}

/// Accept up to `max` of the connections waiting on `listener` with the user's
/// identity: the kernel makes an accepted socket the accepting thread's, not the
/// listener's, so a connection to a user's `-R` port is the user's only if the
/// user accepts it (as in sshd, where the user's process does). `listener` is a
/// non-blocking TCP listener (the caller passes a duplicate it can spare); an
/// empty list means nothing was waiting. The sockets are non-blocking and
/// close-on-exec.
pub(crate) async fn user_accept(
    creds: &Creds,
    listener: OwnedFd,
    max: usize,
) -> Result<Vec<(OwnedFd, SocketAddr)>, HostError> {
    let listener = Arc::new(std::net::TcpListener::from(listener));
    as_user_waiting(creds, move || accept_some(&listener, max))
        .await?
        .map_err(HostError::Io)
}

/// A `-R` listener, watched for connections to accept: the network side holds
/// it and, when connections wait, has them accepted as the user (`Accept`).
/// Only readiness is watched here; nothing is accepted with this side's identity.
pub(crate) struct WatchedListener(AsyncFd<OwnedFd>);

impl WatchedListener {
    /// Watch `listener` (non-blocking, listening).
    pub(crate) fn new(listener: OwnedFd) -> Result<Self, HostError> {
        // SAFETY: we own `listener` outright and nothing else registers or closes it.
        let fd = unsafe { AsyncFd::register(listener) }
            .map_err(|e| HostError::Io(std::io::Error::other(e.to_string())))?;
        Ok(WatchedListener(fd))
    }

    /// The next connections, at most `max`, accepted by `accept` on a duplicate
    /// of the listener (so that a late acceptance never runs on a descriptor
    /// number reused after this listener closed).
    pub(crate) async fn next<F, Fut>(
        &self,
        max: usize,
        accept: F,
    ) -> Result<Vec<(OwnedFd, SocketAddr)>, HostError>
    where
        F: Fn(OwnedFd) -> Fut,
        Fut: Future<Output = Result<Vec<(OwnedFd, SocketAddr)>, HostError>>,
    {
        loop {
            let mut ready = self.0.readable().await?;
            let dup = ready.get_ref().get_ref().try_clone()?;
            let got = accept(dup).await?;
            if got.len() < max {
                ready.clear_ready();
            }
            if !got.is_empty() {
                return Ok(got);
            }
        }
    }
}

/// Runs as the user.
fn accept_some(
    listener: &std::net::TcpListener,
    max: usize,
) -> std::io::Result<Vec<(OwnedFd, SocketAddr)>> {
    let mut out = Vec::new();
    while out.len() < max {
        match listener.accept() {
            Ok((stream, from)) => {
                stream.set_nonblocking(true)?;
                out.push((OwnedFd::from(stream), from));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // The client gave up while waiting; the next may not have.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// The agent socket, its private directory (remove it with
/// [`remove_user_socket`]) and the bound listener.
pub(crate) struct UserSocket {
    pub(crate) dir: PathBuf,
    pub(crate) path: PathBuf,
    pub(crate) listener: std::os::unix::net::UnixListener,
}

/// Create `/tmp/ssh-XXXXXXXXXX/NAME` as the user: the directory is theirs with
/// mode 0700, the socket 0600, listening and non-blocking.
pub(crate) async fn user_socket(creds: &Creds, name: &str) -> Result<UserSocket, HostError> {
    let name = name.to_string();
    as_user_waiting(creds, move || make_socket(&name)).await?
}

/// Runs as the user.
fn make_socket(name: &str) -> Result<UserSocket, HostError> {
    let dir = nix::unistd::mkdtemp("/tmp/ssh-XXXXXXXXXX").map_err(|e| HostError::Os {
        what: "mkdtemp".into(),
        source: e,
    })?;
    let path = dir.join(name);
    let made = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok::<_, std::io::Error>(listener)
    })();
    match made {
        Ok(listener) => Ok(UserSocket {
            dir,
            path,
            listener,
        }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(HostError::Io(e))
        }
    }
}

/// Remove the agent socket's directory as the user who owns it (as sshd's
/// cleanup does), so nothing the user put there is removed with root's rights.
pub(crate) async fn remove_user_socket(creds: &Creds, dir: PathBuf) -> Result<(), HostError> {
    as_user_waiting(creds, move || std::fs::remove_dir_all(&dir))
        .await?
        .map_err(HostError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn me() -> Creds {
        Creds {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            gids: vec![],
        }
    }

    /// The socket's owner as the kernel records it, from /proc/net/tcp{,6}'s
    /// uid column, by the socket's inode.
    fn kernel_uid(fd: &OwnedFd) -> Option<u32> {
        let inode = std::fs::metadata(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(fd)
        ))
        .ok()?
        .ino();
        ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|t| {
            std::fs::read_to_string(t)
                .ok()?
                .lines()
                .skip(1)
                .find_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.get(9)?.parse::<u64>().ok()? == inode).then(|| f.get(7)?.parse().ok())?
                })
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_sockets_belong_to_the_user() {
        let creds = if nix::unistd::geteuid().is_root() {
            Creds {
                uid: 65534,
                gid: 65534,
                gids: vec![65534],
            }
        } else {
            me()
        };
        for ipv6 in [false, true] {
            let fd = match user_tcp_socket(&creds, ipv6).await {
                Ok(fd) => fd,
                Err(e) if ipv6 => {
                    eprintln!("no IPv6 here: {e}");
                    continue;
                }
                Err(e) => panic!("{e}"),
            };
            let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
            assert!(flags & libc::FD_CLOEXEC != 0, "close-on-exec from birth");
            let fl = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
            assert!(fl & libc::O_NONBLOCK != 0, "non-blocking");
            // An unbound socket is listed once it listens; bind as the daemon.
            let s = socket2::Socket::from(fd);
            let any: std::net::SocketAddr = if ipv6 { "[::1]:0" } else { "127.0.0.1:0" }
                .parse()
                .unwrap();
            s.bind(&any.into()).unwrap();
            s.listen(1).unwrap();
            let fd = OwnedFd::from(s);
            assert_eq!(kernel_uid(&fd), Some(creds.uid));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listeners_are_bound_as_the_user() {
        if !nix::unistd::geteuid().is_root() {
            crate::testing::skip("binding as another user needs root");
            return;
        }
        let nobody = Creds {
            uid: 65534,
            gid: 65534,
            gids: vec![65534],
        };
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let fd = user_tcp_listener(&nobody, any).await.unwrap();
        assert_eq!(kernel_uid(&fd), Some(nobody.uid));
        // A privileged port: the kernel asks the binding thread, the user's.
        let unprivileged: u32 =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(1024);
        if unprivileged > 1 {
            let low: SocketAddr = format!("127.0.0.1:{}", unprivileged - 1).parse().unwrap();
            match user_tcp_listener(&nobody, low).await {
                Err(HostError::Io(e)) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn agent_socket_is_made_by_the_user_and_removed() {
        let made = user_socket(&me(), "agent.test").await.unwrap();
        let dir = std::fs::metadata(&made.dir).unwrap();
        assert_eq!(dir.mode() & 0o777, 0o700);
        assert_eq!(dir.uid(), me().uid);
        let sock = std::fs::symlink_metadata(&made.path).unwrap();
        assert_eq!(sock.mode() & 0o777, 0o600);
        remove_user_socket(&me(), made.dir.clone()).await.unwrap();
        assert!(!made.dir.exists());
    }
}
