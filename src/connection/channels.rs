//! The open channels of one connection: sessions and forwarded channels alike,
//! and the one place where a channel is retired, whichever side closed it first.
//!
//! russh 0.65 forgets a channel the moment the server sends its CLOSE
//! (`Session::close` removes it from its table), so the client's CLOSE that
//! answers ours is dropped as "not established" and `Handler::channel_close` is
//! never called for it. A channel rsshd closes itself (its program ended, its
//! tunnel's target hung up, `ChannelTimeout`) must therefore be retired by rsshd:
//! [`ConnShared::retire`] is called on every path that learns a channel is closed
//! (the handler's `channel_close`, the session task after its CLOSE, a tunnel's
//! pump at its end, the lifetime driver's close), and only the first call of a
//! channel does anything: it gives back the channel's place among the
//! connection's channels, tells the lifetime engine, wakes the channel's reader
//! (whose end of the channel russh never closes then), and leaves the number for
//! the handler to drop its own per-channel state.

use std::collections::HashMap;
use std::sync::Mutex;

use russh::ChannelId;
use tokio::sync::oneshot;

use super::ConnShared;
use super::limits::ChannelSlot;
use crate::lifetime::Event;

/// Fulfilled (by being dropped) when the channel is retired.
pub(crate) type Retired = oneshot::Receiver<()>;

struct Open {
    id: ChannelId,
    /// A session channel with a PTY (warnings and the goodbye are written to it).
    pty: bool,
    /// Counted against `MaxSessions`.
    session: bool,
    /// The channel's place among the connection's channels, given back on retiring.
    _slot: ChannelSlot,
    /// Dropped on retiring, which wakes the channel's reader.
    _wake: oneshot::Sender<()>,
}

#[derive(Default)]
struct Inner {
    open: HashMap<u32, Open>,
    /// Retired since the handler last looked; it drops its state for these.
    retired: Vec<u32>,
}

/// See the module docs.
#[derive(Default)]
pub struct ChannelTable(Mutex<Inner>);

impl ChannelTable {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the table consistent, so a panic elsewhere does not
        // make it unusable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enter a channel the connection has accepted (or opened); the receiver is
    /// fulfilled when the channel is retired.
    pub(crate) fn open(&self, id: ChannelId, session: bool, slot: ChannelSlot) -> Retired {
        let (wake, retired) = oneshot::channel();
        self.inner().open.insert(
            u32::from(id),
            Open {
                id,
                pty: false,
                session,
                _slot: slot,
                _wake: wake,
            },
        );
        retired
    }

    /// The session channel got a PTY.
    pub(crate) fn set_pty(&self, n: u32) {
        if let Some(o) = self.inner().open.get_mut(&n) {
            o.pty = true;
        }
    }

    /// The russh id of open channel `n`.
    pub(crate) fn id(&self, n: u32) -> Option<ChannelId> {
        self.inner().open.get(&n).map(|o| o.id)
    }

    /// Open session channels that have a PTY.
    pub(crate) fn ptys(&self) -> Vec<ChannelId> {
        self.inner()
            .open
            .values()
            .filter(|o| o.pty)
            .map(|o| o.id)
            .collect()
    }

    /// Open session channels: what `MaxSessions` bounds.
    pub(crate) fn sessions(&self) -> usize {
        self.inner().open.values().filter(|o| o.session).count()
    }

    /// Channels retired since the last call, for the handler to forget.
    pub(crate) fn take_retired(&self) -> Vec<u32> {
        std::mem::take(&mut self.inner().retired)
    }

    /// Remove `n`; true if it was open (this call retired it).
    fn remove(&self, n: u32) -> bool {
        let mut inner = self.inner();
        // The slot and the wake-up are dropped with the entry, after the lock.
        let Some(entry) = inner.open.remove(&n) else {
            return false;
        };
        inner.retired.push(n);
        drop(inner);
        drop(entry);
        true
    }
}

impl ConnShared {
    /// Retire channel `n`: see the module docs. Safe to call from every path that
    /// learns of the close; only the first call of a channel does anything.
    pub(crate) fn retire(&self, n: u32) {
        if self.channels.remove(n) {
            self.events.send(Event::ChannelClosed { channel: n });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::limits::{CHANNELS_MAX, ChannelSlots};

    /// ChannelId has no public constructor; decode one as russh does.
    fn id(n: u32) -> ChannelId {
        use russh::keys::ssh_encoding::Decode;
        ChannelId::decode(&mut &n.to_be_bytes()[..]).expect("four bytes")
    }

    #[test]
    fn retiring_is_once_and_gives_the_place_back() {
        let slots = ChannelSlots::default();
        let table = ChannelTable::default();
        let mut held: Vec<_> = (0..CHANNELS_MAX - 1)
            .map(|_| slots.take().unwrap())
            .collect();
        let mut retired = table.open(id(7), true, slots.take().unwrap());
        assert!(slots.take().is_none(), "all places taken");
        assert_eq!(table.sessions(), 1);
        assert!(retired.try_recv().is_err());
        assert!(table.remove(7));
        assert!(!table.remove(7), "a second retire does nothing");
        assert!(
            retired
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
        );
        assert_eq!(table.sessions(), 0);
        assert!(slots.take().is_some(), "the place came back");
        assert_eq!(table.take_retired(), vec![7]);
        assert!(table.take_retired().is_empty());
        held.clear();
    }
}
