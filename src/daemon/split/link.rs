//! The monitor <-> network process socket before the host protocol
//! (`host::wire`) takes it over: a SOCK_SEQPACKET pair (one message per
//! datagram), close-on-exec, on which the monitor's first datagram
//! is the [`super::Hello`] (JSON). After it, only the wire protocol's frames
//! travel on it, so the hello needs no frame kind of its own and is not bound by
//! the frame cap.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, recv, send};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest hello (a datagram must fit the socket's send buffer, about
/// 208 KiB by default). The configuration does not count: it travels in a
/// memfd ([`to_memfd`]), so the hello is a few hundred bytes.
pub(crate) const MAX_HELLO: usize = 192 * 1024;

/// The largest configuration the network process reads from a memfd: far
/// beyond any sshd_config (with its Includes), and a bound on a bad one.
pub(crate) const MAX_CONFIG: usize = 64 << 20;

/// `value` as JSON in a new memfd (close-on-exec), for the network process:
/// the configuration at start and at each reload, of any size.
pub(crate) fn to_memfd<T: Serialize>(value: &T) -> io::Result<OwnedFd> {
    use std::io::Write;
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    if bytes.len() > MAX_CONFIG {
        return Err(io::Error::other(format!(
            "the configuration is {} bytes, over the limit of {MAX_CONFIG} for the network process",
            bytes.len()
        )));
    }
    let fd =
        nix::sys::memfd::memfd_create(c"rsshd-config", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&bytes)?;
    Ok(OwnedFd::from(file))
}

/// What [`to_memfd`] wrote. Read by offset from the start (the writer left the
/// shared file offset at the end), with pread alone: the confined network
/// process reads a reload's this way.
pub(crate) fn from_memfd<T: DeserializeOwned>(fd: &OwnedFd) -> io::Result<T> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(fd.try_clone()?);
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read_at(&mut chunk, bytes.len() as u64) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if bytes.len() > MAX_CONFIG {
            return Err(io::Error::other("configuration over the limit"));
        }
    }
    serde_json::from_slice(&bytes).map_err(|e| io::Error::other(format!("bad configuration: {e}")))
}

/// A connected pair: the monitor's end and the network process's (the wire
/// protocol's, non-blocking; the hello is waited for with poll).
pub(crate) fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    crate::host::wire::pair()
}

/// Send one message (the monitor, once, right after the start).
pub(crate) fn send_blocking<T: Serialize>(fd: &OwnedFd, msg: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if bytes.len() > MAX_HELLO {
        return Err(io::Error::other(format!(
            "the configuration is {} bytes, over the limit of {MAX_HELLO} for the network process",
            bytes.len()
        )));
    }
    loop {
        match send(fd.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receive one message (the network process, before it has a runtime); `None`
/// when the other end is closed.
pub(crate) fn recv_blocking<T: DeserializeOwned>(fd: &OwnedFd) -> io::Result<Option<T>> {
    let mut buf = vec![0u8; MAX_HELLO + 1];
    loop {
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC) {
            Ok(0) => return Ok(None),
            Ok(n) if n > MAX_HELLO => return Err(io::Error::other("hello over the limit")),
            Ok(n) => {
                return serde_json::from_slice(&buf[..n])
                    .map(Some)
                    .map_err(|e| io::Error::other(format!("bad hello: {e}")));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}
