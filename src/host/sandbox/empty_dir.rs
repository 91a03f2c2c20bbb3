//! The directory the network process is chrooted to: empty, owned by root and
//! writable by nobody else, like sshd's privilege separation directory. Nothing
//! inside can be read, and the unprivileged user cannot plant anything there.

use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, fstat};

use super::{SandboxError, os, shown};

/// Create `path` (and its parents) 0755 if missing, then check it and every
/// directory above it: each a directory owned by root and not writable by group
/// or others (sshd's rule for a chroot path), the last one empty. Returns the
/// directory opened, for fchdir + chroot(".") on exactly what was checked.
pub(super) fn open_checked(path: &Path) -> Result<OwnedFd, SandboxError> {
    if !path.is_absolute() {
        return Err(SandboxError::Refused(format!(
            "chroot directory {} is not an absolute path",
            shown(path)
        )));
    }
    if std::fs::symlink_metadata(path).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(|e| {
                SandboxError::Refused(format!(
                    "cannot create chroot directory {}: {e}",
                    shown(path)
                ))
            })?;
    }
    for dir in path.ancestors() {
        let meta = std::fs::metadata(dir)
            .map_err(|e| SandboxError::Refused(format!("stat {}: {e}", shown(dir))))?;
        check_meta(dir, meta.is_dir(), meta.uid(), meta.mode())?;
    }
    let fd = open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(os("open(chroot directory)"))?;
    let st = fstat(&fd).map_err(os("fstat(chroot directory)"))?;
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    check_meta(path, is_dir, st.st_uid, st.st_mode)?;
    let mut entries = std::fs::read_dir(path).map_err(|e| {
        SandboxError::Refused(format!("reading chroot directory {}: {e}", shown(path)))
    })?;
    if entries.next().is_some() {
        return Err(SandboxError::Refused(format!(
            "chroot directory {} is not empty",
            shown(path)
        )));
    }
    Ok(fd)
}

fn check_meta(dir: &Path, is_dir: bool, uid: u32, mode: u32) -> Result<(), SandboxError> {
    if !is_dir {
        return Err(SandboxError::Refused(format!(
            "chroot path {} is not a directory",
            shown(dir)
        )));
    }
    if uid != 0 || mode & 0o022 != 0 {
        return Err(SandboxError::Refused(format!(
            "bad ownership or modes for chroot directory {}",
            shown(dir)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_owned_unwritable_directories_pass() {
        let p = Path::new("/x");
        assert!(check_meta(p, true, 0, 0o40755).is_ok());
        assert!(check_meta(p, true, 0, 0o40775).is_err());
        assert!(check_meta(p, true, 0, 0o41777).is_err());
        assert!(check_meta(p, true, 999, 0o40755).is_err());
        assert!(check_meta(p, false, 0, 0o100644).is_err());
    }
}
