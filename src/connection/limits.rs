//! What one session, connection or user may make the daemon hold. sshd gets most
//! of these bounds for free: each connection is a process of its own, running as
//! the user after authentication, with the usual 1024-descriptor soft limit and
//! its memory charged to the user. rsshd serves everyone from one root process, so
//! every request a client can repeat is counted here, and the one past the bound
//! is refused and logged while the connection goes on.
//!
//! One table of numbers; each says why it is what it is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Environment variables one session may set: sshd's number (`session_env_req`
/// refuses once a session has 128; its `>` lets a 129th through, which we do not).
pub(crate) const ENV_MAX_VARS: usize = 128;

/// Bytes of names and values one session may set. sshd has no such bound, but a
/// root daemon must not keep 128 variables of 256 KiB (the largest packet) for each
/// of a connection's sessions. 256 KiB is twice the longest single string execve
/// accepts (MAX_ARG_STRLEN, 128 KiB) and a hundred times a full LANG/LC_* set.
pub(crate) const ENV_MAX_BYTES: usize = 256 * 1024;

/// `tcpip-forward` listeners (`ssh -R`) one connection may hold. sshd has no
/// explicit bound; its per-connection process runs out of descriptors near 1000,
/// and OpenSSH's client allowed 100 forwards per direction until 2010. Each
/// forward binds at most two sockets (IPv4 and IPv6), so 256 forwards hold at
/// most 512 descriptors: half of what sshd's process would have.
pub(crate) const FORWARDS_MAX: usize = 256;

/// Channels one connection may have open at once: sessions (also bounded by
/// `MaxSessions`), `-L`/`-D`/`-W` tunnels, `-R` connections and agent
/// connections. A browser behind `ssh -D` keeps at most 32 connections to one
/// proxy (Chrome's and Firefox's per-proxy limit), so 128 leaves room for several
/// of them next to a ControlMaster's sessions. Each open channel may hold its
/// 2 MiB window of client data (see `session`), so this also bounds the memory a
/// connection can make the daemon hold: 128 x 2 MiB plus [`CONN_QUEUED_HIGH`].
pub(crate) const CHANNELS_MAX: usize = 128;

/// Client bytes a connection may have queued for its consumers (processes and
/// sockets that read slower than the client sends) before every channel of the
/// connection stops getting more window back. One channel alone holds at most
/// its window (`flow::WINDOW`, 2 MiB); this bounds the sum, so a connection
/// with many slow channels queues at most this plus the windows already granted.
pub(crate) const CONN_QUEUED_HIGH: usize = 16 * 1024 * 1024;

/// Client bytes all of one user's connections may have queued before every
/// channel of theirs stops getting more window: four connections' worth.
pub(crate) const USER_QUEUED_HIGH: usize = 4 * CONN_QUEUED_HIGH;

/// Client bytes all of one user's connections may have queued at all; the
/// connection that sends past it is ended. Windows, once granted, cannot be taken
/// back, and each new channel starts with 2 MiB of them, so without this a user
/// could open connection after connection, each with `MaxSessions` sessions that
/// never read, and have the daemon hold 2 MiB per channel without end. A client
/// that respects its windows gets here only with more than a hundred channels
/// whose consumers all stopped reading; the daemon then holds at most this for
/// the user, and a sixteenth of 4 GiB is what one user may take from a small host.
pub(crate) const USER_QUEUED_MAX: usize = 256 * 1024 * 1024;

/// The queued-bytes counter all connections of `uid` share.
pub(crate) fn user_queue(uid: u32) -> Arc<AtomicUsize> {
    static QUEUES: OnceLock<Mutex<HashMap<u32, Arc<AtomicUsize>>>> = OnceLock::new();
    let mut map = QUEUES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    // One entry per user who ever opened a channel: as many as there are users.
    Arc::clone(map.entry(uid).or_default())
}

/// Descriptors the daemon holds for a session with a PTY: the master, and while
/// it starts the slave (then the pidfd that waits for the process instead).
pub(crate) const FDS_PTY_SESSION: usize = 2;
/// Without a PTY: three pipes, both ends while the process starts; afterwards our
/// three ends and the pidfd.
pub(crate) const FDS_PIPE_SESSION: usize = 6;

/// Of the daemon's descriptor limit, the share one user may have the daemon hold
/// for them: listeners, tunnel sockets, agent sockets, session PTYs and pipes. Not
/// the connections' own sockets, which MaxStartups governs before authentication
/// and which the benchmark holds 10,000 of for one user.
///
/// The daemon raises its soft limit to the hard one at start (`raise_fd_limit` in
/// main.rs): under systemd that is 524288, so a user may hold 131072; with a hard
/// limit of 20000 (this container) 5000, enough for 1000 PTY sessions at two
/// each plus 1000 tunnels and forwards. A quarter means one user can never take
/// more than that, so three quarters stay for everyone else's connections and
/// sessions; and it is far more than the ~1000 one sshd connection could hold.
const USER_FD_SHARE: u64 = 4;

/// The per-user cap for a descriptor limit of `nofile`.
fn user_fd_cap_for(nofile: u64) -> usize {
    usize::try_from(nofile / USER_FD_SHARE).unwrap_or(usize::MAX)
}

/// The per-user cap for this process, read once (after `raise_fd_limit`).
pub(crate) fn user_fd_cap() -> usize {
    static CAP: OnceLock<usize> = OnceLock::new();
    *CAP.get_or_init(|| {
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        user_fd_cap_for(nofile)
    })
}

/// Descriptors held for each user, across all their connections.
fn held() -> &'static Mutex<HashMap<u32, usize>> {
    static HELD: OnceLock<Mutex<HashMap<u32, usize>>> = OnceLock::new();
    HELD.get_or_init(Mutex::default)
}

/// The user already has the daemon hold as many descriptors as one user may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{held} descriptors already held for this user (the per-user cap)")]
pub(crate) struct FdsExhausted {
    pub(crate) held: usize,
}

/// A claim on `n` of a user's descriptors, taken before the descriptors are
/// created and given back when the owner of the descriptors drops it.
#[derive(Debug)]
pub(crate) struct FdLease {
    uid: u32,
    n: usize,
}

impl FdLease {
    pub(crate) fn take(uid: u32, n: usize) -> Result<FdLease, FdsExhausted> {
        Self::take_under(uid, n, user_fd_cap())
    }

    fn take_under(uid: u32, n: usize, cap: usize) -> Result<FdLease, FdsExhausted> {
        let mut map = held().lock().unwrap_or_else(|p| p.into_inner());
        let mine = map.get(&uid).copied().unwrap_or(0);
        if mine + n > cap {
            return Err(FdsExhausted { held: mine });
        }
        *map.entry(uid).or_insert(0) += n;
        Ok(FdLease { uid, n })
    }

    /// Give back all but `n` (fewer descriptors were created than claimed).
    pub(crate) fn shrink_to(&mut self, n: usize) {
        if n < self.n {
            release(self.uid, self.n - n);
            self.n = n;
        }
    }
}

impl Drop for FdLease {
    fn drop(&mut self) {
        release(self.uid, self.n);
    }
}

fn release(uid: u32, n: usize) {
    let mut map = held().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(v) = map.get_mut(&uid) {
        *v = v.saturating_sub(n);
        if *v == 0 {
            map.remove(&uid);
        }
    }
}

/// Descriptors held for `uid` now.
#[cfg(test)]
fn fds_held(uid: u32) -> usize {
    held()
        .lock()
        .map(|m| m.get(&uid).copied().unwrap_or(0))
        .unwrap_or(0)
}

/// The open channels of one connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChannelSlots(Arc<AtomicUsize>);

/// One open channel's place, given back when dropped.
#[derive(Debug)]
pub(crate) struct ChannelSlot(Arc<AtomicUsize>);

impl ChannelSlots {
    /// A place for one more channel, unless [`CHANNELS_MAX`] are open.
    pub(crate) fn take(&self) -> Option<ChannelSlot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < CHANNELS_MAX).then_some(n + 1)
            })
            .ok()
            .map(|_| ChannelSlot(Arc::clone(&self.0)))
    }
}

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which refusals a connection has logged at info level: the first of each kind
/// is, the rest go to debug, so a flood of refused requests is not also a flood
/// of log lines.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    EnvCount = 1,
    EnvBytes = 2,
    Forwards = 4,
    Channels = 8,
    Fds = 16,
    Window = 32,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Notices(Arc<AtomicU32>);

impl Notices {
    /// True the first time `kind` is refused on this connection.
    pub(crate) fn first(&self, kind: Limit) -> bool {
        let bit = kind as u32;
        self.0.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
}

/// Log a refusal: at info the first time per connection and kind, else at debug.
macro_rules! refused {
    ($notices:expr, $kind:expr, $($arg:tt)+) => {
        if $notices.first($kind) {
            tracing::info!($($arg)+);
        } else {
            tracing::debug!($($arg)+);
        }
    };
}
pub(crate) use refused;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_cap_is_a_quarter_of_the_limit() {
        assert_eq!(user_fd_cap_for(524_288), 131_072);
        assert_eq!(user_fd_cap_for(20_000), 5_000);
        assert_eq!(user_fd_cap_for(1024), 256);
    }

    #[test]
    fn leases_count_per_user_and_come_back() {
        // Uids no test user has, so parallel tests do not share them.
        let (a, b) = (3_900_001, 3_900_002);
        let first = FdLease::take_under(a, 6, 10).unwrap();
        let mut second = FdLease::take_under(a, 4, 10).unwrap();
        assert_eq!(
            FdLease::take_under(a, 1, 10).unwrap_err(),
            FdsExhausted { held: 10 }
        );
        // Another user is not affected.
        let other = FdLease::take_under(b, 10, 10).unwrap();
        second.shrink_to(1);
        assert_eq!(fds_held(a), 7);
        let third = FdLease::take_under(a, 3, 10).unwrap();
        drop((first, second, third, other));
        assert_eq!(fds_held(a), 0);
        assert_eq!(fds_held(b), 0);
    }

    #[test]
    fn channel_slots_stop_at_the_cap() {
        let slots = ChannelSlots::default();
        let mut held: Vec<_> = (0..CHANNELS_MAX).map(|_| slots.take().unwrap()).collect();
        assert!(slots.take().is_none());
        held.pop();
        assert!(slots.take().is_some());
    }

    #[test]
    fn each_refusal_kind_is_noticed_once() {
        let n = Notices::default();
        assert!(n.first(Limit::Forwards));
        assert!(!n.first(Limit::Forwards));
        assert!(n.first(Limit::Fds));
        assert!(n.clone().first(Limit::Channels));
        assert!(!n.first(Limit::Channels));
    }
}
