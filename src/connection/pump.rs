//! Moving bytes between a channel and a process or socket, shared by session
//! channels and tunnels; and the tables through which a forwarded channel (tunnel,
//! `-R` connection, agent connection) is known to its connection while it runs.
//!
//! Flow control is the one session channels use (see [`super::inflow`]): russh's
//! loop must never wait on a slow socket, or the data flowing the other way through
//! the same connection stops too, and an echoing peer deadlocks. So client data is
//! always taken at once into the channel's queue, and the channel's window re-opens
//! as the socket takes the data. Data towards the client goes through a fixed
//! buffer and russh's window-aware writer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use russh::server::{Handle, Msg};
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ConnShared;
use super::channels::Retired;
use super::flow::ConnQueue;
use super::inflow::{ChannelWindow, Inflow, Input};
use super::limits::{ChannelSlot, ChannelSlots, FdLease, Notices};
use crate::lifetime::ChannelStamps;

/// Input queues of the connection's forwarded channels, for the handler's window
/// check.
type Inflows = Arc<Mutex<HashMap<ChannelId, Arc<Inflow>>>>;

/// What a forwarded channel's task needs from its connection.
#[derive(Clone)]
pub struct Tunnels {
    shared: Arc<ConnShared>,
    inflows: Inflows,
    /// Every channel's backlog also counts here.
    pub(crate) conn: Arc<ConnQueue>,
    /// The connection's open channels, sessions included.
    pub(crate) slots: ChannelSlots,
    /// Which refusals were logged already.
    pub(crate) notices: Notices,
    /// The client's address, for log lines.
    pub(crate) peer: SocketAddr,
}

impl Tunnels {
    pub(crate) fn new(shared: Arc<ConnShared>, peer: SocketAddr) -> Self {
        Tunnels {
            shared,
            inflows: Arc::default(),
            conn: Arc::default(),
            slots: ChannelSlots::default(),
            notices: Notices::default(),
            peer,
        }
    }

    /// Bytes a forwarded channel's consumer has had given back to the client as
    /// window, for the handler's window check.
    pub(crate) fn released(&self, id: ChannelId) -> Option<u64> {
        let inflows = self.inflows.lock().ok()?;
        inflows.get(&id).map(|f| f.released())
    }

    /// Announce a confirmed channel to the lifetime engine (so `ChannelTimeout`
    /// applies and it can be closed by number), enter it in the connection's
    /// table (which takes its place among the channels) and give it an input
    /// queue, whose consumption `handle` reports to russh.
    pub(crate) fn register(
        &self,
        id: ChannelId,
        kind: &str,
        hold: Hold,
        handle: Handle,
    ) -> Registration {
        let n = u32::from(id);
        let stamps = self.shared.events.channel_opened(n, kind);
        let Hold { slot, fds } = hold;
        let retired = self.shared.channels.open(id, false, slot);
        let inflow = Arc::new(Inflow::new(
            ChannelWindow { handle, id },
            Arc::clone(&self.conn),
        ));
        if let Ok(mut f) = self.inflows.lock() {
            f.insert(id, Arc::clone(&inflow));
        }
        Registration {
            id,
            inflows: Arc::clone(&self.inflows),
            shared: Arc::clone(&self.shared),
            retired: Some(retired),
            stamps,
            inflow,
            _fds: fds,
        }
    }

    /// Pump an accepted socket through a channel the server opens (forwarded-tcpip
    /// or agent), once the client confirms it.
    pub(crate) async fn serve_opened<S>(
        &self,
        opened: Result<Channel<Msg>, russh::Error>,
        handle: Handle,
        kind: &str,
        stream: S,
        hold: Hold,
    ) where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        match opened {
            Ok(channel) => {
                let reg = self.register(channel.id(), kind, hold, handle);
                pump(channel, stream, reg).await;
            }
            Err(e) => tracing::debug!("{kind} channel not opened: {e}"),
        }
    }
}

/// What a forwarded channel holds for as long as it runs: its place among the
/// connection's channels and its socket's share of the user's descriptors.
pub(crate) struct Hold {
    slot: ChannelSlot,
    fds: FdLease,
}

impl Hold {
    pub(crate) fn new(slot: ChannelSlot, fds: FdLease) -> Self {
        Hold { slot, fds }
    }
}

/// A forwarded channel's entry in the connection's tables, withdrawn when its pump
/// ends: the channel is retired then, whichever side closed it (see
/// [`super::channels`]).
pub(crate) struct Registration {
    id: ChannelId,
    inflows: Inflows,
    shared: Arc<ConnShared>,
    /// Fulfilled if the channel is retired while the pump runs (ChannelTimeout).
    retired: Option<Retired>,
    stamps: Arc<ChannelStamps>,
    inflow: Arc<Inflow>,
    _fds: FdLease,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut f) = self.inflows.lock() {
            f.remove(&self.id);
        }
        self.shared.retire(u32::from(self.id));
    }
}

/// Copy between a channel and a socket until both sides sent EOF, either side
/// fails, the client closes the channel, or the channel is retired (both drop
/// the socket).
pub(crate) async fn pump<S>(channel: Channel<Msg>, stream: S, mut reg: Registration)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut read, write) = channel.split();
    let (sock_read, sock_write) = tokio::io::split(stream);
    // Never blocks on the socket: see the module docs.
    let drain = from_client(&mut read, &reg.inflow, &reg.stamps);
    let copy = async {
        tokio::try_join!(
            to_socket(&reg.inflow, sock_write),
            socket_to_client(sock_read, write.make_writer(), &reg.stamps),
        )
    };
    let retired = reg.retired.take();
    tokio::select! {
        _ = drain => {}
        _ = copy => {
            let _ = write.close().await;
        }
        // Closed by the lifetime engine: russh never ends our reader then.
        _ = async { if let Some(r) = retired { let _ = r.await; } } => {}
    }
}

/// Client data to the socket; what the socket took is the window the client gets
/// back. The client's EOF shuts the socket's write side.
async fn to_socket(
    inflow: &Inflow,
    mut sock: impl AsyncWrite + Unpin,
) -> Result<(), std::io::Error> {
    while let Some(input) = inflow.next().await {
        match input {
            Input::Data(data) => {
                let written = sock.write_all(&data).await;
                inflow.consumed(data.len());
                written?;
            }
            Input::Eof => {
                let _ = sock.shutdown().await;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Socket data to the client through the window-aware writer; the socket's EOF
/// becomes the channel's.
async fn socket_to_client(
    sock: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    stamps: &ChannelStamps,
) -> Result<(), std::io::Error> {
    to_client(sock, &mut to, stamps).await?;
    to.shutdown().await
}

/// Drain a channel's messages until it closes: data and EOF go to its queue. It
/// never waits on the consumer, so russh's loop (which also carries the other
/// direction) is never held by a slow process or socket; the window, which only
/// the consumer re-opens, bounds the queue. True if the client closed the
/// channel (its CHANNEL_CLOSE); false if the channel went with the connection,
/// or after our own close.
pub(crate) async fn from_client(
    read: &mut ChannelReadHalf,
    inflow: &Inflow,
    stamps: &ChannelStamps,
) -> bool {
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                stamps.input.touch();
                inflow.push(data);
            }
            ChannelMsg::Eof => inflow.eof(),
            ChannelMsg::Close => {
                inflow.close();
                return true;
            }
            _ => {}
        }
    }
    inflow.close();
    false
}

/// The buffer an idle stream holds while it waits: interactive output fits.
const START: usize = 256;
/// The buffer a busy stream grows to: two of russh's largest packets per read,
/// which halves the wake-ups per byte of a bulk download (measured: chacha20
/// download 1.75 -> 1.6 server CPU s/GiB).
const MAX: usize = 64 * 1024;

/// Copy `from` to `to` until EOF, stamping output for the lifetime engine. The
/// buffer doubles while reads fill it, so a bulk transfer reaches 64 KiB per read
/// within nine reads, and drops back to 256 bytes after a read that fills less
/// than a quarter of it: thousands of idle sessions hold 256 bytes each, however
/// much they once printed.
pub async fn to_client(
    mut from: impl AsyncRead + Unpin,
    to: &mut (impl AsyncWrite + Unpin),
    stamps: &ChannelStamps,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; START];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stamps.output.touch();
        to.write_all(&buf[..n]).await?;
        if n == buf.len() && buf.len() < MAX {
            buf.resize(buf.len() * 2, 0);
        } else if n < buf.len() / 4 && buf.len() > START {
            buf = vec![0u8; START];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_everything_and_stamps_output() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let stamps = ChannelStamps::new(tokio::time::Instant::now());
        let mut out = Vec::new();
        to_client(&data[..], &mut out, &stamps).await.unwrap();
        assert!(out == data);
    }
}
