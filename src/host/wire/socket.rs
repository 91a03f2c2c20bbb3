//! The socket under the protocol: one end of a `SOCK_SEQPACKET` socketpair,
//! non-blocking, driven by tokio's [`AsyncFd`]; frames out with `sendmsg`,
//! frames in with `recvmsg` and `MSG_CMSG_CLOEXEC`, descriptors as `SCM_RIGHTS`.
//! Only `sendmsg`, `recvmsg`, `fcntl(F_GETFL/F_SETFL)` and `getsockopt` are used
//! on it, all allowed by the network process's seccomp filter (sandbox/filter.rs).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, getsockopt,
    recvmsg, sendmsg, socketpair, sockopt,
};
use tokio::io::unix::AsyncFd;

use super::{FRAME_CAP, Frame, MAX_ANSWER_FDS, ProtocolError, decode, encode};

/// The kernel's limit of descriptors in one message (`SCM_MAX_FD`). The control
/// buffer has room for that many, so it is never cut short (`MSG_CTRUNC`, which
/// would leave the descriptors that did arrive unnamed and so unclosable); a
/// frame with more than its kind may carry is refused after they are all
/// received and closed.
const SCM_MAX_FD: usize = 253;

/// A connected pair for the protocol, both ends close-on-exec (the process split
/// clears it on the one it hands to the network process).
pub(crate) fn pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?)
}

/// Why reading or writing a frame failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
}

/// One end of the socketpair.
pub(crate) struct Link {
    fd: AsyncFd<OwnedFd>,
}

impl Link {
    /// Take over `fd`, which must be a `SOCK_SEQPACKET` socket (an inherited
    /// descriptor is checked rather than trusted). Needs a tokio runtime.
    pub(crate) fn new(fd: OwnedFd) -> std::io::Result<Link> {
        let ty = getsockopt(&fd, sockopt::SockType)?;
        if ty != SockType::SeqPacket {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the monitor link must be a SOCK_SEQPACKET socket",
            ));
        }
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: an OwnedFd's number stays open and names the same socket until
        // the OwnedFd is dropped, which happens only with the AsyncFd.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)?;
        Ok(Link { fd })
    }

    /// Send `frame` with `fds` as one datagram.
    pub(crate) async fn send(&self, frame: &Frame, fds: &[OwnedFd]) -> Result<(), LinkError> {
        let bytes = encode(frame)?;
        if fds.len() != frame.fds() {
            return Err(ProtocolError::FdCount {
                said: frame.fds(),
                got: fds.len(),
            }
            .into());
        }
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_fd().as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
        loop {
            let mut guard = self.fd.writable().await?;
            let sent = guard.try_io(|inner| {
                let iov = [IoSlice::new(&bytes)];
                // MSG_NOSIGNAL: a peer gone is an EPIPE here, not a SIGPIPE for
                // the whole process.
                sendmsg::<()>(inner.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
                    .map_err(std::io::Error::from)
            });
            match sent {
                // A datagram goes whole or not at all.
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => continue,
            }
        }
    }

    /// End the link both ways now, whoever else still holds it (a notifier, a
    /// call still being served): the peer reads end of stream, later sends here
    /// fail.
    pub(crate) fn shut_down(&self) {
        let _ = nix::sys::socket::shutdown(
            self.fd.get_ref().as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        );
    }

    /// The next frame and its descriptors; `None` once the peer has closed its
    /// end. `buf` is the reader's (reused) buffer.
    pub(crate) async fn recv(
        &self,
        buf: &mut Vec<u8>,
    ) -> Result<Option<(Frame, Vec<OwnedFd>)>, LinkError> {
        // One byte more than the cap, so an oversize frame shows as such even
        // where the kernel does not set MSG_TRUNC.
        buf.resize(FRAME_CAP + 1, 0);
        let (len, fds, flags) = loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| receive(inner.as_raw_fd(), buf)) {
                Ok(r) => break r?,
                Err(_would_block) => continue,
            }
        };
        if flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(ProtocolError::FdsTruncated.into());
        }
        if flags.contains(MsgFlags::MSG_TRUNC) || len > FRAME_CAP {
            return Err(ProtocolError::Oversize.into());
        }
        if len == 0 && fds.is_empty() {
            // End of stream (an empty datagram reads the same; no frame is empty).
            return Ok(None);
        }
        if fds.len() > MAX_ANSWER_FDS {
            return Err(ProtocolError::TooManyFds {
                got: fds.len(),
                max: MAX_ANSWER_FDS,
            }
            .into());
        }
        let frame = decode(&buf[..len], fds.len())?;
        Ok(Some((frame, fds)))
    }
}

/// One `recvmsg`: the datagram's length, its descriptors (owned from here on,
/// close-on-exec from birth) and the message flags.
fn receive(fd: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>, MsgFlags)> {
    let mut cmsg = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    // cmsgs() refuses only when MSG_CTRUNC is set, which the buffer's size rules
    // out (see SCM_MAX_FD); the caller refuses the frame on that flag anyway.
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for r in raw {
                    // SAFETY: the kernel has just installed `r` in this process's
                    // descriptor table for this message; nothing else knows the
                    // number, so this is its only owner and it is closed once.
                    fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                }
            }
        }
    }
    Ok((msg.bytes, fds, msg.flags))
}
