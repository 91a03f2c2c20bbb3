//! The one way rsshd reads a file that a user controls or names (authorized_keys
//! files, `~/.ssh/environment`): with the user's identity, by descriptor, without
//! blocking, size-capped, off the async workers, within a deadline.
//!
//! Root reading by path is what lets `ln -s /proc/kmsg ~/.ssh/authorized_keys`
//! freeze the daemon, lets `/proc/self/pagemap` bloat it, and lets a user test
//! root's or another user's files through the daemon. Here every file is opened on
//! an identity thread ([`as_user`]) with the user's credentials, so the kernel
//! answers as it would for the user; the descriptor is `fstat`ed (a regular file,
//! within the cap) and StrictModes judges that same descriptor, so what is checked
//! is what is read.
//!
//! Callers get a [`FileReader`] only inside [`with_reader`], so no code path can
//! read such a file as root by mistake. Requests and results are plain data, ready
//! to become requests to a separate privileged monitor.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode, SFlag};

use super::HostError;
use super::as_user::{Creds, as_user};
use super::strict_modes::secure_fd;

/// How long all the reads of one request may take. A key login normally needs a
/// millisecond; 10 s leaves room for a cold NFS home yet bounds a FUSE file that
/// never answers (the identity thread is then left behind and counted against the
/// user's cap in `as_user`, never against other users).
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// What a file is, for sshd's log wording and the size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    AuthorizedKeys,
    /// `AuthorizedPrincipalsFile`.
    AuthorizedPrincipals,
    Environment,
}

impl FileKind {
    /// sshd's `file_type` words in `Could not open user 'U' authorized keys 'F'`.
    fn label(self) -> &'static str {
        match self {
            FileKind::AuthorizedKeys => "authorized keys",
            FileKind::AuthorizedPrincipals => "authorized principals",
            FileKind::Environment => "environment",
        }
    }

    /// Bytes a file may hold. authorized_keys: 4 MiB, the limit rsshd had already
    /// (over 5,000 RSA-4096 lines with options; sites with more keys use
    /// AuthorizedKeysCommand). environment: 1 MiB, half of what execve accepts for
    /// a whole environment (E2BIG past 2 MiB with the default 8 MiB stack).
    pub(crate) fn cap(self) -> u64 {
        match self {
            FileKind::AuthorizedKeys | FileKind::AuthorizedPrincipals => 4 << 20,
            FileKind::Environment => 1 << 20,
        }
    }
}

/// Whose files: the account's name (for log lines), identity and home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub name: String,
    pub creds: Creds,
    pub home: PathBuf,
}

impl From<&super::UserInfo> for Owner {
    fn from(u: &super::UserInfo) -> Owner {
        Owner {
            name: u.name.clone(),
            creds: Creds::from(u),
            home: u.home.clone(),
        }
    }
}

/// What reading one file gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UserFile {
    /// No such file (normal: most users have no authorized_keys2).
    Missing,
    /// Unusable: not openable by the user, not a regular file, too large, or
    /// refused by StrictModes. Already logged in sshd's words.
    Refused,
    Contents(Vec<u8>),
}

/// Reads files as the user; exists only on an identity thread (see [`with_reader`]).
pub(crate) struct FileReader<'a> {
    owner: &'a Owner,
}

impl FileReader<'_> {
    /// Open `path` with the caller's identity, check the descriptor, and read it.
    /// `strict`: StrictModes (sshd's `safe_path_fd`) on the same descriptor.
    pub(crate) fn read(&self, path: &Path, kind: FileKind, strict: bool) -> UserFile {
        self.read_capped(path, kind, strict, kind.cap())
    }

    fn read_capped(&self, path: &Path, kind: FileKind, strict: bool, cap: u64) -> UserFile {
        let o = self.owner;
        let (fd, st) = match open_checked(path) {
            Ok(v) => v,
            Err(Opened::Missing) => {
                tracing::debug!(
                    "Could not open user '{}' {} '{}': No such file or directory",
                    o.name,
                    kind.label(),
                    path.display()
                );
                return UserFile::Missing;
            }
            Err(Opened::Failed(e)) => {
                tracing::info!(
                    "Could not open user '{}' {} '{}': {}",
                    o.name,
                    kind.label(),
                    path.display(),
                    e.desc()
                );
                return UserFile::Refused;
            }
            Err(Opened::NotRegular) => {
                tracing::info!(
                    "User '{}' {} '{}' is not a regular file",
                    o.name,
                    kind.label(),
                    path.display()
                );
                return UserFile::Refused;
            }
        };
        if strict && let Err(reason) = secure_fd(fd.as_fd(), &st, path, o.creds.uid, &o.home) {
            tracing::info!("Authentication refused: {reason}");
            return UserFile::Refused;
        }
        // The size fstat reports is checked first (no read at all for a huge
        // file); files that report 0 (/proc) are still cut off at the cap.
        let too_large = || {
            tracing::info!(
                "User '{}' {} '{}' is larger than {} bytes; ignored",
                o.name,
                kind.label(),
                path.display(),
                cap
            );
            UserFile::Refused
        };
        if st.st_size as u64 > cap {
            return too_large();
        }
        let mut data = Vec::new();
        match std::fs::File::from(fd).take(cap + 1).read_to_end(&mut data) {
            Ok(_) if data.len() as u64 > cap => too_large(),
            Ok(_) => UserFile::Contents(data),
            Err(e) => {
                tracing::info!(
                    "Could not read user '{}' {} '{}': {}",
                    o.name,
                    kind.label(),
                    path.display(),
                    e.raw_os_error()
                        .map(|n| nix::errno::Errno::from_raw(n).desc().to_string())
                        .unwrap_or_else(|| e.to_string())
                );
                UserFile::Refused
            }
        }
    }
}

pub(super) enum Opened {
    Missing,
    Failed(nix::errno::Errno),
    NotRegular,
}

/// Open without blocking (a FIFO or a device must not hold the thread), without
/// becoming a controlling terminal, close-on-exec from birth; then only a regular
/// file goes on.
pub(super) fn open_checked(path: &Path) -> Result<(OwnedFd, FileStat), Opened> {
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Err(Opened::Missing),
        Err(e) => return Err(Opened::Failed(e)),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(Opened::Failed)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(Opened::NotRegular);
    }
    // procfs files claim to be regular but are not files: /proc/kmsg blocks,
    // /proc/self/pagemap never ends. And /proc/self is the daemon, whose own
    // thread the kernel lets into /proc/self/fd/N whatever its uid: those
    // descriptors belong to other users' sessions.
    let fs = nix::sys::statfs::fstatfs(&fd).map_err(Opened::Failed)?;
    if fs.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(Opened::NotRegular);
    }
    Ok((fd, st))
}

/// Run `f` on an identity thread of `owner`, with a [`FileReader`], within
/// [`DEADLINE`]. `Err` when the work could not start (the user's cap of slow
/// operations is reached) or did not finish in time: callers treat that as "no
/// file" and log it.
pub(crate) async fn with_reader<T, F>(owner: Owner, f: F) -> Result<T, HostError>
where
    T: Send + 'static,
    F: FnOnce(&FileReader) -> T + Send + 'static,
{
    let creds = owner.creds.clone();
    as_user(&creds, DEADLINE, move || f(&FileReader { owner: &owner })).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn me(home: &Path) -> Owner {
        Owner {
            name: "me".into(),
            creds: Creds {
                uid: nix::unistd::geteuid().as_raw(),
                gid: nix::unistd::getegid().as_raw(),
                gids: vec![nix::unistd::getegid().as_raw()],
            },
            home: home.to_path_buf(),
        }
    }

    fn base(tag: &str) -> PathBuf {
        // Under the crate's target dir: /tmp itself is world-writable.
        let d = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(format!("uf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    fn read(owner: &Owner, p: &Path, kind: FileKind, strict: bool) -> UserFile {
        FileReader { owner }.read(p, kind, strict)
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let d = base("special");
        let o = me(&d);
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let zero = d.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let start = std::time::Instant::now();
        for p in [&fifo, &zero, &d] {
            assert_eq!(
                read(&o, p, FileKind::AuthorizedKeys, false),
                UserFile::Refused,
                "{}",
                p.display()
            );
        }
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(
            read(&o, &d.join("none"), FileKind::AuthorizedKeys, false),
            UserFile::Missing
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn files_over_the_cap_and_procfs_files_are_refused() {
        let d = base("cap");
        let o = me(&d);
        let big = d.join("big");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(FileKind::Environment.cap() + 1).unwrap();
        assert_eq!(
            read(&o, &big, FileKind::Environment, false),
            UserFile::Refused
        );
        f.set_len(FileKind::Environment.cap()).unwrap();
        assert!(matches!(
            read(&o, &big, FileKind::Environment, false),
            UserFile::Contents(v) if v.len() as u64 == FileKind::Environment.cap()
        ));
        // A file that grows after fstat is still cut off at cap + 1 bytes.
        let r = FileReader { owner: &o };
        let small = d.join("small");
        std::fs::write(&small, [b'x'; 64]).unwrap();
        assert_eq!(
            r.read_capped(&small, FileKind::AuthorizedKeys, false, 16),
            UserFile::Refused
        );
        assert!(matches!(
            r.read_capped(&small, FileKind::AuthorizedKeys, false, 64),
            UserFile::Contents(v) if v.len() == 64
        ));
        // procfs is never read: its files say "regular, empty" and are not.
        for p in ["/proc/self/status", "/proc/self/pagemap", "/proc/kmsg"] {
            assert_eq!(
                read(&o, Path::new(p), FileKind::AuthorizedKeys, false),
                UserFile::Refused,
                "{p}"
            );
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A read stuck in the kernel (a FUSE file that never answers) ends for the
    /// caller at the deadline; the paused clock jumps there as soon as the
    /// runtime has nothing else to do.
    #[tokio::test(start_paused = true)]
    async fn a_read_that_never_answers_ends_at_the_deadline() {
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let started = tokio::time::Instant::now();
        let r = with_reader(me(Path::new("/")), move |_| {
            let _ = stuck.recv();
        })
        .await;
        assert!(
            matches!(r, Err(HostError::TimedOut(d)) if d == DEADLINE),
            "{r:?}"
        );
        assert_eq!(started.elapsed(), DEADLINE);
        // The thread left behind ends once the kernel lets it go.
        drop(release);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn root_only_files_are_closed_to_the_user() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("user_files: not root; nothing to switch");
            return;
        }
        let o = Owner {
            name: "nobody".into(),
            creds: Creds {
                uid: 65534,
                gid: 65534,
                gids: vec![65534],
            },
            home: PathBuf::from("/nonexistent"),
        };
        let got = with_reader(o, |r| {
            (
                r.read(Path::new("/etc/shadow"), FileKind::AuthorizedKeys, false),
                r.read(Path::new("/proc/kmsg"), FileKind::AuthorizedKeys, false),
            )
        })
        .await
        .unwrap();
        assert_eq!(got, (UserFile::Refused, UserFile::Refused));
    }
}
