//! Flow control across a whole connection. Each channel's window follows what its
//! consumer took (`inflow::Inflow`); this module adds what bounds the connection:
//! the sum of its channels' queues ([`ConnQueue`]), above which no channel of the
//! connection gets window back, and the check that a client stays within the
//! window it was given ([`Credit`], one per channel in the connection's
//! channel table). Without the second, a client that ignores
//! the window could queue without limit, since russh delivers data past the
//! window (RFC 4254 lets a receiver ignore it) and rsshd never blocks russh's
//! loop on a slow consumer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::limits::{CONN_QUEUED_HIGH, USER_QUEUED_HIGH, USER_QUEUED_MAX, user_queue};

/// The window every channel starts with, and gets back as its consumer takes the
/// data (russh's `manual_window`): OpenSSH's session window
/// (CHAN_SES_WINDOW_DEFAULT, 64 packets of 32 KiB). It is also the most client
/// data one channel can make the daemon hold ([`Credit`]). On loopback a
/// window this size carries over 1 GB/s; a larger one would only let a stalled
/// channel hold more.
pub(crate) const WINDOW: u32 = 2 * 1024 * 1024;

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
    pub(crate) window: u32,
    /// Bytes past the window over the channel's life.
    pub(crate) excess: u64,
    /// Past the grace: end the connection.
    pub(crate) fatal: bool,
}

/// What one channel received, against the window it was given. Every channel
/// starts with [`WINDOW`] (the daemon's russh config), and russh gives back only
/// what the channel's consumer reported consumed, never before the report
/// (`inflow::Inflow::released` counts it first), so a client that keeps to its
/// window never has more than [`WINDOW`] received and not released.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Credit {
    /// Bytes received on the channel over its life, less those given back at once.
    received: u64,
    excess: u64,
}

impl Credit {
    /// `len` bytes arrived on the channel, whose consumer has had `released`
    /// bytes given back to the client so far.
    pub(crate) fn received(&mut self, len: usize, released: u64) -> Result<(), Overrun> {
        let len = len as u64;
        self.received += len;
        let held = self.received.saturating_sub(released);
        let over = held.saturating_sub(u64::from(WINDOW)).min(len);
        if over == 0 {
            return Ok(());
        }
        self.excess += over;
        let window = u64::from(WINDOW).saturating_sub(held - len);
        Err(Overrun {
            window: u32::try_from(window).unwrap_or(WINDOW),
            excess: self.excess,
            fatal: self.excess > GRACE,
        })
    }

    /// `len` bytes just received were given back at once (data nothing reads,
    /// such as a client's extended data).
    pub(crate) fn given_back(&mut self, len: usize) {
        self.received = self.received.saturating_sub(len as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_within_its_window_is_fine() {
        let mut c = Credit::default();
        // 64 MiB in 32 KiB packets; the consumer releases in 64 KiB batches, a
        // window behind the client at most.
        let (mut received, mut released) = (0u64, 0u64);
        for _ in 0..2048 {
            assert_eq!(c.received(32 * 1024, released), Ok(()));
            received += 32 * 1024;
            if received - released >= u64::from(WINDOW) {
                released += 64 * 1024;
            }
        }
        // A full window with nothing released fits exactly.
        let mut fresh = Credit::default();
        for _ in 0..WINDOW / (32 * 1024) {
            assert_eq!(fresh.received(32 * 1024, 0), Ok(()));
        }
        assert!(fresh.received(1, 0).is_err());
    }

    #[test]
    fn excess_accumulates_until_the_grace_is_gone() {
        let mut c = Credit::default();
        let w = u64::from(WINDOW);
        assert_eq!(c.received(2_000_000, 0), Ok(()));
        // 97,152 bytes of window left.
        let first = c.received(100_000, 0).unwrap_err();
        assert_eq!(
            (first.window, first.excess, first.fatal),
            (97_152, 2_848, false)
        );
        // Consumed and released, the window is back; a packet that fits is no
        // pardon for the excess.
        assert_eq!(c.received(1_000, 2_100_000), Ok(()));
        // Ignoring the window again: each packet past it adds to the excess.
        let mut last = first;
        let mut over = 0;
        for _ in 0..100 {
            if let Err(o) = c.received(200_000, 2_100_000) {
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
        let mut g = Credit::default();
        assert_eq!(g.received(2_000_000, 0), Ok(()));
        g.given_back(2_000_000);
        assert_eq!(g.received((w - 1) as usize, 0), Ok(()));
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
