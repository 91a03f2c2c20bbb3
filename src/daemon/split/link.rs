//! The monitor <-> network process socket: SOCK_SEQPACKET (one message per
//! datagram, so no framing), close-on-exec, JSON messages. The wire codec of
//! the host's request table (contract 5) runs over the same socket; this type
//! is the one place that knows the socket.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The largest message (a datagram must fit the socket's send buffer, about
/// 208 KiB by default).
pub(crate) const MAX_MESSAGE: usize = 192 * 1024;

/// One end of the link.
pub(crate) struct Link {
    fd: AsyncFd<OwnedFd>,
}

/// A connected pair: the monitor's end and the network process's.
pub(crate) fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

fn encode<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(io::Error::other(format!(
            "message of {} bytes is over the link's limit of {MAX_MESSAGE}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    serde_json::from_slice(bytes).map_err(|e| io::Error::other(format!("bad message: {e}")))
}

/// Receive one message on a blocking socket (the network process, before it
/// has a runtime); `None` when the other end is closed.
pub(crate) fn recv_blocking<T: DeserializeOwned>(fd: &OwnedFd) -> io::Result<Option<T>> {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    loop {
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC) {
            Ok(0) => return Ok(None),
            Ok(n) if n > MAX_MESSAGE => return Err(io::Error::other("message over the limit")),
            Ok(n) => return decode(&buf[..n]).map(Some),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

impl Link {
    /// Take one end for async use (it becomes non-blocking).
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Link> {
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(Link {
            fd: crate::host::netproc::async_fd(fd)?,
        })
    }

    pub(crate) async fn send<T: Serialize>(&self, msg: &T) -> io::Result<()> {
        let bytes = encode(msg)?;
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                send(fd.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL)
                    .map(|_| ())
                    .map_err(io::Error::from)
            })
            .await
    }

    /// The next message; `None` once the other end is closed.
    pub(crate) async fn recv<T: DeserializeOwned>(&self) -> io::Result<Option<T>> {
        let mut buf = vec![0u8; MAX_MESSAGE + 1];
        let n = self
            .fd
            .async_io(Interest::READABLE, |fd| {
                recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC).map_err(io::Error::from)
            })
            .await?;
        if n == 0 {
            return Ok(None);
        }
        if n > MAX_MESSAGE {
            return Err(io::Error::other("message over the limit"));
        }
        decode(&buf[..n]).map(Some)
    }
}
