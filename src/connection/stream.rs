//! The client connection as russh sees it, stamping every read so that liveness
//! ("did the client send anything?") costs one atomic store per read, and able to be
//! cut from outside while russh's task owns it.
//!
//! A connection is normally an accepted TCP socket. In inetd mode (`-i`) it is
//! whatever the launcher put on standard input and output: the same socket on both
//! (systemd `Accept=yes`, inetd), or two pipes (`ProxyCommand rsshd -i`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;
use tokio::net::{TcpStream, UnixStream};

use super::banner::{self, Verdict, Watch};
use crate::lifetime::Stamp;

/// What carries one SSH connection.
pub(crate) enum Transport {
    Tcp(TcpStream),
    /// Separate descriptors to read from and write to (pipes, or a socket that is
    /// not an internet one): no socket options and no shutdown apply.
    Fds(FdPair),
}

impl From<TcpStream> for Transport {
    fn from(s: TcpStream) -> Self {
        Transport::Tcp(s)
    }
}

impl From<FdPair> for Transport {
    fn from(p: FdPair) -> Self {
        Transport::Fds(p)
    }
}

impl Transport {
    /// Small packets (keystrokes) leave at once; a no-op without a TCP socket.
    pub(crate) fn set_nodelay(&self) {
        if let Transport::Tcp(s) = self {
            let _ = s.set_nodelay(true);
        }
    }
}

/// A read descriptor and a write descriptor: pipes or (non-internet) stream
/// sockets, driven by tokio's reactor; anything else (a terminal, a file) through
/// tokio's blocking-thread file I/O, as sshd reads and writes whatever it is given.
pub(crate) struct FdPair {
    read: ReadHalf,
    write: WriteHalf,
}

enum ReadHalf {
    Pipe(pipe::Receiver),
    Socket(UnixStream),
    File(tokio::fs::File),
}

enum WriteHalf {
    Pipe(pipe::Sender),
    Socket(UnixStream),
    File(tokio::fs::File),
}

/// What a descriptor is, for [`FdPair::new`].
fn kind(fd: &OwnedFd) -> io::Result<nix::sys::stat::SFlag> {
    let st = nix::sys::stat::fstat(fd)?;
    Ok(nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT)
}

impl FdPair {
    /// Takes both descriptors (pipes and sockets are made non-blocking). Needs a
    /// tokio runtime.
    pub(crate) fn new(read: OwnedFd, write: OwnedFd) -> io::Result<Self> {
        use nix::sys::stat::SFlag;
        let read = match kind(&read)? {
            SFlag::S_IFIFO => ReadHalf::Pipe(pipe::Receiver::from_owned_fd(read)?),
            SFlag::S_IFSOCK => ReadHalf::Socket(unix_stream(read)?),
            _ => ReadHalf::File(tokio::fs::File::from_std(read.into())),
        };
        let write = match kind(&write)? {
            SFlag::S_IFIFO => WriteHalf::Pipe(pipe::Sender::from_owned_fd(write)?),
            SFlag::S_IFSOCK => WriteHalf::Socket(unix_stream(write)?),
            _ => WriteHalf::File(tokio::fs::File::from_std(write.into())),
        };
        Ok(FdPair { read, write })
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.read {
            ReadHalf::Pipe(p) => Pin::new(p).poll_read(cx, buf),
            ReadHalf::Socket(s) => Pin::new(s).poll_read(cx, buf),
            ReadHalf::File(f) => Pin::new(f).poll_read(cx, buf),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.write {
            WriteHalf::Pipe(p) => Pin::new(p).poll_write(cx, data),
            WriteHalf::Socket(s) => Pin::new(s).poll_write(cx, data),
            WriteHalf::File(f) => Pin::new(f).poll_write(cx, data),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.write {
            WriteHalf::Pipe(p) => Pin::new(p).poll_flush(cx),
            WriteHalf::Socket(s) => Pin::new(s).poll_flush(cx),
            // tokio's file buffers one write on a blocking thread; flushing waits
            // for it.
            WriteHalf::File(f) => Pin::new(f).poll_flush(cx),
        }
    }
}

/// Any stream socket works through tokio's Unix stream type: it only reads and
/// writes (a socketpair, or an AF_UNIX socket from systemd `Accept=yes`).
fn unix_stream(fd: OwnedFd) -> io::Result<UnixStream> {
    let s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(true)?;
    UnixStream::from_std(s)
}

pub(crate) struct StampedStream {
    inner: Transport,
    received: Arc<Stamp>,
    cutter: Arc<Cutter>,
    /// Before login: the pre-auth work gate (see `gate`).
    gate: Option<super::gate::Waiter>,
    /// The client's identification line until it is judged (see [`banner`]).
    banner: Option<Watch>,
    /// Bytes of [`banner::REPLY`] written, once the client's line was refused;
    /// reads then end the stream, so russh ends the connection.
    refusing: Option<usize>,
}

impl StampedStream {
    /// The stream and the means to shut it down from another task.
    pub(crate) fn new(inner: Transport, received: Arc<Stamp>) -> (Self, Arc<Cutter>) {
        let fd = match &inner {
            Transport::Tcp(s) => Some(s.as_raw_fd()),
            Transport::Fds(_) => None,
        };
        let cutter = Arc::new(Cutter {
            fd: Mutex::new(fd),
            refused: AtomicU32::new(0),
        });
        let stream = StampedStream {
            inner,
            received,
            cutter: Arc::clone(&cutter),
            gate: None,
            banner: Some(Watch::default()),
            refusing: None,
        };
        (stream, cutter)
    }

    /// Hold this connection to the pre-auth work gate until its ticket opens.
    pub(crate) fn gated(mut self, waiter: super::gate::Waiter) -> Self {
        self.gate = Some(waiter);
        self
    }

    /// Write sshd's answer to a client version we do not speak, then read as
    /// end-of-file.
    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(done) = self.refusing.filter(|d| *d < banner::REPLY.len()) {
            let rest = &banner::REPLY[done..];
            let r = self.inner.poll_write(cx, rest);
            let n = match r {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) if n > 0 => n,
                // The client is gone: nothing more to tell it.
                Poll::Ready(_) => rest.len(),
            };
            self.refusing = Some(done + n);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for StampedStream {
    /// Runs before the socket closes, so the cutter never shuts down a descriptor
    /// number that a newer connection has been given.
    fn drop(&mut self) {
        if let Ok(mut fd) = self.cutter.fd.lock() {
            *fd = None;
        }
    }
}

/// Shuts the socket down even while russh is blocked writing to a client that
/// stopped reading. It borrows the descriptor instead of holding a duplicate, so a
/// connection costs one descriptor, not two: at 10,000 connections that is the
/// difference between fitting under a 20,000 limit and not.
///
/// Pipes cannot be shut down; an inetd-mode connection on pipes ends when its
/// process exits, right after the connection task returns.
pub(crate) struct Cutter {
    /// The stream's socket while the stream exists. The lock is taken only
    /// when cutting and when the stream is dropped, never per packet.
    fd: Mutex<Option<RawFd>>,
    /// The protocol major version of a client the stream refused before russh
    /// saw its identification (0: none), for the connection's log.
    refused: AtomicU32,
}

impl Cutter {
    /// The major version the client announced if it was refused (see [`banner`]).
    pub(crate) fn refused_version(&self) -> Option<u32> {
        Some(self.refused.load(Ordering::Relaxed)).filter(|m| *m != 0)
    }

    pub(crate) fn cut(&self) {
        if let Ok(fd) = self.fd.lock()
            && let Some(fd) = *fd
        {
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        }
    }
}

impl Transport {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Fds(p) => p.poll_read(cx, buf),
        }
    }

    /// Ready when a read would not wait. Descriptors other than a TCP socket
    /// (inetd mode: one connection per process) count as always ready.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Tcp(s) => s.poll_read_ready(cx),
            Transport::Fds(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Fds(p) => p.poll_write(cx, buf),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Fds(p) => p.poll_flush(cx),
        }
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            // Flush; the peer sees end-of-file when the process exits and the
            // descriptors close.
            Transport::Fds(p) => p.poll_flush(cx),
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self {
            Transport::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Fds(p) => {
                // One slice at a time; the pipe path is a single connection.
                let first = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &**b);
                p.poll_write(cx, first)
            }
        }
    }
}

impl AsyncRead for StampedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(g) = this.gate.as_mut().filter(|g| g.ticket().gated()) {
            // russh is back for more: its work on what it had is done. Take a
            // permit only once there is something to work on.
            g.ticket().release();
            std::task::ready!(this.inner.poll_read_ready(cx))?;
            std::task::ready!(g.poll_enter(cx));
        }
        if this.refusing.is_some() {
            return this.poll_refuse(cx);
        }
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.received.touch();
                if let Some(watch) = &mut this.banner {
                    match watch.feed(&buf.filled()[before..]) {
                        Verdict::Reading => {}
                        Verdict::Pass => this.banner = None,
                        Verdict::Refuse(major) => {
                            // russh never sees the line: to it the client hung up.
                            this.banner = None;
                            buf.set_filled(before);
                            this.cutter.refused.store(major, Ordering::Relaxed);
                            this.refusing = Some(0);
                            return this.poll_refuse(cx);
                        }
                    }
                }
            }
            Poll::Pending => this.release_gate(),
            _ => {}
        }
        r
    }
}

impl StampedStream {
    /// Waiting on the client is not work: let another connection have the permit.
    fn release_gate(&self) {
        if let Some(g) = &self.gate {
            g.ticket().release();
        }
    }

    /// Pending means waiting on the client: give up the gate's permit meanwhile.
    fn released<T>(&self, r: Poll<T>) -> Poll<T> {
        if r.is_pending() {
            self.release_gate();
        }
        r
    }
}

impl AsyncWrite for StampedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = this.inner.poll_write(cx, buf);
        this.released(r)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = this.inner.poll_flush(cx);
        this.released(r)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = this.inner.poll_shutdown(cx);
        this.released(r)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = this.inner.poll_write_vectored(cx, bufs);
        this.released(r)
    }
    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Transport::Tcp(s) => s.is_write_vectored(),
            Transport::Fds(_) => false,
        }
    }
}
