//! Starting a session's program without copying the daemon.
//!
//! fork(2) copies the caller's page tables and write-protects all of its memory.
//! rsshd is one process holding every connection, so that cost grows with the
//! number of connections: with 10,000 idle connections (550 MB resident) each
//! `ssh host true` cost 57 ms of server CPU instead of 2 ms. Like glibc's
//! posix_spawn, the child here shares the daemon's memory (CLONE_VM) on a stack
//! of its own, and the calling thread waits (CLONE_VFORK) until it has exec'd.
//! posix_spawn itself cannot be used: it cannot switch users.
//!
//! Sharing memory shapes the child's code: it only makes system calls on data
//! prepared beforehand. It allocates nothing, takes no lock and changes its
//! identity with raw system calls, because glibc's setuid() and setgroups()
//! would apply the change to every thread of the daemon (they broadcast to the
//! process's threads, and the child sees the daemon's thread list).

use std::ffi::{CString, c_char, c_int, c_void};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::io::unix::AsyncFd;

use super::HostError;
use super::spawn::ExitOutcome;

/// Identity for the child to assume before exec.
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
}

/// Everything the child needs, in the shapes system calls take.
pub struct Launch {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
    /// Descriptors to become the child's 0, 1 and 2.
    stdio: [RawFd; 3],
    /// Lead a new session (the daemon's children); the PAM helper's child stays
    /// in the helper's session, whose hang-up must reach it.
    new_session: bool,
    /// Make fd 0 (a PTY slave) the controlling terminal of the new session.
    controlling_tty: bool,
    identity: Option<Identity>,
    nofile: Option<(u64, u64)>,
}

/// Why and where the child failed before exec, written by the child into memory
/// it shares with the parent.
struct Failure {
    errno: AtomicI32,
    step: AtomicI32,
}

const STEPS: [&str; 9] = [
    "",
    "dup2",
    "setsid",
    "TIOCSCTTY",
    "setgroups",
    "setgid",
    "setuid",
    "root kept",
    "execve",
];

/// A NUL in a name, argument or variable cannot reach exec.
fn cstring(s: impl Into<Vec<u8>>) -> Result<CString, HostError> {
    CString::new(s).map_err(|_| HostError::NotPermitted("NUL byte in a command or variable".into()))
}

impl Launch {
    pub fn new(
        program: &Path,
        argv: &[String],
        env: &[(String, String)],
    ) -> Result<Launch, HostError> {
        Ok(Launch {
            program: cstring(program.as_os_str().as_bytes())?,
            argv: argv
                .iter()
                .map(|a| cstring(a.as_bytes()))
                .collect::<Result<_, _>>()?,
            envp: env
                .iter()
                .map(|(k, v)| cstring(format!("{k}={v}")))
                .collect::<Result<_, _>>()?,
            cwd: None,
            stdio: [-1; 3],
            new_session: false,
            controlling_tty: false,
            identity: None,
            nofile: None,
        })
    }

    /// Work in `dir` (falling back to `/` when the new identity cannot enter it).
    pub fn cwd(mut self, dir: &Path) -> Result<Launch, HostError> {
        self.cwd = Some(cstring(dir.as_os_str().as_bytes())?);
        Ok(self)
    }

    pub fn stdio(mut self, fds: [RawFd; 3]) -> Launch {
        self.stdio = fds;
        self
    }

    pub fn new_session(mut self) -> Launch {
        self.new_session = true;
        self
    }

    /// Implies a new session.
    pub fn controlling_tty(mut self) -> Launch {
        self.new_session = true;
        self.controlling_tty = true;
        self
    }

    pub fn identity(mut self, id: Identity) -> Launch {
        self.identity = Some(id);
        self
    }

    pub fn nofile(mut self, limit: Option<(u64, u64)>) -> Launch {
        self.nofile = limit;
        self
    }

    /// Start the child; returns once it has exec'd (or failed).
    pub fn start(&self) -> Result<Child, HostError> {
        let argv = null_terminated(&self.argv);
        let envp = null_terminated(&self.envp);
        let gids: Vec<libc::gid_t> = self
            .identity
            .as_ref()
            .map(|i| i.gids.clone())
            .unwrap_or_default();
        let failure = Failure {
            errno: AtomicI32::new(0),
            step: AtomicI32::new(0),
        };
        let ctx = ChildContext {
            launch: self,
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            gids: &gids,
            failure: &failure,
        };
        // The child's stack; it is only used until exec.
        let mut stack = vec![0u8; STACK_SIZE];
        // SAFETY: the stack outlives the child's use of it (CLONE_VFORK returns
        // only after exec or exit), its top is 16-byte aligned as the ABI wants,
        // and everything `ctx` points to lives on this frame until then.
        let pid = unsafe {
            let top = stack.as_mut_ptr().add(STACK_SIZE) as usize & !15;
            // No signal handler of the daemon may run on the child's stack
            // before the child has reset them.
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let pid = libc::clone(
                child_main,
                top as *mut c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                &ctx as *const ChildContext as *mut c_void,
            );
            let err = std::io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            if pid < 0 {
                return Err(HostError::Io(err));
            }
            pid
        };
        drop(stack);
        let step = failure.step.load(Ordering::Acquire);
        if step != 0 {
            // The child exited with 127; reap it before reporting.
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            let errno = failure.errno.load(Ordering::Acquire);
            let what = STEPS.get(step as usize).copied().unwrap_or("start");
            return Err(HostError::Os {
                what: format!("{what} for {}", self.program.to_string_lossy()),
                source: nix::Error::from_raw(errno),
            });
        }
        Ok(Child::new(pid))
    }
}

const STACK_SIZE: usize = 64 * 1024;

/// The NULL-terminated pointer array execve takes.
fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

struct ChildContext<'a> {
    launch: &'a Launch,
    argv: *const *const c_char,
    envp: *const *const c_char,
    gids: &'a [libc::gid_t],
    failure: &'a Failure,
}

/// Record the failed step and leave without running any of the daemon's exit code.
unsafe fn fail(ctx: &ChildContext, step: i32) -> ! {
    let errno = std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    ctx.failure.errno.store(errno, Ordering::Release);
    ctx.failure.step.store(step, Ordering::Release);
    // SAFETY: _exit ends only this child.
    unsafe { libc::_exit(127) }
}

/// The kernel's `struct sigaction` on x86-64 and aarch64 (not glibc's).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// The child: system calls only (see the module comment).
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's ChildContext, alive until we exec or exit.
    let ctx = unsafe { &*(arg as *const ChildContext) };
    let l = ctx.launch;
    // SAFETY: plain system calls on memory prepared by the parent.
    unsafe {
        // Signals the daemon handles or ignores go back to their defaults.
        // The raw call: glibc's sigaction refuses the two signals it keeps for
        // itself, which the daemon may have inherited ignored.
        let default = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
        for (target, fd) in l.stdio.iter().enumerate() {
            let target = target as RawFd;
            if *fd < 0 {
                continue;
            }
            if *fd == target {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                let flags = libc::fcntl(target, libc::F_GETFD);
                libc::fcntl(target, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(*fd, target) < 0 {
                fail(ctx, 1);
            }
        }
        if l.new_session && libc::setsid() < 0 {
            fail(ctx, 2);
        }
        if l.controlling_tty && libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
            fail(ctx, 3);
        }
        if let Some((soft, hard)) = l.nofile {
            let lim = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        if let Some(id) = &l.identity {
            if libc::syscall(libc::SYS_setgroups, ctx.gids.len(), ctx.gids.as_ptr()) != 0 {
                fail(ctx, 4);
            }
            if libc::syscall(libc::SYS_setgid, id.gid) != 0 {
                fail(ctx, 5);
            }
            if libc::syscall(libc::SYS_setuid, id.uid) != 0 {
                fail(ctx, 6);
            }
            // As sshd: root must be gone for good.
            if id.uid != 0 && libc::syscall(libc::SYS_setuid, 0) == 0 {
                *libc::__errno_location() = libc::EPERM;
                fail(ctx, 7);
            }
        }
        if let Some(dir) = &l.cwd
            && libc::chdir(dir.as_ptr()) != 0
        {
            libc::chdir(c"/".as_ptr());
        }
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(l.program.as_ptr(), ctx.argv, ctx.envp);
        fail(ctx, 8)
    }
}

/// A started child, reaped through a pidfd so no SIGCHLD handling is needed.
pub struct Child {
    pid: i32,
    reaped: bool,
}

impl Child {
    fn new(pid: i32) -> Child {
        Child { pid, reaped: false }
    }

    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Wait for the child to end, reaping it.
    pub async fn wait(&mut self) -> Result<ExitOutcome, HostError> {
        let outcome = match pidfd(self.pid) {
            Some(fd) => {
                // SAFETY: the AsyncFd owns the pidfd and deregisters it before
                // closing it.
                let fd = unsafe { AsyncFd::register(fd) }
                    .map_err(|e| HostError::Io(std::io::Error::other(e.to_string())))?;
                loop {
                    let mut ready = fd.readable().await.map_err(HostError::Io)?;
                    match reap(self.pid, true)? {
                        Some(o) => break o,
                        None => ready.clear_ready(),
                    }
                }
            }
            None => {
                let pid = self.pid;
                tokio::task::spawn_blocking(move || reap(pid, false))
                    .await
                    .map_err(|e| HostError::Io(std::io::Error::other(e)))??
                    .unwrap_or(ExitOutcome::Code(255))
            }
        };
        self.reaped = true;
        Ok(outcome)
    }
}

impl Child {
    /// Wait for the child to end without a runtime (the PAM session helper).
    pub fn wait_blocking(&mut self) -> Result<ExitOutcome, HostError> {
        let outcome = reap(self.pid, false)?.unwrap_or(ExitOutcome::Code(255));
        self.reaped = true;
        Ok(outcome)
    }
}

impl Drop for Child {
    /// A child nobody waited for is still reaped, so it leaves no zombie.
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let pid = self.pid;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = Child::new(pid).wait().await;
                });
            }
            Err(_) => {
                std::thread::spawn(move || reap(pid, false));
            }
        }
    }
}

fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// waitpid for `pid`; `None` if it is still running (only with `nohang`).
fn reap(pid: i32, nohang: bool) -> Result<Option<ExitOutcome>, HostError> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let flags = nohang.then_some(WaitPidFlag::WNOHANG);
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), flags) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(ExitOutcome::Code(code))),
            Ok(WaitStatus::Signaled(_, sig, core_dumped)) => {
                return Ok(Some(ExitOutcome::Signal {
                    name: sig.as_str().trim_start_matches("SIG").to_string(),
                    core_dumped,
                }));
            }
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                return Err(HostError::Os {
                    what: format!("waitpid {pid}"),
                    source: e,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sh(script: &str) -> Launch {
        Launch::new(
            Path::new("/bin/sh"),
            &["sh".into(), "-c".into(), script.into()],
            &[("PATH".into(), "/usr/bin:/bin".into())],
        )
        .unwrap()
    }

    /// Run `launch` with stdout to a pipe; its output and how it ended.
    async fn run(launch: Launch) -> (String, ExitOutcome) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let mut child = launch
            .stdio([-1, w.as_raw_fd(), w.as_raw_fd()])
            .new_session()
            .start()
            .unwrap();
        drop(w);
        let outcome = child.wait().await.unwrap();
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        (out, outcome)
    }

    use std::os::fd::AsRawFd;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exit_codes_signals_and_a_new_session() {
        let (out, outcome) = run(sh("echo $$ $(ps -o sid= -p $$); exit 7")).await;
        assert_eq!(outcome, ExitOutcome::Code(7));
        let ids: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(ids.len(), 2, "{out}");
        assert_eq!(ids[0], ids[1], "the child leads its own session");
        let (_, outcome) = run(sh("kill -TERM $$")).await;
        assert_eq!(
            outcome,
            ExitOutcome::Signal {
                name: "TERM".into(),
                core_dumped: false
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn environment_is_exactly_the_one_given_and_signals_are_default() {
        let (out, _) = run(sh("env | sort; grep -E '^Sig(Blk|Ign)' /proc/self/status")).await;
        assert!(out.contains("PATH=/usr/bin:/bin"), "{out}");
        assert!(!out.contains("HOME="), "{out}");
        assert!(out.contains("SigBlk:\t0000000000000000"), "{out}");
        assert!(out.contains("SigIgn:\t0000000000000000"), "{out}");
    }

    #[tokio::test]
    async fn a_failed_exec_names_the_step() {
        let err = Launch::new(Path::new("/nonexistent/prog"), &["prog".into()], &[])
            .unwrap()
            .start()
            .err()
            .expect("exec must fail");
        assert!(err.to_string().contains("execve"), "{err}");
    }

    /// The child switches identity with raw system calls: glibc's wrappers would
    /// have switched every thread of this (the daemon's) process too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn identity_switch_stays_in_the_child() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: switching users needs root");
            return;
        }
        let launch = sh("id -u; id -g; id -G; pwd")
            .cwd(Path::new("/root"))
            .unwrap()
            .identity(Identity {
                uid: 65534,
                gid: 65534,
                gids: vec![65534],
            });
        let (out, outcome) = run(launch).await;
        assert_eq!(outcome, ExitOutcome::Code(0));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..3], ["65534", "65534", "65534"], "{out}");
        // /root is closed to nobody: the child falls back to /.
        assert_eq!(lines[3], "/", "{out}");
        assert!(nix::unistd::geteuid().is_root());
        let other = std::thread::spawn(|| nix::unistd::geteuid().is_root())
            .join()
            .unwrap();
        assert!(other, "another thread of the daemon is still root");
        let worker = tokio::spawn(async { nix::unistd::geteuid().is_root() })
            .await
            .unwrap();
        assert!(worker, "the runtime's workers are still root");
    }
}
