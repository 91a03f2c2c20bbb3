//! Confinement of the network process (issue 15): the one process that
//! runs tokio and russh for every connection, without root.
//!
//! Two calls, because some steps need one thread and others need the runtime:
//!
//! 1. [`enter`], while the process has a single thread (credentials,
//!    capabilities and `no_new_privs` are per thread; the threads started later
//!    inherit them): `RLIMIT_CORE` 0 and not dumpable, the unprivileged account
//!    looked up (`rsshd`, else `nobody` with a warning), the bounding set dropped,
//!    chroot to an empty root-owned directory, groups, gid and uid changed (all
//!    three ids), a return to root tried and required to fail,
//!    `PR_SET_NO_NEW_PRIVS`, every capability set cleared and checked.
//! 2. [`Entered::lock`], once the tokio runtime's threads exist: `RLIMIT_NPROC` 0
//!    (no thread or process can be created any more; see `blocking_pool`) and the
//!    seccomp filters, on every thread at once (see `filter`).
//!
//! Every step is checked and any failure is an error: the caller must exit, so no
//! half-confined process ever serves a connection. The network process of a
//! split daemon (`daemon::split::net`) applies it, and `rsshd __sandbox-check`
//! (see `check`) on its own for the tests. What it does and does not cover:
//! SECURITY.md, "Network process confinement".

#[allow(unsafe_code)]
mod caps;
#[allow(unsafe_code)]
pub mod check;
mod empty_dir;
#[allow(unsafe_code)]
mod filter;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::unistd::{Gid, Uid};

use super::users::{UserInfo, lookup_user};

/// The account the network process runs as (created by contrib/install.sh).
pub(crate) const SANDBOX_USER: &str = "rsshd";
/// Used, with a warning, where [`SANDBOX_USER`] does not exist (as sshd falls back
/// to nothing: it refuses to start without its `sshd` user; rsshd prefers to
/// keep serving with the account every system has).
pub(crate) const FALLBACK_USER: &str = "nobody";
/// The empty root-owned directory the network process is chrooted to.
pub(crate) const EMPTY_DIR: &str = "/run/rsshd/empty";
/// Set to `1` to report system calls outside the allowlist instead of killing
/// the process (see `filter`): the debugging mode, documented in SECURITY.md.
pub(crate) const DEBUG_ENV: &str = "RSSHD_SANDBOX_DEBUG";

/// Blocking-pool threads started before `RLIMIT_NPROC` becomes 0 and kept for the
/// process's life: `spawn_blocking` keeps working with up to this many calls at
/// once (more wait in tokio's queue) although no thread can be created any more.
pub(crate) const WARM_BLOCKING_THREADS: usize = 4;
/// How long an idle blocking thread lives: long enough never to end (tokio
/// could not start a replacement).
pub(crate) const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What confinement needs to know.
#[derive(Debug, Clone)]
pub(crate) struct SandboxOptions {
    pub user: String,
    pub fallback_user: String,
    pub empty_dir: PathBuf,
    /// Report a forbidden system call on stderr (and fail it) instead of killing
    /// the process.
    pub debug: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            user: SANDBOX_USER.into(),
            fallback_user: FALLBACK_USER.into(),
            empty_dir: EMPTY_DIR.into(),
            debug: std::env::var_os(DEBUG_ENV).is_some_and(|v| v == "1"),
        }
    }
}

/// Why confinement stopped. The process must not go on serving after any of these.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SandboxError {
    #[error("sandbox: {what}: {source}")]
    Os {
        what: &'static str,
        source: nix::Error,
    },
    #[error("sandbox: {0}")]
    Refused(String),
    #[error("sandbox: seccomp filter: {0}")]
    Filter(String),
}

pub(crate) fn os(what: &'static str) -> impl FnOnce(nix::Error) -> SandboxError {
    move |source| SandboxError::Os { what, source }
}

/// A process that went through [`enter`]; [`Entered::lock`] finishes the job.
#[derive(Debug)]
pub(crate) struct Entered {
    pub user: UserInfo,
    /// Things that were weaker than asked but not unsafe, for the caller to log.
    pub warnings: Vec<String>,
    debug: bool,
}

/// The single-threaded half of confinement (see the module comment).
pub(crate) fn enter(opts: &SandboxOptions) -> Result<Entered, SandboxError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(SandboxError::Refused(
            "must start as root to confine itself".into(),
        ));
    }
    let threads = thread_count()?;
    if threads != 1 {
        return Err(SandboxError::Refused(format!(
            "{threads} threads running; confinement needs exactly one"
        )));
    }
    // No core file of a process holding session data, and no ptrace or
    // /proc/PID/mem by another process of the same unprivileged user.
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(os("setrlimit(RLIMIT_CORE)"))?;
    nix::sys::prctl::set_dumpable(false).map_err(os("prctl(PR_SET_DUMPABLE)"))?;

    let mut warnings = Vec::new();
    // NSS needs /etc: look the account up before the chroot.
    let user = identity(opts, &mut warnings)?;
    let dir = empty_dir::open_checked(&opts.empty_dir)?;

    // CAP_SETPCAP is needed to shrink the bounding set: while still root.
    if let Some(w) = caps::drop_bounding_set()? {
        warnings.push(w);
    }
    caps::clear_ambient()?;

    nix::unistd::fchdir(&dir).map_err(os("fchdir(empty dir)"))?;
    nix::unistd::chroot(".").map_err(os("chroot"))?;
    nix::unistd::chdir("/").map_err(os("chdir(/)"))?;
    drop(dir);

    let (uid, gid) = (Uid::from_raw(user.uid), Gid::from_raw(user.gid));
    nix::unistd::setgroups(&[]).map_err(os("setgroups"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(os("setresgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(os("setresuid"))?;
    verify_identity(uid, gid)?;

    nix::sys::prctl::set_no_new_privs().map_err(os("prctl(PR_SET_NO_NEW_PRIVS)"))?;
    if !nix::sys::prctl::get_no_new_privs().map_err(os("prctl(PR_GET_NO_NEW_PRIVS)"))? {
        return Err(SandboxError::Refused("no_new_privs did not stick".into()));
    }
    // setresuid away from root already empties the permitted and effective sets
    // (unless a securebit said otherwise); the inheritable set survives it.
    caps::clear_all()?;

    Ok(Entered {
        user,
        warnings,
        debug: opts.debug,
    })
}

impl Entered {
    /// The multi-threaded half: call it once the runtime's worker threads and its
    /// warm blocking threads exist and have started ([`runtime`]). From here on no
    /// thread or process can be created and only the allowlisted system calls work.
    pub(crate) fn lock(self) -> Result<(), SandboxError> {
        // RLIMIT_NPROC counts the real uid's tasks, threads included: with 0, the
        // kernel refuses every clone() of this unprivileged user (EAGAIN).
        setrlimit(Resource::RLIMIT_NPROC, 0, 0).map_err(os("setrlimit(RLIMIT_NPROC)"))?;
        if getrlimit(Resource::RLIMIT_NPROC).map_err(os("getrlimit(RLIMIT_NPROC)"))? != (0, 0) {
            return Err(SandboxError::Refused("RLIMIT_NPROC did not stick".into()));
        }
        filter::install(self.debug)
    }

    pub(crate) fn debug(&self) -> bool {
        self.debug
    }
}

/// The network process's tokio runtime, ready for [`Entered::lock`]: its worker
/// threads and `warm` blocking threads started, and every one of them past its
/// own start-up (glibc registers rseq and the robust futex list, std sets the
/// signal stack and the thread name: calls the filter does not allow, so they
/// must be over before it goes on; locking right after `build()` lost that race
/// now and then, SIGSYS on rseq). Pass [`WARM_BLOCKING_THREADS`] for `warm`.
pub(crate) fn runtime(warm: usize) -> Result<tokio::runtime::Runtime, SandboxError> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&started);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .on_thread_start(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .map_err(|e| SandboxError::Refused(format!("tokio runtime: {e}")))?;
    if warm > 0 {
        rt.block_on(warm_blocking_pool(warm))?;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while started.load(Ordering::SeqCst) < workers + warm {
        if std::time::Instant::now() > deadline {
            return Err(SandboxError::Refused(
                "runtime threads did not start".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(rt)
}

/// Start `n` blocking threads (all at once, so each is a thread of its own)
/// and wait until they are idle again. They stay: [`runtime`] sets
/// [`BLOCKING_KEEP_ALIVE`].
async fn warm_blocking_pool(n: usize) -> Result<(), SandboxError> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let b = std::sync::Arc::clone(&barrier);
            tokio::task::spawn_blocking(move || {
                b.wait();
            })
        })
        .collect();
    for t in tasks {
        t.await
            .map_err(|e| SandboxError::Refused(format!("warming the blocking pool: {e}")))?;
    }
    Ok(())
}

/// The account: [`SandboxOptions::user`], else the fallback with a warning. Never
/// one with uid or gid 0.
fn identity(opts: &SandboxOptions, warnings: &mut Vec<String>) -> Result<UserInfo, SandboxError> {
    let found = |name: &str| {
        lookup_user(name).map_err(|e| SandboxError::Refused(format!("looking up {name}: {e}")))
    };
    let user = match found(&opts.user)? {
        Some(u) => u,
        None => match found(&opts.fallback_user)? {
            Some(u) => {
                warnings.push(format!(
                    "user {} does not exist (contrib/install.sh creates it); \
                     the network process runs as {} instead",
                    opts.user, opts.fallback_user
                ));
                u
            }
            None => {
                return Err(SandboxError::Refused(format!(
                    "neither {} nor {} exists",
                    opts.user, opts.fallback_user
                )));
            }
        },
    };
    if user.uid == 0 || user.gid == 0 {
        return Err(SandboxError::Refused(format!(
            "user {} has uid {} gid {}: not an unprivileged account",
            user.name, user.uid, user.gid
        )));
    }
    Ok(user)
}

/// All three uids and gids are the account's, no supplementary group is left,
/// and neither root uid nor root gid can be taken back.
fn verify_identity(uid: Uid, gid: Gid) -> Result<(), SandboxError> {
    let r = nix::unistd::getresuid().map_err(os("getresuid"))?;
    let g = nix::unistd::getresgid().map_err(os("getresgid"))?;
    if [r.real, r.effective, r.saved] != [uid; 3] || [g.real, g.effective, g.saved] != [gid; 3] {
        return Err(SandboxError::Refused(
            "uids or gids differ after the change".into(),
        ));
    }
    if !nix::unistd::getgroups()
        .map_err(os("getgroups"))?
        .is_empty()
    {
        return Err(SandboxError::Refused("supplementary groups remain".into()));
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok()
        || nix::unistd::seteuid(Uid::from_raw(0)).is_ok()
    {
        return Err(SandboxError::Refused("root could be regained".into()));
    }
    if nix::unistd::setgid(Gid::from_raw(0)).is_ok() {
        return Err(SandboxError::Refused("gid 0 could be regained".into()));
    }
    Ok(())
}

/// `Threads:` of /proc/self/status.
fn thread_count() -> Result<usize, SandboxError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| SandboxError::Refused(format!("reading /proc/self/status: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| SandboxError::Refused("no Threads: in /proc/self/status".into()))
}

/// For messages: the directory a path names, as given.
pub(crate) fn shown(p: &Path) -> String {
    p.display().to_string()
}
