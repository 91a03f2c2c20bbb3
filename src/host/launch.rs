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
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use super::HostError;
use super::child::Child;

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
    /// A descriptor to become the child's 3 (the PAM helper's control socket).
    /// Every other descriptor is closed in the child, whatever its flags.
    pass: Option<RawFd>,
    /// Lead a new session: a user's program, so that its session id names
    /// exactly its processes.
    new_session: bool,
    /// Lead a new process group in the caller's session (the PAM helper: out of
    /// reach of the daemon's terminal, and never a session leader, so no
    /// terminal a PAM module opens can become its controlling terminal).
    new_group: bool,
    /// Make fd 0 (a PTY slave) the controlling terminal of the new session.
    controlling_tty: bool,
    identity: Option<Identity>,
    /// Enter this directory as the root (`ChrootDirectory`), after the groups and
    /// before the user id change, as sshd does.
    chroot: Option<CString>,
    /// When exec fails, say so on the program's stderr and exit 1 (sshd's
    /// `perror(shell); exit(1)`) instead of failing the start: inside a jail the
    /// session has started as far as the client is concerned.
    exec_failure_to_stderr: bool,
    nofile: Option<(u64, u64)>,
}

/// Why and where the child failed before exec, written by the child into memory
/// it shares with the parent.
struct Failure {
    errno: AtomicI32,
    step: AtomicI32,
}

const STEPS: [&str; 12] = [
    "",
    "dup2",
    "setsid",
    "TIOCSCTTY",
    "setgroups",
    "setgid",
    "setuid",
    "root kept",
    "execve",
    "close_range",
    "setpgid",
    "chroot",
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
            pass: None,
            new_session: false,
            new_group: false,
            controlling_tty: false,
            identity: None,
            chroot: None,
            exec_failure_to_stderr: false,
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

    /// Hand `fd` to the child as its descriptor 3. It must not be 0, 1 or 2
    /// (the daemon keeps those open: see `fds::sanitize_at_start`).
    pub fn pass(mut self, fd: RawFd) -> Launch {
        self.pass = Some(fd);
        self
    }

    pub fn new_session(mut self) -> Launch {
        self.new_session = true;
        self
    }

    pub fn new_group(mut self) -> Launch {
        self.new_group = true;
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

    /// Chroot to `dir` (already checked by `chroot::check`) before the user id
    /// changes; the working directory is then looked up inside it. A failed exec
    /// is reported on the program's stderr (exit 1), as sshd does.
    pub fn chroot(mut self, dir: &Path) -> Result<Launch, HostError> {
        self.chroot = Some(cstring(dir.as_os_str().as_bytes())?);
        self.exec_failure_to_stderr = true;
        Ok(self)
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
///
/// # Safety
/// Only the vfork child of `Launch::start` may call it: `_exit` then ends that
/// child, whose memory is the parent's, without running the daemon's atexit
/// handlers or destructors; in the parent it would end the daemon.
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
        let passed = l.stdio.iter().copied().chain(l.pass);
        for (target, fd) in passed.enumerate() {
            let target = target as RawFd;
            if fd < 0 {
                continue;
            }
            if fd == target {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                let flags = libc::fcntl(target, libc::F_GETFD);
                libc::fcntl(target, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(fd, target) < 0 {
                fail(ctx, 1);
            }
        }
        // Exactly the descriptors meant for the program, as sshd's closefrom:
        // whatever else this process holds (another session's terminal, a
        // descriptor a library opened without close-on-exec, glibc's wtmp one
        // while another thread logs a login) stays behind.
        let first = if l.pass.is_some() { 4 } else { 3 };
        if close_from(first) != 0 {
            fail(ctx, 9);
        }
        if l.new_session && libc::setsid() < 0 {
            fail(ctx, 2);
        }
        if l.new_group && libc::setpgid(0, 0) < 0 {
            fail(ctx, 10);
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
        }
        // sshd's order: groups, chroot, user id. The child has its own root and
        // working directory (no CLONE_FS), so the daemon's stay as they were.
        if let Some(root) = &l.chroot
            && (libc::chdir(root.as_ptr()) != 0
                || libc::chroot(root.as_ptr()) != 0
                || libc::chdir(c"/".as_ptr()) != 0)
        {
            fail(ctx, 11);
        }
        if let Some(id) = &l.identity {
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
        if l.exec_failure_to_stderr {
            exec_failed(l, *libc::__errno_location());
        }
        fail(ctx, 8)
    }
}

/// sshd's `perror(shell); exit(1)` with system calls only: the program, then
/// the C library's words for the usual reasons (no strerror: it may allocate).
///
/// # Safety
/// As `fail`: only the vfork child may call it, after its exec failed.
unsafe fn exec_failed(l: &Launch, errno: c_int) -> ! {
    let why: &[u8] = match errno {
        libc::ENOENT => b"No such file or directory",
        libc::EACCES => b"Permission denied",
        libc::ENOEXEC => b"Exec format error",
        libc::ENOTDIR => b"Not a directory",
        libc::ELOOP => b"Too many levels of symbolic links",
        libc::EISDIR => b"Is a directory",
        libc::ENAMETOOLONG => b"File name too long",
        libc::ETXTBSY => b"Text file busy",
        libc::ENOMEM => b"Cannot allocate memory",
        libc::E2BIG => b"Argument list too long",
        libc::EPERM => b"Operation not permitted",
        libc::ELIBBAD => b"Accessing a corrupted shared library",
        _ => b"cannot execute",
    };
    let program = l.program.as_bytes();
    // SAFETY: writes of buffers that live in the parent's frame, then _exit.
    unsafe {
        for part in [program, b": ", why, b"\n"] {
            libc::write(2, part.as_ptr().cast(), part.len());
        }
        libc::_exit(1)
    }
}

/// Close every descriptor from `first` up, with system calls only (the child
/// of `Launch::start`): close_range(2), or on kernels before 5.9 each number up
/// to the descriptor limit. Returns 0 or -1 with errno set.
fn close_from(first: RawFd) -> c_int {
    // SAFETY: closing descriptors of this process; nothing here allocates.
    unsafe {
        let r = libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0,
        );
        if r == 0 {
            return 0;
        }
        if *libc::__errno_location() != libc::ENOSYS {
            return -1;
        }
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::syscall(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_NOFILE,
            std::ptr::null::<libc::rlimit>(),
            &mut lim as *mut libc::rlimit,
        ) != 0
        {
            return -1;
        }
        let top = lim.rlim_cur.min(i32::MAX as libc::rlim_t) as RawFd;
        for fd in first..top {
            libc::syscall(libc::SYS_close, fd);
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::spawn::ExitOutcome;
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

    /// The child gets exactly 0, 1 and 2 (and 3 when passed), whatever else
    /// this process holds without close-on-exec.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_child_starts_with_exactly_the_descriptors_meant_for_it() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let stray = nix::unistd::dup(&file).unwrap();
        let (out, _) = run(sh("ls /proc/$$/fd; :")).await;
        let fds: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(fds, ["0", "1", "2"], "fd {} leaked", stray.as_raw_fd());
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (out, _) = run(sh("ls /proc/$$/fd; echo passed >&3").pass(w.as_raw_fd())).await;
        drop(w);
        let fds: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(fds, ["0", "1", "2", "3"], "{out}");
        let mut passed = String::new();
        std::fs::File::from(r).read_to_string(&mut passed).unwrap();
        assert_eq!(passed, "passed\n");
    }

    /// `exited` leaves the child a zombie, so its number stays taken until
    /// `reap`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_end_is_seen_before_the_reap() {
        let mut child = sh("exit 3").new_session().start().unwrap();
        assert_eq!(child.exited().await.unwrap(), ExitOutcome::Code(3));
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.pid())).unwrap();
        let state = stat.rsplit_once(')').unwrap().1.split_whitespace().next();
        assert_eq!(state, Some("Z"), "{stat}");
        assert_eq!(child.try_exited().unwrap(), Some(ExitOutcome::Code(3)));
        assert_eq!(child.reap().unwrap(), ExitOutcome::Code(3));
        assert!(!std::path::Path::new(&format!("/proc/{}", child.pid())).exists());
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
