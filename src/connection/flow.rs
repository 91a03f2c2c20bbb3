//! Flow control across a whole connection. Each channel's window follows what its
//! consumer took (`inflow::Inflow`); this module adds what bounds the connection:
//! the sum of its channels' queues ([`ConnQueue`]), above which no channel of the
//! connection gets window back, and the check that a client stays within the
//! window it was given ([`Credits`]). Without the second, a client that ignores
//! the window could queue without limit, since russh delivers data past the
//! window (RFC 4254 lets a receiver ignore it) and rsshd never blocks russh's
//! loop on a slow consumer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::limits::{CONN_QUEUED_HIGH, USER_QUEUED_HIGH, USER_QUEUED_MAX, user_queue};
use super::session::WINDOW;

/// Client bytes queued for all the consumers of one connection, also counted
/// for its user across all their connections.
#[derive(Debug, Default)]
pub(crate) struct ConnQueue {
    bytes: AtomicUsize,
    user: OnceLock<Arc<AtomicUsize>>,
}

impl ConnQueue {
    /// Count for `uid` too; called before the connection's first channel opens.
    pub(crate) fn bind_user(&self, uid: u32) {
        self.user.get_or_init(|| user_queue(uid));
    }

    pub(crate) fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(u) = self.user.get() {
            u.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn sub(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
        if let Some(u) = self.user.get() {
            u.fetch_sub(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Bytes queued for this connection's user on all their connections.
    pub(crate) fn user_bytes(&self) -> usize {
        self.user.get().map_or(0, |u| u.load(Ordering::Relaxed))
    }

    /// Whether no channel of the connection should get more window now.
    pub(crate) fn throttled(&self) -> bool {
        self.get() > CONN_QUEUED_HIGH || self.user_bytes() > USER_QUEUED_HIGH
    }

    /// Whether the user has more queued than the daemon holds for one user.
    pub(crate) fn over_user_max(&self) -> bool {
        self.user_bytes() > USER_QUEUED_MAX
    }
}

/// How far past its window a client may send on one channel, over the channel's
/// life, before it is disconnected: OpenSSH's 10% grace ("Allow 10% grace before
/// bringing the hammer down", channels.c). OpenSSH forgives the excess after a
/// packet that fits; counted over the channel's life instead, a client cannot
/// push a tenth of a window past it again and again.
const GRACE: u64 = WINDOW as u64 / 10;

/// A client sent more on a channel than the window allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overrun {
    /// The window the client had for this packet.
    pub window: u32,
    /// Bytes past the window over the channel's life.
    pub excess: u64,
    /// Past the grace: end the connection.
    pub fatal: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Credit {
    /// Bytes received on the channel over its life, less those given back at once.
    received: u64,
    excess: u64,
}

/// What each channel of a connection received, against the window it was given.
/// Every channel starts with [`WINDOW`] (the daemon's russh config), and russh
/// gives back only what the channel's consumer reported consumed, never before
/// the report (`inflow::Inflow::released` counts it first), so a client that
/// keeps to its window never has more than [`WINDOW`] received and not released.
#[derive(Debug, Default)]
pub(crate) struct Credits {
    channels: HashMap<u32, Credit>,
}

impl Credits {
    /// `len` bytes arrived on channel `id`, whose consumer has had `released`
    /// bytes given back to the client so far.
    pub(crate) fn received(&mut self, id: u32, len: usize, released: u64) -> Result<(), Overrun> {
        let c = self.channels.entry(id).or_default();
        let len = len as u64;
        c.received += len;
        let held = c.received.saturating_sub(released);
        let over = held.saturating_sub(u64::from(WINDOW)).min(len);
        if over == 0 {
            return Ok(());
        }
        c.excess += over;
        let window = u64::from(WINDOW).saturating_sub(held - len);
        Err(Overrun {
            window: u32::try_from(window).unwrap_or(WINDOW),
            excess: c.excess,
            fatal: c.excess > GRACE,
        })
    }

    /// `len` bytes just received on channel `id` were given back at once (data
    /// nothing reads, such as a client's extended data).
    pub(crate) fn given_back(&mut self, id: u32, len: usize) {
        if let Some(c) = self.channels.get_mut(&id) {
            c.received = c.received.saturating_sub(len as u64);
        }
    }

    /// The channel is gone; its number may be used again.
    pub(crate) fn closed(&mut self, id: u32) {
        self.channels.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_within_its_window_is_fine() {
        let mut c = Credits::default();
        let id = 3;
        // 64 MiB in 32 KiB packets; the consumer releases in 64 KiB batches, a
        // window behind the client at most.
        let (mut received, mut released) = (0u64, 0u64);
        for _ in 0..2048 {
            assert_eq!(c.received(id, 32 * 1024, released), Ok(()));
            received += 32 * 1024;
            if received - released >= u64::from(WINDOW) {
                released += 64 * 1024;
            }
        }
        // A full window with nothing released fits exactly.
        let mut fresh = Credits::default();
        for _ in 0..WINDOW / (32 * 1024) {
            assert_eq!(fresh.received(id, 32 * 1024, 0), Ok(()));
        }
        assert!(fresh.received(id, 1, 0).is_err());
    }

    #[test]
    fn excess_accumulates_until_the_grace_is_gone() {
        let mut c = Credits::default();
        let id = 0;
        let w = u64::from(WINDOW);
        assert_eq!(c.received(id, 2_000_000, 0), Ok(()));
        // 97,152 bytes of window left.
        let first = c.received(id, 100_000, 0).unwrap_err();
        assert_eq!(
            (first.window, first.excess, first.fatal),
            (97_152, 2_848, false)
        );
        // Consumed and released, the window is back; a packet that fits is no
        // pardon for the excess.
        assert_eq!(c.received(id, 1_000, 2_100_000), Ok(()));
        // Ignoring the window again: each packet past it adds to the excess.
        let mut last = first;
        let mut over = 0;
        for _ in 0..100 {
            if let Err(o) = c.received(id, 200_000, 2_100_000) {
                assert!(o.excess > last.excess);
                last = o;
                over += 1;
            }
            if last.fatal {
                break;
            }
        }
        assert!(last.fatal && last.excess > GRACE && over > 1, "{last:?}");
        // Data given back at once does not count.
        let mut g = Credits::default();
        assert_eq!(g.received(id, 2_000_000, 0), Ok(()));
        g.given_back(id, 2_000_000);
        assert_eq!(g.received(id, (w - 1) as usize, 0), Ok(()));
        // A new channel with the same number starts afresh.
        c.closed(id);
        assert_eq!(c.received(id, 1_000, 0), Ok(()));
    }

    #[test]
    fn the_connection_queue_throttles_above_its_mark() {
        let q = ConnQueue::default();
        q.add(CONN_QUEUED_HIGH);
        assert!(!q.throttled());
        q.add(1);
        assert!(q.throttled());
        q.sub(2);
        assert!(!q.throttled());
        assert_eq!(q.get(), CONN_QUEUED_HIGH - 1);
    }

    #[test]
    fn a_users_connections_share_one_count() {
        // A uid no test user has; each connection stays at its own mark.
        let conns: Vec<ConnQueue> = (0..5).map(|_| ConnQueue::default()).collect();
        for c in &conns {
            c.bind_user(3_900_100);
        }
        for c in &conns[..4] {
            c.add(CONN_QUEUED_HIGH);
        }
        assert_eq!(4 * CONN_QUEUED_HIGH, USER_QUEUED_HIGH);
        assert!(conns.iter().all(|c| !c.throttled()));
        conns[4].add(1);
        assert!(conns.iter().all(|c| c.throttled()), "the user is over");
        assert!(!conns[0].over_user_max());
        conns[4].add(USER_QUEUED_MAX);
        assert!(conns[0].over_user_max());
        conns[4].sub(USER_QUEUED_MAX + 1);
        for c in &conns[..4] {
            c.sub(CONN_QUEUED_HIGH);
        }
        assert_eq!(conns[0].user_bytes(), 0);
    }
}
