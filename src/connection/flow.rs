//! Flow control across a whole connection. Each channel's own backlog is counted
//! in a `session::BacklogCounter`; this module adds what bounds the connection:
//! the sum of its channels' backlogs ([`ConnQueue`]), which throttles every
//! channel once it is high, and the window each channel was granted
//! ([`Credits`]), which a client must not exceed. Without the second, a client
//! that ignores the window could queue without limit, since russh delivers data
//! past the window (RFC 4254 lets a receiver ignore it) and rsshd never blocks
//! russh's loop on a slow consumer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::limits::{CONN_QUEUED_HIGH, USER_QUEUED_HIGH, USER_QUEUED_MAX, user_queue};
use super::session::WINDOW_NORMAL;

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
/// packet that fits; russh tops the window up as data arrives, so forgiving would
/// let a client push a tenth of a window past it again and again. Counted over
/// the channel's life instead, the excess stays bounded.
const GRACE: u64 = WINDOW_NORMAL as u64 / 10;

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

#[derive(Debug, Clone, Copy)]
struct Credit {
    window: u32,
    excess: u64,
}

/// The window each channel of a connection has left, as russh granted it. russh
/// changes a channel's window only while it handles that channel's data (it
/// subtracts the packet and may top the window up), and every channel starts
/// with [`WINDOW_NORMAL`] (the daemon's russh config), so the value russh reports
/// after one packet is exactly what the client may send before the next.
#[derive(Debug, Default)]
pub(crate) struct Credits {
    channels: HashMap<u32, Credit>,
}

impl Credits {
    /// `len` bytes arrived on channel `id`; russh's window for it is now `now`.
    pub(crate) fn received(&mut self, id: u32, len: usize, now: u32) -> Result<(), Overrun> {
        let c = self.channels.entry(id).or_insert(Credit {
            window: WINDOW_NORMAL,
            excess: 0,
        });
        let before = c.window;
        c.window = now;
        let len = len as u64;
        if len <= u64::from(before) {
            return Ok(());
        }
        c.excess += len - u64::from(before);
        Err(Overrun {
            window: before,
            excess: c.excess,
            fatal: c.excess > GRACE,
        })
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
        // 2 MiB in 32 KiB packets; russh tops up to 2 MiB below 1 MiB.
        let mut window = WINDOW_NORMAL;
        for _ in 0..1000 {
            window -= 32 * 1024;
            if window < WINDOW_NORMAL / 2 {
                window = WINDOW_NORMAL;
            }
            assert_eq!(c.received(id, 32 * 1024, window), Ok(()));
        }
    }

    #[test]
    fn excess_accumulates_until_the_grace_is_gone() {
        let mut c = Credits::default();
        let id = 0;
        assert_eq!(c.received(id, 2_000_000, 97_152), Ok(()));
        // russh does not subtract a packet larger than the window, so its window
        // stays; each such packet adds to the excess.
        let first = c.received(id, 100_000, 97_152).unwrap_err();
        assert_eq!(
            (first.window, first.excess, first.fatal),
            (97_152, 2_848, false)
        );
        // A packet that fits is no pardon.
        assert_eq!(c.received(id, 1_000, 96_152), Ok(()));
        let mut last = first;
        while !last.fatal {
            last = c.received(id, 200_000, 96_152).unwrap_err();
        }
        assert!(last.excess > GRACE);
        // A new channel with the same number starts afresh.
        c.closed(id);
        assert_eq!(c.received(id, 1_000, WINDOW_NORMAL - 1_000), Ok(()));
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
