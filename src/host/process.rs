//! Signals and hang-ups that reach a session's own processes and nothing else.
//!
//! rsshd signals as root, so a number that a session's process had must never
//! lead a signal to a process that took the number over. Two kernel facts make
//! that possible without a race:
//!
//! - A pid number stays taken while its process is alive or an unreaped zombie,
//!   and while any process still uses it as its process group or session id.
//!   A session's leader is our child (the daemon's, or the PAM helper's), so as
//!   long as we have not reaped it, its number names only its own session and
//!   process group: `killpg(leader)` and "every process whose session id is the
//!   leader's" are safe exactly until the reap. [`ProcessKiller`] makes the reap
//!   wait for any signalling in progress and refuses signals after it.
//! - The other members of a session are found by number in /proc. Each is
//!   pinned with a pidfd, then its session id is checked again: if the number
//!   changed hands before the pin, the pinned process fails the check; if the
//!   pinned process ends after the check, `pidfd_send_signal` reaches nobody.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::pam::{Link, ToHelper};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Grace between SIGHUP and SIGKILL when a session is hung up.
pub(crate) const HANGUP_GRACE: Duration = Duration::from_secs(2);
/// `SessionCleanup hangup`: how long a session ended by a lost connection may
/// take to end on its own, once its input and output are closed, before what is
/// left of it gets SIGHUP (see [`ProcessKiller::hang_up_lost`]).
pub(crate) const LOST_SETTLE: Duration = Duration::from_secs(1);
/// How often a hang-up looks whether the session is empty yet.
const HANGUP_POLL: Duration = Duration::from_millis(50);

/// A pidfd for `pid` (close-on-exec, as pidfd_open always makes it).
pub(crate) fn pidfd_open(pid: i32) -> Result<OwnedFd, nix::Error> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Signal the process `pidfd` refers to; it fails with ESRCH once that process
/// is gone, whoever has its number by then.
fn pidfd_send_signal(pidfd: &OwnedFd, sig: Signal) -> Result<(), nix::Error> {
    // SAFETY: a valid pidfd, a valid signal, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r != 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// Send `sigs` to process `pid` if it is in session `sid`, pinned (see the
/// module comment). The caller has not reaped the session's leader.
fn signal_member(pid: i32, sid: i32, sigs: &[Signal]) {
    let in_session = || nix::unistd::getsid(Some(Pid::from_raw(pid))) == Ok(Pid::from_raw(sid));
    match pidfd_open(pid) {
        Ok(pinned) => {
            if in_session() {
                for sig in sigs {
                    let _ = pidfd_send_signal(&pinned, *sig);
                }
            }
        }
        // Kernels before 5.3 have no pidfd_open: check and signal by number,
        // which leaves the race this module exists to close.
        Err(nix::Error::ENOSYS) => {
            if in_session() {
                for sig in sigs {
                    let _ = kill(Pid::from_raw(pid), *sig);
                }
            }
        }
        // Gone already.
        Err(_) => {}
    }
}

/// Send `sigs` to every live process of session `sid`; returns how many there
/// were. The caller has not reaped the session's leader (`sid` is its pid).
pub(crate) fn signal_session(sid: i32, sigs: &[Signal]) -> usize {
    let members = session_members(sid);
    for pid in &members {
        signal_member(*pid, sid, sigs);
    }
    members.len()
}

/// SIGHUP (and SIGCONT, so stopped jobs see it) to every process of session
/// `sid`; after `grace`, SIGKILL to whatever is left. True if the session was
/// found empty. The caller has not reaped the leader.
async fn hang_up_async(sid: i32, grace: Duration) -> bool {
    if signal_session(sid, &[Signal::SIGHUP, Signal::SIGCONT]) == 0 {
        return true;
    }
    let end = tokio::time::Instant::now() + grace;
    loop {
        tokio::time::sleep(HANGUP_POLL).await;
        if session_members(sid).is_empty() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            signal_session(sid, &[Signal::SIGKILL]);
            return false;
        }
    }
}

/// What the daemon knows of a session's leader.
#[derive(Debug, Default)]
struct State {
    /// Its end was observed (it may still be an unreaped zombie).
    exited: bool,
    /// Reaped, or about to be: nothing may be signalled by its number any more.
    reaped: bool,
    /// Hang-ups in progress, which the reap waits for.
    busy: u32,
    /// The session was found empty: nothing can join an empty session, so later
    /// hang-ups skip the /proc scan.
    over: bool,
    /// The hang-up for a lost connection was sent (it is sent once).
    lost: bool,
}

/// Who signals the session's processes.
#[derive(Debug)]
enum Target {
    /// The leader is our child and leads the session itself: we do.
    Direct,
    /// With `UsePAM yes` the connection's PAM helper runs the program in a
    /// session of its own and signals it on our request; the helper itself is
    /// never signalled.
    Helper { link: Arc<Link>, id: u32 },
}

struct Shared {
    /// The session leader, whose pid is the session and group id.
    leader: i32,
    target: Target,
    state: Mutex<State>,
    changed: tokio::sync::Notify,
    /// The host's copy of the master side of the session's terminal, if it has
    /// one: it keeps the terminal open until the session's end (see
    /// [`ProcessKiller::close_terminal`]), whatever the caller's copy does.
    terminal: Mutex<Option<OwnedFd>>,
}

/// Signals a session's processes; cheap to clone into tasks.
#[derive(Clone)]
pub(crate) struct ProcessKiller(Arc<Shared>);

impl std::fmt::Debug for ProcessKiller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessKiller")
            .field("leader", &self.0.leader)
            .field("target", &self.0.target)
            .finish_non_exhaustive()
    }
}

/// A hang-up in progress: the reap waits until it is dropped.
struct Busy(ProcessKiller);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.state().busy -= 1;
        self.0.0.changed.notify_waiters();
    }
}

impl ProcessKiller {
    /// For a leader that is our child and leads the session itself.
    pub(crate) fn session(leader: i32) -> Self {
        Self::new(leader, Target::Direct)
    }

    /// For program `id` of the PAM helper behind `link`, whose pid is `leader`.
    pub(crate) fn helper(leader: i32, link: Arc<Link>, id: u32) -> Self {
        Self::new(leader, Target::Helper { link, id })
    }

    fn new(leader: i32, target: Target) -> Self {
        ProcessKiller(Arc::new(Shared {
            leader,
            target,
            state: Mutex::new(State::default()),
            changed: tokio::sync::Notify::new(),
            terminal: Mutex::new(None),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under every update, so a panic elsewhere
        // does not make it unusable.
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count a hang-up in progress, unless the leader is reaped (or about to
    /// be) or the session was found empty. Counted at once, not when the
    /// returned hang-up first runs, so that a reap asked for right after cannot
    /// overtake it.
    fn begin_work(&self) -> Option<Busy> {
        let mut state = self.state();
        if state.reaped || state.over || self.0.leader <= 0 {
            return None;
        }
        state.busy += 1;
        Some(Busy(self.clone()))
    }

    /// The leader's pid while it has not exited (so the number is still its).
    pub(crate) fn live_leader(&self) -> Option<i32> {
        let state = self.state();
        (!state.exited && !state.reaped && self.0.leader > 0).then_some(self.0.leader)
    }

    /// Send `sig` to the program's process group (a client's `signal` request),
    /// as sshd's killpg; false if the program has ended (sshd refuses then too).
    pub(crate) fn signal(&self, sig: Signal) -> bool {
        let state = self.state();
        if state.exited || state.reaped || self.0.leader <= 0 {
            return false;
        }
        match &self.0.target {
            Target::Helper { link, id } => link.command(ToHelper::Signal {
                id: *id,
                signal: sig as i32,
            }),
            // Under the lock, so the reap cannot come between the check and this.
            Target::Direct => killpg(Pid::from_raw(self.0.leader), sig).is_ok(),
        }
    }

    /// `SessionCleanup kill`: SIGHUP (and SIGCONT) to every process of the
    /// session; after `grace`, SIGKILL to whatever is left. A PAM helper is asked
    /// to do this for its program's session. The hang-up counts from this call:
    /// a reap asked for before the returned future runs still waits for it.
    pub(crate) fn hang_up(&self, grace: Duration) -> impl Future<Output = ()> + Send + 'static {
        let work = match &self.0.target {
            Target::Helper { link, id } => {
                if !self.state().reaped {
                    link.command(ToHelper::Kill {
                        id: *id,
                        grace_ms: grace.as_millis() as u64,
                    });
                }
                None
            }
            Target::Direct => self.begin_work(),
        };
        async move {
            let Some(work) = work else { return };
            let empty = hang_up_async(work.0.0.leader, grace).await;
            work.0.state().over |= empty;
        }
    }

    /// `SessionCleanup hangup` after a lost connection or a lifetime limit: once
    /// the program has ended, or after `settle`, SIGHUP and SIGCONT to every
    /// process left in the session, once; never SIGKILL, so what ignores SIGHUP
    /// (`nohup`) keeps running. The wait lets programs that act on their closed
    /// input finish undisturbed: rsync keeps its `--partial` file 5 ms after its
    /// input closes, but its SIGHUP handler first sleeps 400 ms.
    pub(crate) fn hang_up_lost(
        &self,
        settle: Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        let first = !std::mem::replace(&mut self.state().lost, true);
        let work = match (&self.0.target, first) {
            (_, false) => None,
            (Target::Helper { link, id }, true) => {
                if !self.state().reaped {
                    link.command(ToHelper::HangUp { id: *id });
                }
                None
            }
            (Target::Direct, true) => self.begin_work(),
        };
        async move {
            let Some(work) = work else { return };
            let _ = tokio::time::timeout(settle, work.0.until(|s| s.exited)).await;
            if signal_session(work.0.0.leader, &[Signal::SIGHUP, Signal::SIGCONT]) == 0 {
                work.0.state().over = true;
            }
        }
    }

    /// The session ended normally under `SessionCleanup hangup`: a PAM helper
    /// is told, so that the connection's end leaves the session alone (ours
    /// is never hung up after a normal end; see `connection::cleanup`).
    pub(crate) fn leave(&self) {
        if let Target::Helper { link, id } = &self.0.target {
            link.command(ToHelper::Leave { id: *id });
        }
    }

    /// Give the session's terminal to this killer, which holds it until
    /// [`ProcessKiller::close_terminal`].
    pub(crate) fn set_terminal(&self, master: OwnedFd) {
        *self.0.terminal.lock().unwrap_or_else(|p| p.into_inner()) = Some(master);
    }

    /// Let go of the session's terminal. Once the network side has closed its
    /// copy too, the master is closed and the kernel hangs the terminal up,
    /// signalling its session as a closed terminal does (as sshd's
    /// `session_pty_cleanup`).
    pub(crate) fn close_terminal(&self) {
        self.0
            .terminal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Wait until `done` holds for the state.
    async fn until(&self, done: impl Fn(&mut State) -> bool) {
        loop {
            let changed = self.0.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(&mut self.state()) {
                return;
            }
            changed.await;
        }
    }

    /// The leader has ended (it is not reaped yet): no more client signals.
    pub(crate) fn exited(&self) {
        self.state().exited = true;
        self.0.changed.notify_waiters();
    }

    /// Wait for hang-ups in progress, then mark the leader reaped: the caller
    /// reaps it next, and nothing is signalled by its number after this. A PAM
    /// helper's program is released to the helper, which reaps it.
    pub(crate) async fn begin_reap(&self) {
        self.until(|s| {
            if s.busy == 0 {
                s.reaped = true;
            }
            s.reaped
        })
        .await;
        self.released();
    }

    /// As [`ProcessKiller::begin_reap`] without a runtime: nothing else can be
    /// signalling then.
    pub(crate) fn begin_reap_now(&self) {
        self.state().reaped = true;
        self.released();
    }

    fn released(&self) {
        self.0.changed.notify_waiters();
        if let Target::Helper { link, id } = &self.0.target {
            link.command(ToHelper::Release { id: *id });
        }
    }
}

/// Live (non-zombie) processes whose session id is `sid`.
///
/// /proc lists the pids, and getsid(2) asks each one's session: a syscall, where
/// reading every /proc/PID/stat cost about 1.5 ms per connection on a quiet host
/// (the kernel formats 52 fields for each). Only the few matches have their stat
/// read, to leave zombies out: a zombie cannot be signalled away.
pub(crate) fn session_members(sid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if nix::unistd::getsid(Some(Pid::from_raw(pid))) != Ok(Pid::from_raw(sid)) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the parenthesised command name: state ppid pgrp session ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next();
        let session = f.nth(2).and_then(|s| s.parse::<i32>().ok());
        if session == Some(sid) && state != Some("Z") {
            out.push(pid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::launch::Launch;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::path::Path;

    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
            .unwrap_or(false)
    }

    fn wait_gone(pid: i32) -> bool {
        for _ in 0..200 {
            if !alive(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// A process found by number is signalled only if, once pinned, it is in
    /// the session.
    #[test]
    fn only_members_of_the_session_are_signalled() {
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = sleeper.id() as i32;
        let ours = nix::unistd::getsid(None).unwrap().as_raw();
        // Its number is no session's id but its own: not a member of `pid`.
        signal_member(pid, pid, &[Signal::SIGKILL]);
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            sleeper.try_wait().unwrap().is_none(),
            "signalled outside the session"
        );
        signal_member(pid, ours, &[Signal::SIGKILL]);
        let status = sleeper.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    /// The daemon's path: the leader's end is seen, the session's background
    /// job is hung up while the leader is still unreaped, client signals are
    /// refused from the end on, and the reap comes last.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_is_hung_up_before_its_leader_is_reaped() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let mut child = Launch::new(
            Path::new("/bin/sh"),
            &[
                "sh".into(),
                "-c".into(),
                "sleep 100 >/dev/null 2>&1 & echo $!".into(),
            ],
            &[("PATH".into(), "/usr/bin:/bin".into())],
        )
        .unwrap()
        .stdio([-1, w.as_raw_fd(), -1])
        .new_session()
        .start()
        .unwrap();
        drop(w);
        let leader = child.pid() as i32;
        let killer = ProcessKiller::session(leader);
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        let job: i32 = out.trim().parse().unwrap();
        child.exited().await.unwrap();
        killer.exited();
        assert!(!killer.signal(Signal::SIGTERM), "a signal after the end");
        assert!(alive(job));
        assert_eq!(session_members(leader), vec![job]);
        killer.hang_up(Duration::from_secs(2)).await;
        assert!(wait_gone(job), "the background job survived the hang-up");
        // The leader is still a zombie: its number is still taken.
        assert!(Path::new(&format!("/proc/{leader}")).exists());
        killer.begin_reap().await;
        child.reap().unwrap();
        assert!(!Path::new(&format!("/proc/{leader}")).exists());
        // Nothing is signalled by the number after the reap.
        killer.hang_up(Duration::from_secs(2)).await;
        assert!(!killer.signal(Signal::SIGTERM));
    }
}
