//! Doing one small thing with a user's identity, as sshd's `temporarily_use_uid`:
//! opening a file the user controls or names, creating a socket the user will own.
//!
//! The work runs on a thread of its own whose effective uid, gid and supplementary
//! groups are switched with raw system calls. Those calls change only the calling
//! thread (glibc's wrappers would change every thread of the daemon), so the rest
//! of the daemon stays root while the kernel checks permissions, quotas and socket
//! ownership against the user. With a non-zero effective uid the thread also loses
//! every effective capability, so root's DAC override does not apply either.
//!
//! The caller waits with a deadline. A thread stuck in the kernel (a FUSE file
//! that never answers, a hung NFS mount) is left behind, still holding only the
//! user's identity; a global and a per-user cap on such threads keep one user from
//! exhausting the daemon's threads.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::HostError;

/// Whose identity to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, for group permissions on the user's files.
    pub gids: Vec<u32>,
}

impl From<&super::UserInfo> for Creds {
    fn from(u: &super::UserInfo) -> Creds {
        Creds {
            uid: u.uid,
            gid: u.gid,
            gids: u.gids.clone(),
        }
    }
}

/// Threads that may work as some user at once, whoever they are.
const MAX_THREADS: usize = 64;
/// Of those, threads one user may hold (a stuck one counts until it returns).
const MAX_PER_USER: usize = 4;
/// How long a call waits for a thread when the caps are reached, before it is
/// refused. The caps are for threads stuck in the kernel; ordinary bursts (eight
/// logins of one user at once read eight authorized_keys files) only queue. At
/// once-refusal the benchmark's load generator, 8 logins at a time, lost logins
/// ("key refused") and then every connection to the penalties that followed.
const SLOT_WAIT: Duration = Duration::from_secs(2);

/// Signalled whenever a thread gives its slot back.
static FREED: tokio::sync::Notify = tokio::sync::Notify::const_new();

struct Slots {
    total: usize,
    per_user: HashMap<u32, usize>,
}

fn slots() -> &'static Mutex<Slots> {
    static SLOTS: OnceLock<Mutex<Slots>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        Mutex::new(Slots {
            total: 0,
            per_user: HashMap::new(),
        })
    })
}

/// One thread's claim on the caps, given back when the thread ends.
struct Slot(u32);

impl Slot {
    fn take(uid: u32) -> Result<Slot, HostError> {
        let mut s = slots()
            .lock()
            .map_err(|_| HostError::NotPermitted("identity slots poisoned".into()))?;
        let mine = s.per_user.get(&uid).copied().unwrap_or(0);
        if s.total >= MAX_THREADS || mine >= MAX_PER_USER {
            return Err(HostError::Busy(format!(
                "too many slow file or socket operations in progress for uid {uid}"
            )));
        }
        s.total += 1;
        *s.per_user.entry(uid).or_insert(0) += 1;
        Ok(Slot(uid))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut s) = slots().lock() {
            s.total = s.total.saturating_sub(1);
            if let Some(n) = s.per_user.get_mut(&self.0) {
                *n -= 1;
                if *n == 0 {
                    s.per_user.remove(&self.0);
                }
            }
        }
        FREED.notify_waiters();
    }
}

/// A slot for `uid`, waiting up to [`SLOT_WAIT`] (and `deadline`) for one.
async fn take_waiting(uid: u32, deadline: Duration) -> Result<Slot, HostError> {
    let until = tokio::time::Instant::now() + deadline.min(SLOT_WAIT);
    loop {
        // Registered before the check, so a slot freed in between still wakes us.
        let freed = FREED.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        match Slot::take(uid) {
            Err(HostError::Busy(why)) => {
                if tokio::time::timeout_at(until, freed).await.is_err() {
                    return Err(HostError::Busy(why));
                }
            }
            other => return other,
        }
    }
}

/// [`take_waiting`] for callers without a runtime.
fn take_waiting_blocking(uid: u32, deadline: Duration) -> Result<Slot, HostError> {
    let until = std::time::Instant::now() + deadline.min(SLOT_WAIT);
    loop {
        match Slot::take(uid) {
            Err(HostError::Busy(_)) if std::time::Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Run `f` as `creds` on a thread of its own and wait at most `deadline` for it.
/// When rsshd is not root (it then serves only its own user), `f` runs with the
/// daemon's identity, which is that user's.
pub async fn as_user<T, F>(creds: &Creds, deadline: Duration, f: F) -> Result<T, HostError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let slot = take_waiting(creds.uid, deadline).await?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    start(
        creds,
        slot,
        move |r| {
            let _ = tx.send(r);
        },
        f,
    )?;
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(HostError::NotPermitted("identity thread vanished".into())),
        Err(_) => Err(HostError::TimedOut(deadline)),
    }
}

/// [`as_user`] for callers without a runtime (the PAM helper, the monitor's
/// blocking side).
pub fn as_user_blocking<T, F>(creds: &Creds, deadline: Duration, f: F) -> Result<T, HostError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let slot = take_waiting_blocking(creds.uid, deadline)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    start(
        creds,
        slot,
        move |r| {
            let _ = tx.send(r);
        },
        f,
    )?;
    match rx.recv_timeout(deadline) {
        Ok(r) => r,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(HostError::TimedOut(deadline)),
        Err(_) => Err(HostError::NotPermitted("identity thread vanished".into())),
    }
}

fn start<T, F, R>(creds: &Creds, slot: Slot, reply: R, f: F) -> Result<(), HostError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
    R: FnOnce(Result<T, HostError>) + Send + 'static,
{
    let switch = super::Privilege::current().is_root() && creds.uid != 0;
    let creds = creds.clone();
    let spawned = std::thread::Builder::new()
        .name("rsshd-as-user".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _slot = slot;
            let result = if switch {
                run_switched(&creds, f)
            } else {
                Ok(f())
            };
            reply(result);
        });
    spawned.map(|_| ()).map_err(HostError::Io)
}

/// Switch this thread to `creds`, run `f`, switch back. If the way back fails the
/// thread would go on with the wrong identity in a root daemon: abort instead, as
/// sshd's `restore_uid` fatal()s.
fn run_switched<T>(creds: &Creds, f: impl FnOnce() -> T) -> Result<T, HostError> {
    let saved = thread_ids::save()?;
    if let Err(e) = thread_ids::become_user(creds) {
        thread_ids::restore_or_abort(&saved);
        return Err(e);
    }
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    thread_ids::restore_or_abort(&saved);
    out.map_err(|_| HostError::NotPermitted("work done as the user panicked".into()))
}

/// The raw per-thread credential calls.
#[allow(unsafe_code)]
mod thread_ids {
    use super::{Creds, HostError};

    pub(super) struct Saved {
        egid: libc::gid_t,
        groups: Vec<libc::gid_t>,
    }

    fn os_err(what: &str) -> HostError {
        HostError::Os {
            what: what.to_string(),
            source: nix::Error::last(),
        }
    }

    pub(super) fn save() -> Result<Saved, HostError> {
        // SAFETY: getgroups with size 0 only counts; the second call writes at most
        // `n` entries into a buffer of that length.
        let groups = unsafe {
            let n = libc::getgroups(0, std::ptr::null_mut());
            if n < 0 {
                return Err(os_err("getgroups"));
            }
            let mut g = vec![0 as libc::gid_t; n as usize];
            let m = libc::getgroups(n, g.as_mut_ptr());
            if m < 0 {
                return Err(os_err("getgroups"));
            }
            g.truncate(m as usize);
            g
        };
        // SAFETY: getegid cannot fail.
        let egid = unsafe { libc::getegid() };
        Ok(Saved { egid, groups })
    }

    pub(super) fn become_user(c: &Creds) -> Result<(), HostError> {
        let keep = u32::MAX; // -1: leave that id unchanged
        // SAFETY: raw system calls on plain integers and a buffer of the stated
        // length; each changes only the calling thread's credentials.
        unsafe {
            if libc::syscall(libc::SYS_setgroups, c.gids.len(), c.gids.as_ptr()) != 0 {
                return Err(os_err("setgroups"));
            }
            if libc::syscall(libc::SYS_setresgid, keep, c.gid, keep) != 0 {
                return Err(os_err("setresgid"));
            }
            // The saved uid stays 0, so the thread can come back.
            if libc::syscall(libc::SYS_setresuid, keep, c.uid, keep) != 0 {
                return Err(os_err("setresuid"));
            }
        }
        Ok(())
    }

    pub(super) fn restore_or_abort(s: &Saved) {
        let keep = u32::MAX;
        // SAFETY: as in become_user; the saved uid 0 permits the way back.
        let ok = unsafe {
            libc::syscall(libc::SYS_setresuid, keep, 0u32, keep) == 0
                && libc::syscall(libc::SYS_setresgid, keep, s.egid, keep) == 0
                && libc::syscall(libc::SYS_setgroups, s.groups.len(), s.groups.as_ptr()) == 0
                && libc::geteuid() == 0
        };
        if !ok {
            // Printing is all that is safe here; the process must not go on.
            eprintln!("rsshd: could not restore root identity on a worker thread; aborting");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::Arc;

    fn nobody() -> Creds {
        Creds {
            uid: 65534,
            gid: 65534,
            gids: vec![65534],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_runs_as_the_user_and_only_that_thread_changes() {
        if !nix::unistd::geteuid().is_root() {
            crate::testing::skip("not root; nothing to switch");
            return;
        }
        let ids = as_user(&nobody(), Duration::from_secs(5), || {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
                std::fs::File::open("/etc/shadow").is_ok(),
            )
        })
        .await
        .unwrap();
        assert_eq!(
            ids,
            (65534, 65534, false),
            "shadow must be closed to nobody"
        );
        assert!(nix::unistd::geteuid().is_root(), "the caller is still root");
        let mut s = String::new();
        std::fs::File::open("/proc/self/status")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert!(s.lines().any(|l| l.starts_with("Uid:\t0\t0\t0")), "{s}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_operation_times_out_and_caps_hold() {
        let creds = Creds {
            uid: 4_000_000,
            gid: 4_000_000,
            gids: vec![],
        };
        let gate = Arc::new(std::sync::Barrier::new(MAX_PER_USER + 1));
        for _ in 0..MAX_PER_USER {
            let g = Arc::clone(&gate);
            let r = as_user(&creds, Duration::from_millis(20), move || {
                g.wait();
            })
            .await;
            assert!(matches!(r, Err(HostError::TimedOut(_))), "{r:?}");
        }
        // Every slot of this user is held by a stuck thread: refused once the
        // wait for a slot is over.
        let asked = std::time::Instant::now();
        let r = as_user(&creds, Duration::from_secs(5), || ()).await;
        assert!(matches!(r, Err(HostError::Busy(_))), "{r:?}");
        assert!(asked.elapsed() >= SLOT_WAIT, "{:?}", asked.elapsed());
        // Another user is not affected.
        let other = Creds {
            uid: 4_000_001,
            ..creds.clone()
        };
        as_user(&other, Duration::from_secs(5), || ())
            .await
            .unwrap();
        gate.wait();
        // Once the stuck threads return, their slots come back.
        let end = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match as_user(&creds, Duration::from_secs(5), || ()).await {
                Ok(()) => break,
                Err(_) if std::time::Instant::now() < end => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// More calls of one user at once than it has threads (eight logins reading
    /// their authorized_keys together) queue for a thread; none is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_beyond_the_per_user_cap_queues() {
        let creds = Creds {
            uid: 4_000_002,
            gid: 4_000_002,
            gids: vec![],
        };
        let calls = (0..MAX_PER_USER * 8).map(|i| {
            let creds = creds.clone();
            tokio::spawn(async move {
                as_user(&creds, Duration::from_secs(5), move || {
                    std::thread::sleep(Duration::from_millis(20));
                    i
                })
                .await
            })
        });
        let calls: Vec<_> = calls.collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.expect("task").expect("queued, not refused"), i);
        }
    }

    #[test]
    fn blocking_variant_returns_the_value() {
        let v = as_user_blocking(&nobody(), Duration::from_secs(5), || 41 + 1).unwrap();
        assert_eq!(v, 42);
    }
}
