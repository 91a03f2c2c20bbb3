//! The seccomp filters, built with `seccompiler` (rust-vmm, pure Rust: no
//! libseccomp, no -dev package) and installed on every thread at once (TSYNC).
//!
//! Three filters are stacked; the kernel runs them all and the strictest answer
//! wins (kill > trap > errno > allow):
//! - the allowlist: [`ALLOWED`] and the argument rules in [`allowlist`]; any
//!   other system call kills the whole process (as OpenSSH's sandbox), or in the
//!   debugging mode ([`super::DEBUG_ENV`]) raises SIGSYS, whose handler reports the
//!   call on stderr and lets it fail with ENOSYS;
//! - open, openat, openat2 and readlink fail with EACCES instead of killing: the chroot is
//!   empty, so they could only fail anyway, and a library opening a file lazily
//!   (a locale, a /proc or /sys file) then sees an ordinary error and carries on
//!   instead of taking every connection down (OpenSSH's sandbox answers open the
//!   same way);
//! - clone3 fails with ENOSYS, so glibc falls back to clone(2), whose flags a
//!   filter can read: only threads (CLONE_THREAD) pass, and RLIMIT_NPROC 0 refuses
//!   them too; fork, vfork, execve and execveat are not in the list at all.
//!
//! The list was grown from the calls tokio's multi-thread runtime, russh and the
//! socket layer make, as reported by the debugging mode and `strace -f` while the
//! real OpenSSH client logged in to `rsshd __sandbox-check` (see SECURITY.md).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use super::SandboxError;

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// System calls allowed with any arguments, by concern.
const ALLOWED: &[(i64, &str)] = &[
    // Socket and pipe I/O on descriptors that are already open (the listeners
    // and, later, what the monitor passes with SCM_RIGHTS). std's TcpStream reads
    // with recvfrom and writes with sendto; accept4 takes SOCK_CLOEXEC.
    (libc::SYS_read, "read"),
    (libc::SYS_write, "write"),
    (libc::SYS_readv, "readv"),
    // The memory trimmer rereads /proc/self/statm (opened before confinement).
    (libc::SYS_pread64, "pread64"),
    (libc::SYS_writev, "writev"),
    (libc::SYS_recvfrom, "recvfrom"),
    (libc::SYS_sendto, "sendto"),
    (libc::SYS_recvmsg, "recvmsg"),
    (libc::SYS_sendmsg, "sendmsg"),
    (libc::SYS_accept4, "accept4"),
    (libc::SYS_connect, "connect"),
    (libc::SYS_shutdown, "shutdown"),
    (libc::SYS_getsockopt, "getsockopt"),
    (libc::SYS_setsockopt, "setsockopt"),
    (libc::SYS_getsockname, "getsockname"),
    (libc::SYS_getpeername, "getpeername"),
    (libc::SYS_close, "close"),
    // tokio's I/O driver (epoll; the waker is an eventfd written with write).
    (libc::SYS_epoll_ctl, "epoll_ctl"),
    (libc::SYS_epoll_pwait, "epoll_pwait"),
    (libc::SYS_epoll_pwait2, "epoll_pwait2"),
    // Thread parking and timers.
    (libc::SYS_futex, "futex"),
    (libc::SYS_sched_yield, "sched_yield"),
    (libc::SYS_nanosleep, "nanosleep"),
    (libc::SYS_clock_nanosleep, "clock_nanosleep"),
    (libc::SYS_clock_gettime, "clock_gettime"),
    (libc::SYS_clock_getres, "clock_getres"),
    (libc::SYS_gettimeofday, "gettimeofday"),
    // Key exchange randomness (russh, rand).
    (libc::SYS_getrandom, "getrandom"),
    // Memory (the allocator, thread stacks). mmap and mprotect: see allowlist().
    (libc::SYS_munmap, "munmap"),
    (libc::SYS_madvise, "madvise"),
    (libc::SYS_brk, "brk"),
    (libc::SYS_mremap, "mremap"),
    // russh keeps key material in locked buffers (CryptoVec), out of swap.
    (libc::SYS_mlock, "mlock"),
    (libc::SYS_munlock, "munlock"),
    // Signals (tokio's signal driver, std's stack-overflow handler).
    (libc::SYS_rt_sigaction, "rt_sigaction"),
    (libc::SYS_rt_sigprocmask, "rt_sigprocmask"),
    (libc::SYS_rt_sigreturn, "rt_sigreturn"),
    (libc::SYS_sigaltstack, "sigaltstack"),
    (libc::SYS_restart_syscall, "restart_syscall"),
    // Identity of the caller, for logs and abort().
    (libc::SYS_getpid, "getpid"),
    (libc::SYS_gettid, "gettid"),
    // The end.
    (libc::SYS_exit, "exit"),
    (libc::SYS_exit_group, "exit_group"),
    // A panic's backtrace asks for it (the answer is "/").
    (libc::SYS_getcwd, "getcwd"),
    // std's available_parallelism (the network process sizes its pre-auth gate
    // by it): reads this process's own CPU mask.
    (libc::SYS_sched_getaffinity, "sched_getaffinity"),
    // Answered by the errno filters below, not by this one.
    (libc::SYS_openat, "openat"),
    (libc::SYS_openat2, "openat2"),
    (libc::SYS_readlinkat, "readlinkat"),
    (libc::SYS_clone3, "clone3"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_epoll_wait, "epoll_wait"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_open, "open"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_readlink, "readlink"),
];

/// fcntl commands: descriptor and status flags only (no F_SETOWN, no leases),
/// and a close-on-exec duplicate (a `-R` listener is duplicated for each
/// `Accept` so a late answer never lands on a reused descriptor number; the
/// split's forwarding tests died of SIGSYS on it).
const FCNTL_CMDS: &[u64] = &[
    libc::F_DUPFD_CLOEXEC as u64,
    libc::F_GETFD as u64,
    libc::F_SETFD as u64,
    libc::F_GETFL as u64,
    libc::F_SETFL as u64,
];

/// ioctl requests: non-blocking mode, close-on-exec, bytes readable, and a
/// window size for a PTY master the monitor will pass.
const IOCTL_CMDS: &[u64] = &[
    libc::FIONBIO,
    libc::FIOCLEX,
    libc::FIONREAD,
    libc::TIOCSWINSZ,
];

/// Answered with EACCES instead of the allowlist's verdict (see the module
/// comment): path lookups. readlink is here because a panic's backtrace reads
/// /proc/self/exe (RUST_BACKTRACE set): the panic must stay a panic.
const PATH_CALLS: &[i64] = &[
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_readlinkat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_open,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_readlink,
];

fn cond(arg: u8, len: Len, op: Op, value: u64) -> Result<SeccompCondition, SandboxError> {
    SeccompCondition::new(arg, len, op, value).map_err(|e| SandboxError::Filter(e.to_string()))
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SandboxError> {
    SeccompRule::new(conds).map_err(|e| SandboxError::Filter(e.to_string()))
}

/// One rule per allowed value of argument `arg`.
fn one_of(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>, SandboxError> {
    values
        .iter()
        .map(|v| rule(vec![cond(arg, Len::Dword, Op::Eq, *v)?]))
        .collect()
}

/// The allowlist's rules: [`ALLOWED`] plus the calls allowed only with some arguments.
fn allowlist(pid: u32) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SandboxError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|(nr, _)| (*nr, Vec::new())).collect();
    let no_exec = || cond(2, Len::Dword, Op::MaskedEq(libc::PROT_EXEC as u64), 0);
    // No new executable memory: nothing is loaded after start.
    rules.insert(libc::SYS_mmap, vec![rule(vec![no_exec()?])?]);
    rules.insert(libc::SYS_mprotect, vec![rule(vec![no_exec()?])?]);
    // Threads only (and RLIMIT_NPROC 0 refuses those): no fork, no vfork.
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(
            0,
            Len::Qword,
            Op::MaskedEq(thread),
            thread,
        )?])?],
    );
    // Signals to this process only (abort() raises SIGABRT with tgkill).
    let own = u64::from(pid);
    rules.insert(
        libc::SYS_kill,
        vec![rule(vec![cond(0, Len::Dword, Op::Eq, own)?])?],
    );
    rules.insert(
        libc::SYS_tgkill,
        vec![rule(vec![cond(0, Len::Dword, Op::Eq, own)?])?],
    );
    // The kind of a descriptor it holds: tokio checks that a session's pipe
    // descriptor (from the monitor) is a FIFO. fstat on a descriptor, and
    // newfstatat/statx only with AT_EMPTY_PATH (on the descriptor itself; any
    // path would be looked up in the empty root anyway).
    let empty_path = libc::AT_EMPTY_PATH as u64;
    rules.insert(libc::SYS_fstat, Vec::new());
    rules.insert(
        libc::SYS_newfstatat,
        vec![rule(vec![cond(
            3,
            Len::Dword,
            Op::MaskedEq(empty_path),
            empty_path,
        )?])?],
    );
    rules.insert(
        libc::SYS_statx,
        vec![rule(vec![cond(
            2,
            Len::Dword,
            Op::MaskedEq(empty_path),
            empty_path,
        )?])?],
    );
    rules.insert(libc::SYS_fcntl, one_of(1, FCNTL_CMDS)?);
    rules.insert(libc::SYS_ioctl, one_of(1, IOCTL_CMDS)?);
    Ok(rules)
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, SandboxError> {
    let filter = SeccompFilter::new(rules, mismatch, matched, ARCH)
        .map_err(|e| SandboxError::Filter(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SandboxError::Filter(e.to_string()))
}

/// The three programs, in the order they are installed (the allowlist last: it
/// does not allow seccomp(2) itself).
fn programs(pid: u32, debug: bool) -> Result<Vec<BpfProgram>, SandboxError> {
    let errno_for = |calls: &[i64], errno: i32| {
        compile(
            calls.iter().map(|nr| (*nr, Vec::new())).collect(),
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
        )
    };
    let outside = if debug {
        SeccompAction::Trap
    } else {
        SeccompAction::KillProcess
    };
    Ok(vec![
        errno_for(PATH_CALLS, libc::EACCES)?,
        errno_for(&[libc::SYS_clone3], libc::ENOSYS)?,
        compile(allowlist(pid)?, outside, SeccompAction::Allow)?,
    ])
}

/// Install the filters on every thread of the process.
pub(super) fn install(debug: bool) -> Result<(), SandboxError> {
    let programs = programs(std::process::id(), debug)?;
    if debug {
        report_violations()?;
    }
    for p in &programs {
        seccompiler::apply_filter_all_threads(p)
            .map_err(|e| SandboxError::Filter(e.to_string()))?;
    }
    Ok(())
}

/// The debugging mode's SIGSYS handler: one line on stderr per forbidden call.
fn report_violations() -> Result<(), SandboxError> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::SigAction(on_sigsys),
        SaFlags::SA_SIGINFO | SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler is async-signal-safe: it formats into a stack buffer
    // and calls write(2), nothing else (no allocation, no lock).
    unsafe { sigaction(Signal::SIGSYS, &action) }.map_err(super::os("sigaction(SIGSYS)"))?;
    Ok(())
}

/// Offset of `si_syscall` in a 64-bit `siginfo_t` for SIGSYS: signo, errno and
/// code (3 x 4 bytes) padded to 16, then `_call_addr` (8 bytes).
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // The kernel rolls a trapped call back, leaving its number where the
    // result goes: a trapped fork() would "return" 57. Make it fail with ENOSYS.
    let enosys = -libc::c_long::from(libc::ENOSYS);
    // SAFETY: for an SA_SIGINFO handler the third argument is the interrupted
    // thread's ucontext_t, which the kernel restores on return; the result
    // register is rax on x86_64 and x0 on aarch64.
    unsafe {
        let uc = ctx.cast::<libc::ucontext_t>();
        #[cfg(target_arch = "x86_64")]
        {
            (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] = enosys;
        }
        #[cfg(target_arch = "aarch64")]
        {
            (*uc).uc_mcontext.regs[0] = enosys as u64;
        }
    }
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers, and
    // for SIGSYS from seccomp it fills the `_sigsys` member, whose `_syscall`
    // int sits at SI_SYSCALL_OFFSET on every 64-bit Linux architecture.
    let nr = unsafe {
        std::ptr::read_unaligned((info as *const u8).add(SI_SYSCALL_OFFSET).cast::<i32>())
    };
    let mut buf = [0u8; 96];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        for b in bytes {
            if len < buf.len() {
                buf[len] = *b;
                len += 1;
            }
        }
    };
    put(b"rsshd: sandbox: unexpected system call ");
    let mut digits = [0u8; 12];
    let mut n = i64::from(nr).unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    put(&digits[i..]);
    put(b" (allowed in debugging mode: it fails with ENOSYS)\n");
    // SAFETY: write(2) is async-signal-safe; `buf[..len]` is initialised.
    unsafe { libc::write(2, buf.as_ptr().cast(), len) };
}

/// The allowlist's names, for the tests.
#[cfg(test)]
pub(crate) fn allowed_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = ALLOWED.iter().map(|(_, n)| *n).collect();
    v.extend([
        "mmap", "mprotect", "clone", "kill", "tgkill", "fcntl", "ioctl",
    ]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile() {
        for debug in [false, true] {
            let p = programs(1234, debug).expect("compile");
            assert_eq!(p.len(), 3);
            assert!(p.iter().all(|p| !p.is_empty()));
        }
    }

    #[test]
    fn nothing_that_spawns_or_escalates_is_listed() {
        let names = allowed_names();
        for bad in [
            "execve",
            "execveat",
            "fork",
            "vfork",
            "ptrace",
            "setuid",
            "setresuid",
            "socket",
            "chroot",
            "mount",
            "unshare",
            "setns",
            "bpf",
            "seccomp",
            "prctl",
        ] {
            assert!(!names.contains(&bad), "{bad} must not be allowed");
        }
    }
}
