//! One channel's client data on its way to its consumer (a session's process or
//! a forwarded socket), and the window that follows it.
//!
//! russh runs with `manual_window` (vendor/README.md): it re-opens a channel's
//! window only for the bytes reported consumed. The channel's reader task takes
//! every message from russh at once and [`Inflow::push`]es it here, because
//! russh's loop must never wait on one channel (it carries every channel of the
//! connection and both directions); the consumer takes the data with
//! [`Inflow::next`], writes it, and reports what it wrote with
//! [`Inflow::consumed`]; that report, and nothing else, is the window the client
//! gets back. So a channel holds at most its window of client data, a slow
//! consumer slows its own channel only, and nothing is paced or paused.
//!
//! The bounds across channels (`limits::CONN_QUEUED_HIGH` and the per-user
//! marks) hold back the report instead: while the connection or its user has
//! too much queued, consumed bytes are kept back and given later.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use russh::ChannelId;
use russh::server::Handle;
use tokio::sync::Notify;

use super::flow::ConnQueue;

/// What the consumer gets from the client, in order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Input {
    Data(Bytes),
    Eof,
}

/// Packets smaller than this are copied together. A client may send its window
/// one byte per packet; kept as they came, 2 MiB of them would cost ~100 bytes
/// each (a `Bytes` in the queue and an allocation of its own), 200 MiB for one
/// channel. Copied, a byte costs a byte. Bulk data (32 KiB packets) is not copied.
const COALESCE_BELOW: usize = 4096;

/// Consumed bytes are reported to russh once this many have gathered, or when the
/// consumer has caught up: fewer messages to russh's loop during a bulk upload
/// (one per two packets instead of one per packet), and russh itself sends a
/// WINDOW_ADJUST only once three packets' worth is due.
const REPORT_BATCH: usize = 64 * 1024;

/// How often a consumer whose report is held back (the connection or its user
/// over their queued-bytes mark) looks again. Only under that abuse.
const RETRY: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    /// Small packets, copied together; always after every chunk.
    tail: BytesMut,
    /// Bytes pushed and not yet consumed.
    queued: usize,
    /// Consumed and not yet reported.
    unreported: usize,
    eof: bool,
    eof_taken: bool,
    closed: bool,
}

impl Queue {
    fn pop(&mut self) -> Option<Bytes> {
        self.chunks
            .pop_front()
            .or_else(|| (!self.tail.is_empty()).then(|| self.tail.split().freeze()))
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.tail.is_empty()
    }
}

/// Where consumed bytes are reported: russh's session, or a test's probe.
pub(crate) trait Window {
    /// Re-open the channel's window by `n` bytes.
    fn give(&self, n: u32);
}

/// A channel's window in russh's session.
#[derive(Debug)]
pub(crate) struct ChannelWindow {
    pub(crate) handle: Handle,
    pub(crate) id: ChannelId,
}

impl Window for ChannelWindow {
    fn give(&self, n: u32) {
        // Fails only once the connection is gone.
        let _ = self.handle.channel_consumed(self.id, n);
    }
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Inflow<W: Window = ChannelWindow> {
    window: W,
    conn: Arc<ConnQueue>,
    queue: Mutex<Queue>,
    ready: Notify,
    /// Bytes given back to the client as window over the channel's life, for the
    /// handler's check that the client stays within its window (`flow::Credit`).
    released: AtomicU64,
}

impl<W: Window> Inflow<W> {
    pub(crate) fn new(window: W, conn: Arc<ConnQueue>) -> Self {
        Inflow {
            window,
            conn,
            queue: Mutex::default(),
            ready: Notify::new(),
            released: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Client data arrived. Never waits.
    pub(crate) fn push(&self, data: Bytes) {
        let len = data.len();
        {
            let mut q = self.lock();
            if q.closed {
                return;
            }
            if len < COALESCE_BELOW {
                q.tail.extend_from_slice(&data);
            } else {
                if !q.tail.is_empty() {
                    let small = q.tail.split().freeze();
                    q.chunks.push_back(small);
                }
                q.chunks.push_back(data);
            }
            q.queued += len;
        }
        self.conn.add(len);
        self.ready.notify_one();
    }

    /// The client sent EOF.
    pub(crate) fn eof(&self) {
        self.lock().eof = true;
        self.ready.notify_one();
    }

    /// The channel is closed: the consumer gets what is queued, then `None`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// The next piece of input, waiting for it; `None` once the channel is closed
    /// and everything before the close was taken.
    pub(crate) async fn next(&self) -> Option<Input> {
        loop {
            let held_back = {
                let mut q = self.lock();
                if let Some(data) = q.pop() {
                    return Some(Input::Data(data));
                }
                if q.eof && !q.eof_taken {
                    q.eof_taken = true;
                    return Some(Input::Eof);
                }
                if q.closed {
                    return None;
                }
                q.unreported > 0
            };
            if held_back {
                // Nothing wakes this consumer when the connection drops below its
                // mark (another channel's, or another connection's, consumer did
                // it): look again now and then.
                let _ = tokio::time::timeout(RETRY, self.ready.notified()).await;
                self.report(true);
            } else {
                self.ready.notified().await;
            }
        }
    }

    /// The consumer wrote `n` bytes it took with [`Inflow::next`] (or threw them
    /// away): they may be sent again.
    pub(crate) fn consumed(&self, n: usize) {
        let caught_up = {
            let mut q = self.lock();
            q.queued = q.queued.saturating_sub(n);
            q.unreported += n;
            q.is_empty()
        };
        self.conn.sub(n);
        self.report(caught_up);
    }

    /// Report what was consumed to russh, which re-opens the window by that much:
    /// in batches, unless `now`, and not while the connection or its user holds
    /// too much.
    fn report(&self, now: bool) {
        let n = {
            let mut q = self.lock();
            if q.unreported == 0 || (!now && q.unreported < REPORT_BATCH) || self.conn.throttled() {
                return;
            }
            std::mem::take(&mut q.unreported)
        };
        self.release(n);
    }

    /// Give `n` bytes of window back to the client now.
    fn release(&self, n: usize) {
        // Batches are at most a window (a few MiB); saturate rather than wrap.
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        self.released.fetch_add(u64::from(n32), Ordering::Relaxed);
        self.window.give(n32);
    }

    /// Bytes given back to the client as window so far.
    pub(crate) fn released(&self) -> u64 {
        self.released.load(Ordering::Relaxed)
    }

    /// Whether everything pushed was consumed (for tests).
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.lock().queued
    }
}

impl<W: Window> Drop for Inflow<W> {
    /// Input still queued when the channel goes is dropped with it.
    fn drop(&mut self) {
        let queued = self.lock().queued;
        self.conn.sub(queued);
    }
}

/// Consume and throw away everything until the channel closes (the process's
/// input is closed, or it is gone): the client is never blocked by a reader that
/// no longer reads, as OpenSSH discards data for a channel whose output is closed.
pub(crate) async fn discard<W: Window>(inflow: &Inflow<W>) {
    while let Some(input) = inflow.next().await {
        if let Input::Data(d) = input {
            inflow.consumed(d.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::limits::CONN_QUEUED_HIGH;
    use super::*;

    #[derive(Debug, Default)]
    struct Probe(Mutex<Vec<u32>>);

    impl Window for Arc<Probe> {
        fn give(&self, n: u32) {
            self.0.lock().unwrap().push(n);
        }
    }

    fn inflow() -> (Inflow<Arc<Probe>>, Arc<Probe>, Arc<ConnQueue>) {
        let probe = Arc::new(Probe::default());
        let conn = Arc::new(ConnQueue::default());
        (
            Inflow::new(Arc::clone(&probe), Arc::clone(&conn)),
            probe,
            conn,
        )
    }

    fn reports(p: &Probe) -> Vec<u32> {
        p.0.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn small_packets_are_copied_together_in_order() {
        let (f, _, conn) = inflow();
        for _ in 0..1000 {
            f.push(Bytes::from_static(b"a"));
        }
        f.push(Bytes::from(vec![b'b'; 8192]));
        f.push(Bytes::from_static(b"c"));
        f.eof();
        f.close();
        assert_eq!(conn.get(), 1000 + 8192 + 1);
        assert_eq!(
            f.next().await,
            Some(Input::Data(Bytes::from(vec![b'a'; 1000])))
        );
        assert_eq!(
            f.next().await,
            Some(Input::Data(Bytes::from(vec![b'b'; 8192])))
        );
        assert_eq!(f.next().await, Some(Input::Data(Bytes::from_static(b"c"))));
        assert_eq!(f.next().await, Some(Input::Eof));
        assert_eq!(f.next().await, None);
        drop(f);
        assert_eq!(
            conn.get(),
            0,
            "what was never consumed is dropped with the channel"
        );
    }

    #[tokio::test]
    async fn consumption_is_reported_in_batches_and_when_caught_up() {
        let (f, probe, conn) = inflow();
        for _ in 0..3 {
            f.push(Bytes::from(vec![0u8; 32 * 1024]));
        }
        for _ in 0..3 {
            let Some(Input::Data(d)) = f.next().await else {
                panic!("no data");
            };
            f.consumed(d.len());
        }
        // 32 KiB: below the batch; 64 KiB: a batch; then caught up.
        assert_eq!(reports(&probe), vec![64 * 1024, 32 * 1024]);
        assert_eq!(f.released(), 96 * 1024);
        assert_eq!((f.queued(), conn.get()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_over_its_mark_gets_no_window_until_it_drains() {
        let (f, probe, conn) = inflow();
        // Other channels of the connection hold more than the mark.
        conn.add(CONN_QUEUED_HIGH + 1);
        f.push(Bytes::from(vec![0u8; 10_000]));
        let Some(Input::Data(d)) = f.next().await else {
            panic!("no data");
        };
        f.consumed(d.len());
        assert!(
            reports(&probe).is_empty(),
            "window given while over the mark"
        );
        // The consumer waits for more; the others drain meanwhile.
        let wait = f.next();
        tokio::pin!(wait);
        assert!(
            tokio::time::timeout(RETRY * 3, &mut wait).await.is_err(),
            "no input yet"
        );
        assert!(reports(&probe).is_empty());
        conn.sub(CONN_QUEUED_HIGH + 1);
        assert!(tokio::time::timeout(RETRY * 2, &mut wait).await.is_err());
        assert_eq!(reports(&probe), vec![10_000]);
        assert_eq!(f.released(), 10_000);
    }

    #[tokio::test]
    async fn discard_consumes_everything_until_the_close() {
        let (f, probe, conn) = inflow();
        let f = Arc::new(f);
        let d = tokio::spawn({
            let f = Arc::clone(&f);
            async move { discard(&f).await }
        });
        for _ in 0..10 {
            f.push(Bytes::from(vec![0u8; 50_000]));
            tokio::task::yield_now().await;
        }
        f.close();
        d.await.unwrap();
        assert_eq!(f.released(), 500_000);
        assert_eq!(
            reports(&probe).iter().map(|&n| u64::from(n)).sum::<u64>(),
            500_000
        );
        assert_eq!(conn.get(), 0);
    }
}
