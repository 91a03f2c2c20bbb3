//! The open channels of one connection: sessions and forwarded channels alike,
//! and the one place where a channel is retired, whichever side closed it first.
//!
//! russh 0.65 forgets a channel the moment the server sends its CLOSE
//! (`Session::close` removes it from its table), so the client's CLOSE that
//! answers ours is dropped as "not established" and `Handler::channel_close` is
//! never called for it. A channel rsshd closes itself (its program ended, its
//! tunnel's target hung up, `ChannelTimeout`) must therefore be retired by rsshd:
//! [`ConnShared::retire`](super::shared::ConnShared::retire) is called on every path that learns a channel is closed
//! (the handler's `channel_close`, the session task after its CLOSE, a tunnel's
//! pump at its end, the lifetime driver's close), and only the first call of a
//! channel does anything: it gives back the channel's place among the
//! connection's channels, tells the lifetime engine, wakes the channel's reader
//! (whose end of the channel russh never closes then), and leaves the number for
//! the handler to drop its own per-channel state.
//!
//! The table is the one owner of what the connection keeps per channel: its kind
//! (session or tunnel), its place among the connection's channels, the PTY flag,
//! the retire wake-up, its input queue (whose releases the window check reads) and
//! the window credit the client has used ([`Credit`]). A record outlives the
//! channel's retirement until the handler has seen it ([`ChannelTable::take_retired`]),
//! so that a packet still in flight is checked against the same credit as before.
//!
//! Not here: the handler's state of a session channel that has not started its
//! program yet (`session::SessionChannel`: PTY parameters, environment, the
//! channel's write half). The handler mutates it across `.await`s (`start` awaits
//! the privileged boundary while holding it), which a record behind this table's
//! lock cannot allow without a redesign of the start path; it stays in the
//! handler's own map keyed by the same number and is dropped when the table
//! reports the channel retired.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use russh::ChannelId;
use tokio::sync::oneshot;

use super::flow::{Credit, Overrun};
use super::inflow::{ChannelWindow, Inflow, Window};
use super::limits::ChannelSlot;

/// Fulfilled (by being dropped) when the channel is retired.
pub(crate) type Retired = oneshot::Receiver<()>;

/// What a channel is, for the table's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A session channel: counted against `MaxSessions`; `pty` once it has a PTY
    /// (warnings and the goodbye are written to it).
    Session { pty: bool },
    /// A forwarded channel (direct-tcpip, forwarded-tcpip, agent).
    Tunnel,
}

/// What an open channel holds until it is retired.
struct Live {
    id: ChannelId,
    kind: Kind,
    /// The channel's place among the connection's channels, given back on retiring.
    _slot: ChannelSlot,
    /// Dropped on retiring, which wakes the channel's reader.
    _wake: oneshot::Sender<()>,
}

/// One channel number's record.
struct Record<W: Window> {
    /// `None` before the channel is entered (a packet raced its registration)
    /// and after it is retired.
    live: Option<Live>,
    /// The window the client has used on it.
    credit: Credit,
    /// The channel's input queue, whose releases are the window given back. A
    /// session's stays until the handler forgets the channel (its consumer may
    /// still be draining); a tunnel's goes when its pump ends.
    inflow: Option<Arc<Inflow<W>>>,
}

impl<W: Window> Default for Record<W> {
    fn default() -> Self {
        Record {
            live: None,
            credit: Credit::default(),
            inflow: None,
        }
    }
}

struct Inner<W: Window> {
    records: HashMap<u32, Record<W>>,
    /// Retired since the handler last looked; their records go then.
    retired: Vec<u32>,
}

/// See the module docs. `W` is how an input queue re-opens its window (russh's
/// handle; a probe in tests).
pub(crate) struct ChannelTable<W: Window = ChannelWindow>(Mutex<Inner<W>>);

impl<W: Window> Default for ChannelTable<W> {
    fn default() -> Self {
        ChannelTable(Mutex::new(Inner {
            records: HashMap::new(),
            retired: Vec::new(),
        }))
    }
}

impl<W: Window> ChannelTable<W> {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner<W>> {
        // Every update leaves the table consistent, so a panic elsewhere does not
        // make it unusable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enter a channel the connection has accepted (or opened), with its input
    /// queue; the receiver is fulfilled when the channel is retired.
    pub(crate) fn open(
        &self,
        id: ChannelId,
        kind: Kind,
        slot: ChannelSlot,
        inflow: Arc<Inflow<W>>,
    ) -> Retired {
        let (wake, retired) = oneshot::channel();
        let mut inner = self.inner();
        let r = inner.records.entry(u32::from(id)).or_default();
        r.live = Some(Live {
            id,
            kind,
            _slot: slot,
            _wake: wake,
        });
        r.inflow = Some(inflow);
        retired
    }

    /// The session channel got a PTY.
    pub(crate) fn set_pty(&self, n: u32) {
        if let Some(Live {
            kind: Kind::Session { pty },
            ..
        }) = self
            .inner()
            .records
            .get_mut(&n)
            .and_then(|r| r.live.as_mut())
        {
            *pty = true;
        }
    }

    /// The russh id of open channel `n`.
    pub(crate) fn id(&self, n: u32) -> Option<ChannelId> {
        self.inner().records.get(&n)?.live.as_ref().map(|l| l.id)
    }

    /// Open session channels that have a PTY.
    pub(crate) fn ptys(&self) -> Vec<ChannelId> {
        self.inner()
            .records
            .values()
            .filter_map(|r| r.live.as_ref())
            .filter(|l| l.kind == Kind::Session { pty: true })
            .map(|l| l.id)
            .collect()
    }

    /// Open session channels: what `MaxSessions` bounds.
    pub(crate) fn sessions(&self) -> usize {
        self.inner()
            .records
            .values()
            .filter_map(|r| r.live.as_ref())
            .filter(|l| matches!(l.kind, Kind::Session { .. }))
            .count()
    }

    /// `len` bytes arrived on channel `n`: checked against the window it was
    /// given (see [`Credit::received`]).
    pub(crate) fn received(&self, n: u32, len: usize) -> Result<(), Overrun> {
        let mut inner = self.inner();
        let r = inner.records.entry(n).or_default();
        let released = r.inflow.as_ref().map_or(0, |f| f.released());
        r.credit.received(len, released)
    }

    /// `len` bytes just received on channel `n` were given back at once.
    pub(crate) fn given_back(&self, n: u32, len: usize) {
        if let Some(r) = self.inner().records.get_mut(&n) {
            r.credit.given_back(len);
        }
    }

    /// Channels retired since the last call, for the handler to forget; their
    /// records go now.
    pub(crate) fn take_retired(&self) -> Vec<u32> {
        let mut inner = self.inner();
        let gone = std::mem::take(&mut inner.retired);
        for n in &gone {
            // A number entered again since keeps its new record.
            if inner.records.get(n).is_some_and(|r| r.live.is_none()) {
                inner.records.remove(n);
            }
        }
        gone
    }

    /// Retire `n`; true if it was open (this call retired it).
    pub(crate) fn remove(&self, n: u32) -> bool {
        let mut inner = self.inner();
        // The slot and the wake-up are dropped after the lock.
        let Some(r) = inner.records.get_mut(&n) else {
            return false;
        };
        let Some(live) = r.live.take() else {
            return false;
        };
        if live.kind == Kind::Tunnel {
            r.inflow = None;
        }
        inner.retired.push(n);
        drop(inner);
        drop(live);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::flow::{ConnQueue, WINDOW};
    use crate::connection::limits::{CHANNELS_MAX, ChannelSlots};

    /// ChannelId has no public constructor; decode one as russh does.
    fn id(n: u32) -> ChannelId {
        use russh::keys::ssh_encoding::Decode;
        ChannelId::decode(&mut &n.to_be_bytes()[..]).expect("four bytes")
    }

    /// A window that goes nowhere.
    struct Nowhere;

    impl Window for Nowhere {
        fn give(&self, _: u32) {}
    }

    fn inflow() -> Arc<Inflow<Nowhere>> {
        Arc::new(Inflow::new(Nowhere, Arc::new(ConnQueue::default())))
    }

    /// `len` bytes from the client, taken and written by the consumer.
    async fn consume(f: &Inflow<Nowhere>, len: usize) {
        f.push(bytes::Bytes::from(vec![0u8; len]));
        assert!(matches!(
            f.next().await,
            Some(crate::connection::inflow::Input::Data(_))
        ));
        f.consumed(len);
    }

    #[test]
    fn retiring_is_once_and_gives_the_place_back() {
        let slots = ChannelSlots::default();
        let table = ChannelTable::default();
        let mut held: Vec<_> = (0..CHANNELS_MAX - 1)
            .map(|_| slots.take().unwrap())
            .collect();
        let mut retired = table.open(
            id(7),
            Kind::Session { pty: false },
            slots.take().unwrap(),
            inflow(),
        );
        assert!(slots.take().is_none(), "all places taken");
        assert_eq!(table.sessions(), 1);
        assert!(table.ptys().is_empty());
        table.set_pty(7);
        assert_eq!(table.ptys(), vec![id(7)]);
        assert!(retired.try_recv().is_err());
        assert!(table.remove(7));
        assert!(!table.remove(7), "a second retire does nothing");
        assert!(
            retired
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
        );
        assert_eq!(table.sessions(), 0);
        assert!(table.ptys().is_empty() && table.id(7).is_none());
        assert!(slots.take().is_some(), "the place came back");
        assert_eq!(table.take_retired(), vec![7]);
        assert!(table.take_retired().is_empty());
        held.clear();
    }

    #[tokio::test]
    async fn the_credit_lives_as_long_as_the_record() {
        let slots = ChannelSlots::default();
        let table = ChannelTable::default();
        let w = WINDOW as usize;
        // A packet that raced the channel's registration is counted for it.
        assert_eq!(table.received(3, w), Ok(()));
        let f = inflow();
        let _r = table.open(id(3), Kind::Tunnel, slots.take().unwrap(), Arc::clone(&f));
        assert!(table.received(3, 1).is_err(), "the window is used up");
        // Given back at once, it does not count.
        table.given_back(3, 1);
        // The consumer took the data and the window was given back.
        consume(&f, w).await;
        assert_eq!(f.released(), w as u64);
        assert_eq!(table.received(3, w), Ok(()));
        // A retired tunnel's queue goes at once; its credit stays until the
        // handler has seen the retirement.
        assert!(table.remove(3));
        assert!(table.received(3, 1).is_err());
        assert_eq!(table.take_retired(), vec![3]);
        // A new channel with the same number starts afresh.
        assert_eq!(table.received(3, w), Ok(()));
    }

    #[tokio::test]
    async fn a_retired_session_keeps_its_queue_until_forgotten() {
        let slots = ChannelSlots::default();
        let table = ChannelTable::default();
        let w = WINDOW as usize;
        let f = inflow();
        let _r = table.open(
            id(5),
            Kind::Session { pty: false },
            slots.take().unwrap(),
            Arc::clone(&f),
        );
        assert_eq!(table.received(5, w), Ok(()));
        assert!(table.remove(5));
        // Its consumer still drains after the retirement: the window it gives
        // back is the client's.
        consume(&f, w).await;
        assert_eq!(table.received(5, w), Ok(()));
    }
}
