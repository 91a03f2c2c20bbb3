//! The client socket as russh sees it, stamping every read so that liveness ("did
//! the client send anything?") costs one atomic store per read, and able to be cut
//! from outside while russh's task owns it.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::lifetime::Stamp;

pub struct StampedStream {
    inner: TcpStream,
    received: Arc<Stamp>,
    cutter: Arc<Cutter>,
    /// Before login: the pre-auth work gate (see `gate`).
    gate: Option<super::gate::Waiter>,
}

impl StampedStream {
    /// The stream and the means to shut it down from another task.
    pub fn new(inner: TcpStream, received: Arc<Stamp>) -> (Self, Arc<Cutter>) {
        let cutter = Arc::new(Cutter {
            fd: Mutex::new(Some(inner.as_raw_fd())),
        });
        let stream = StampedStream {
            inner,
            received,
            cutter: Arc::clone(&cutter),
            gate: None,
        };
        (stream, cutter)
    }

    /// Hold this connection to the pre-auth work gate until its ticket opens.
    pub fn gated(mut self, waiter: super::gate::Waiter) -> Self {
        self.gate = Some(waiter);
        self
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
pub struct Cutter {
    /// The stream's descriptor while the stream exists. The lock is taken only
    /// when cutting and when the stream is dropped, never per packet.
    fd: Mutex<Option<RawFd>>,
}

impl Cutter {
    pub fn cut(&self) {
        if let Ok(fd) = self.fd.lock()
            && let Some(fd) = *fd
        {
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
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
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.received.touch(),
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
}

impl AsyncWrite for StampedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if r.is_pending() {
            this.release_gate();
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        if r.is_pending() {
            this.release_gate();
        }
        r
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        if r.is_pending() {
            this.release_gate();
        }
        r
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if r.is_pending() {
            this.release_gate();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
