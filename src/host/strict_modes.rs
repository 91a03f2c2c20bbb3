//! StrictModes: sshd refuses key files that someone other than the user (or root)
//! could have written, because such a file lets that someone log in as the user.
//!
//! The check is made on the open descriptor that is then read (OpenSSH's
//! `safe_path_fd`), never on a path looked up again, so swapping the file between
//! check and read changes nothing.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sys::stat::{FileStat, SFlag};

/// Owned by root or by the user, and writable by neither group nor others.
fn safe_owner_and_mode(uid: u32, st_uid: u32, mode: u32) -> bool {
    (st_uid == 0 || st_uid == uid) && mode & 0o022 == 0
}

/// OpenSSH's `safe_path_fd`: `st` is the `fstat` of `fd`, opened as `name`. The file
/// itself (from `st`) and each directory above its real path, up to the home
/// directory (or `/` for files outside it), must be owned by root or `uid` and not
/// writable by group or others. `Err` is sshd's reason, for
/// `Authentication refused: REASON`.
pub(crate) fn secure_fd(
    fd: BorrowedFd,
    st: &FileStat,
    name: &Path,
    uid: u32,
    home: &Path,
) -> Result<(), String> {
    let real = real_path(fd, st)
        .map_err(|e| format!("realpath {} failed: {}", name.display(), e.desc()))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(format!("{} is not a regular file", real.display()));
    }
    if !safe_owner_and_mode(uid, st.st_uid, st.st_mode) {
        return Err(format!(
            "bad ownership or modes for file {}",
            real.display()
        ));
    }
    let home = std::fs::canonicalize(home).ok();
    let mut dir = real.parent();
    while let Some(d) = dir {
        let ok = nix::sys::stat::stat(d)
            .map(|m| safe_owner_and_mode(uid, m.st_uid, m.st_mode))
            .unwrap_or(false);
        if !ok {
            return Err(format!(
                "bad ownership or modes for directory {}",
                d.display()
            ));
        }
        if home.as_deref() == Some(d) {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

/// Where the open file lives now, from the kernel's record for the descriptor,
/// confirmed to name the very same inode (a file renamed or deleted since it was
/// opened has no trustworthy path).
fn real_path(fd: BorrowedFd, st: &FileStat) -> Result<PathBuf, nix::errno::Errno> {
    // /proc/thread-self: the identity thread may read its own process's fd links
    // (same thread group), whatever its effective uid.
    let link = format!("/proc/thread-self/fd/{}", fd.as_raw_fd());
    let real = PathBuf::from(nix::fcntl::readlink(Path::new(&link))?);
    let now = nix::sys::stat::stat(&real)?;
    if !real.is_absolute() || now.st_dev != st.st_dev || now.st_ino != st.st_ino {
        return Err(nix::errno::Errno::ESTALE);
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn base(tag: &str) -> PathBuf {
        // Under the crate's target dir: /tmp itself is world-writable.
        let base = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(format!("sm-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join(".ssh")).unwrap();
        chmod(&base, 0o755);
        chmod(&base.join(".ssh"), 0o700);
        base
    }

    fn check(f: &std::fs::File, name: &Path, home: &Path) -> Result<(), String> {
        let st = nix::sys::stat::fstat(f).unwrap();
        secure_fd(f.as_fd(), &st, name, nix::unistd::geteuid().as_raw(), home)
    }

    #[test]
    fn group_writable_directory_or_file_is_refused() {
        let base = base("modes");
        let ssh = base.join(".ssh");
        let f = ssh.join("authorized_keys");
        std::fs::write(&f, "").unwrap();
        chmod(&f, 0o600);
        let open = || std::fs::File::open(&f).unwrap();
        assert_eq!(check(&open(), &f, &base), Ok(()));
        chmod(&ssh, 0o770);
        assert_eq!(
            check(&open(), &f, &base),
            Err(format!(
                "bad ownership or modes for directory {}",
                ssh.display()
            ))
        );
        chmod(&ssh, 0o700);
        chmod(&f, 0o666);
        assert_eq!(
            check(&open(), &f, &base),
            Err(format!("bad ownership or modes for file {}", f.display()))
        );
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn the_checked_file_is_the_open_one_not_whatever_the_path_names_now() {
        let base = base("race");
        let ssh = base.join(".ssh");
        let path = ssh.join("authorized_keys");
        let good = ssh.join("good");
        std::fs::write(&good, "good").unwrap();
        chmod(&good, 0o600);
        let bad = ssh.join("bad");
        std::fs::write(&bad, "bad").unwrap();
        chmod(&bad, 0o666);

        // Opened while the name held the bad file; then the bad file moves away
        // and the good one takes its name. A check by path would now pass; the
        // descriptor's file is still the world-writable one and is refused.
        let moved = ssh.join("moved");
        std::fs::rename(&bad, &path).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        std::fs::rename(&path, &moved).unwrap();
        std::fs::rename(&good, &path).unwrap();
        assert_eq!(
            check(&f, &path, &base),
            Err(format!(
                "bad ownership or modes for file {}",
                moved.display()
            ))
        );

        // The other way round: opened as the good file, then the bad one takes
        // the name. The check passes on the good file and the read gives the good
        // file's bytes, never the newcomer's.
        let mut f = std::fs::File::open(&path).unwrap();
        std::fs::rename(&path, &good).unwrap();
        std::fs::rename(&moved, &path).unwrap();
        assert_eq!(check(&f, &path, &base), Ok(()));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut f, &mut text).unwrap();
        assert_eq!(text, "good");

        // A file deleted since it was opened has no path to judge: refused.
        std::fs::remove_file(&good).unwrap();
        let r = check(&f, &path, &base);
        assert!(
            r.as_ref().is_err_and(|e| e.starts_with("realpath")),
            "{r:?}"
        );

        // A symlink is judged by where it leads (the real path's directories).
        let outside = base.join("lib");
        std::fs::create_dir(&outside).unwrap();
        chmod(&outside, 0o777);
        let target = outside.join("keys");
        std::fs::write(&target, "").unwrap();
        chmod(&target, 0o600);
        let link = ssh.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let f = std::fs::File::open(&link).unwrap();
        assert_eq!(
            check(&f, &link, &base),
            Err(format!(
                "bad ownership or modes for directory {}",
                outside.display()
            ))
        );
        let _ = std::fs::remove_dir_all(&base);
    }
}
