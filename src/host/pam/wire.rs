//! The session helper's control socket on the wire: a Unix stream socket
//! carrying length-prefixed JSON frames, with the descriptors a frame needs
//! (a program's terminal or pipes) passed by SCM_RIGHTS in the same `sendmsg`
//! as the frame's first bytes.
//!
//! A stream, not datagrams: a start request carries the program's whole
//! environment (up to `limits::ENV_MAX_BYTES` of the client's variables alone),
//! more than one AF_UNIX datagram may hold (`wmem_default`, 208 KiB). The
//! kernel never merges data sent with descriptors into a read with other
//! descriptors, and delivers the descriptors no later than the frame's first
//! byte, so the reader keeps received descriptors in order and hands them to
//! the frame that asks for them.

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::unix::AsyncFd;

use crate::host::HostError;

/// The largest frame either side accepts (a start request with a big environment
/// is a few hundred KiB).
const FRAME_MAX: usize = 16 << 20;
/// Descriptors one frame carries at most (a program's stdin, stdout and stderr).
const FDS_MAX: usize = 3;

fn io_err(e: nix::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// Both ends of the socket, non-blocking, on the current runtime.
pub(crate) fn split(socket: OwnedFd) -> Result<(Reader, Writer), HostError> {
    let flags =
        nix::fcntl::fcntl(&socket, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| HostError::Os {
            what: "fcntl".into(),
            source: e,
        })?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&socket, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(|e| {
        HostError::Os {
            what: "fcntl".into(),
            source: e,
        }
    })?;
    // SAFETY: the AsyncFd owns the socket outright and deregisters it before
    // closing it.
    let fd = Arc::new(
        unsafe { AsyncFd::register(socket) }
            .map_err(|e| HostError::Io(std::io::Error::other(e.to_string())))?,
    );
    Ok((
        Reader {
            fd: Arc::clone(&fd),
            buf: Vec::new(),
            fds: VecDeque::new(),
        },
        Writer { fd },
    ))
}

/// Reads frames, keeping the descriptors that came with them.
pub(crate) struct Reader {
    fd: Arc<AsyncFd<OwnedFd>>,
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl Reader {
    /// The next frame; `None` at the end of the stream or on a frame that does
    /// not parse (the peer is then not one we can talk to).
    pub(crate) async fn next<T: DeserializeOwned>(&mut self) -> Option<T> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if len > FRAME_MAX {
                    return None;
                }
                if self.buf.len() >= 4 + len {
                    let frame: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
                    return serde_json::from_slice(&frame).ok();
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The `n` oldest descriptors received and not yet taken.
    pub(crate) fn take_fds(&mut self, n: usize) -> Option<Vec<OwnedFd>> {
        if self.fds.len() < n {
            return None;
        }
        Some(self.fds.drain(..n).collect())
    }

    /// Read what is there; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = vec![0u8; 64 * 1024];
        let mut cmsg = nix::cmsg_space!([RawFd; FDS_MAX]);
        loop {
            let Ok(mut ready) = self.fd.readable().await else {
                return false;
            };
            let got = ready.try_io(|inner| {
                let mut iov = [IoSliceMut::new(&mut chunk)];
                let msg = recvmsg::<()>(
                    inner.get_ref().as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
                )
                .map_err(io_err)?;
                let mut fds = Vec::new();
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(list) = c {
                            // SAFETY: the kernel just installed these descriptors
                            // in this process for us; nothing else owns them.
                            fds.extend(
                                list.into_iter()
                                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                            );
                        }
                    }
                }
                Ok((msg.bytes, fds))
            });
            match got {
                Ok(Ok((0, _))) => return false,
                Ok(Ok((n, fds))) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.fds.extend(fds);
                    return true;
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => return false,
                Err(_would_block) => {}
            }
        }
    }
}

/// Writes frames; one writer at a time (each side has a task for it).
pub(crate) struct Writer {
    fd: Arc<AsyncFd<OwnedFd>>,
}

impl Writer {
    /// Send `msg` whole, with `fds` attached to its first bytes.
    pub(crate) async fn send<T: Serialize>(&self, msg: &T, fds: &[RawFd]) -> std::io::Result<()> {
        let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
        if body.len() > FRAME_MAX || fds.len() > FDS_MAX {
            return Err(std::io::Error::other("frame too large"));
        }
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        let mut sent = 0;
        while sent < frame.len() {
            let mut ready = self.fd.writable().await?;
            let rights = [ControlMessage::ScmRights(fds)];
            // The descriptors go with the first bytes that leave, and only then.
            let cmsgs: &[ControlMessage] = if sent == 0 && !fds.is_empty() {
                &rights
            } else {
                &[]
            };
            let r = ready.try_io(|inner| {
                sendmsg::<()>(
                    inner.get_ref().as_raw_fd(),
                    &[IoSlice::new(&frame[sent..])],
                    cmsgs,
                    MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                    None,
                )
                .map_err(io_err)
            });
            match r {
                Ok(Ok(n)) => sent += n,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    /// No more frames: the peer reads the end of the stream after the last one.
    pub(crate) fn shutdown(&self) {
        let _ = nix::sys::socket::shutdown(
            self.fd.get_ref().as_raw_fd(),
            nix::sys::socket::Shutdown::Write,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Msg {
        n: u32,
        text: String,
    }

    /// Frames of any size arrive whole and in order, each with its descriptors.
    #[tokio::test]
    async fn frames_and_descriptors_arrive_together() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (_, writer) = split(OwnedFd::from(a)).unwrap();
        let (mut reader, _w) = split(OwnedFd::from(b)).unwrap();
        let big = "x".repeat(3 << 20);
        let sender = tokio::spawn(async move {
            for n in 0..3u32 {
                let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
                nix::unistd::write(&w, format!("pipe {n}").as_bytes()).unwrap();
                drop(w);
                let text = if n == 1 { big.clone() } else { format!("m{n}") };
                writer
                    .send(&Msg { n, text }, &[r.as_raw_fd()])
                    .await
                    .unwrap();
            }
            writer.shutdown();
        });
        for n in 0..3u32 {
            let m: Msg = reader.next().await.unwrap();
            assert_eq!(m.n, n);
            assert_eq!(m.text.len(), if n == 1 { 3 << 20 } else { 2 });
            let fd = reader.take_fds(1).unwrap().pop().unwrap();
            let mut s = String::new();
            std::fs::File::from(fd).read_to_string(&mut s).unwrap();
            assert_eq!(s, format!("pipe {n}"));
        }
        assert!(reader.next::<Msg>().await.is_none());
        sender.await.unwrap();
    }
}
