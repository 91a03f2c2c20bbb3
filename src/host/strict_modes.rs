//! StrictModes: sshd refuses key files that someone other than the user (or root)
//! could have written, because such a file lets that someone log in as the user.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// OpenSSH's `auth_secure_path`: the file and each directory above it, up to the
/// home directory (or `/` for files outside it), must be owned by root or `uid` and
/// not writable by group or others.
pub fn secure_path(file: &Path, uid: u32, home: &Path) -> Result<(), String> {
    let bad = |what: &str, p: &Path| format!("bad ownership or modes for {what} {}", p.display());
    let file = file
        .canonicalize()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let home = home.canonicalize().unwrap_or_else(|_| home.to_path_buf());
    let meta = std::fs::metadata(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", file.display()));
    }
    if (meta.uid() != 0 && meta.uid() != uid) || meta.mode() & 0o022 != 0 {
        return Err(bad("file", &file));
    }
    let mut dir = file.parent();
    while let Some(d) = dir {
        let m = std::fs::metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        if (m.uid() != 0 && m.uid() != uid) || m.mode() & 0o022 != 0 {
            return Err(bad("directory", d));
        }
        if d == home {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn group_writable_directory_is_refused() {
        // Under the crate's target dir: /tmp itself is world-writable.
        let base = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(format!("sm-{}", std::process::id()));
        let ssh = base.join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).unwrap();
        let f = ssh.join("authorized_keys");
        std::fs::write(&f, "").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        assert_eq!(secure_path(&f, uid, &base), Ok(()));
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(
            secure_path(&f, uid, &base)
                .unwrap_err()
                .contains("directory")
        );
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(secure_path(&f, uid, &base).unwrap_err().contains("file"));
        let _ = std::fs::remove_dir_all(&base);
    }
}
