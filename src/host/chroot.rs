//! `ChrootDirectory` as sshd applies it (`session.c`: `do_setusercontext`,
//! `safely_chroot`): the configured path with `~` and `%h %u %U %%` expanded,
//! every component a root-owned directory that neither group nor others may write
//! (otherwise whoever can write there could swap the jail for one with their own
//! `/etc/passwd` or set-uid programs), then chdir, chroot, chdir `/`.
//!
//! The check runs in the process that enters the jail, right before it does
//! (the session's launch, the PAM helper's, or the internal-sftp helper); the
//! daemon also runs it before starting a session, so a bad jail refuses the
//! channel with sshd's log line instead of failing later out of sight.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{HostError, UserInfo};

/// What sshd says when rsshd, not being root, is asked to chroot.
pub(crate) const NO_PRIVILEGE: &str = "server lacks privileges to chroot to ChrootDirectory";

/// The jail for `user`: `pattern` (a `ChrootDirectory` value other than `none`)
/// with sshd's `tilde_expand_filename` and `percent_expand` (`%h %u %U %%`).
/// Unknown `%` tokens are an error, as in sshd's `percent_expand`.
pub(crate) fn resolve(pattern: &str, user: &UserInfo) -> Result<PathBuf, HostError> {
    let tilde = expand_tilde(pattern, user)?;
    user.expand(&tilde)
        .map(PathBuf::from)
        .map_err(|e| HostError::SessionFatal(format!("percent_expand: {e}")))
}

/// `~` and `~/x` name the user's home, `~name/x` that account's.
fn expand_tilde(pattern: &str, user: &UserInfo) -> Result<String, HostError> {
    let Some(rest) = pattern.strip_prefix('~') else {
        return Ok(pattern.to_string());
    };
    let (name, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let home = if name.is_empty() {
        user.home.clone()
    } else {
        match super::lookup_user(name)? {
            Some(u) => u.home,
            None => {
                return Err(HostError::SessionFatal(format!(
                    "tilde_expand_filename: No such user {name}"
                )));
            }
        }
    };
    let home = home.to_string_lossy();
    Ok(format!("{}{tail}", home.trim_end_matches('/')))
}

/// sshd's checks, with its words: the path is absolute, and every component
/// (`/`, `/srv/`, ..., the jail itself) is a directory owned by root that group
/// and others cannot write. `stat` follows symbolic links, as sshd's does: a link
/// is judged by what it points to, and every link on the way is itself under a
/// component that passed (or is the one being checked).
pub(crate) fn check(path: &Path) -> Result<(), HostError> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(fatal("chroot path does not begin at root".into()));
    }
    // Each prefix up to and including a '/', then the whole path.
    let mut ends: Vec<usize> = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(|(i, _)| i + 1)
        .collect();
    if ends.last() != Some(&bytes.len()) {
        ends.push(bytes.len());
    }
    let last = ends.len() - 1;
    for (n, end) in ends.into_iter().enumerate() {
        let component = Path::new(std::ffi::OsStr::from_bytes(&bytes[..end]));
        let shown = component.display();
        let kind = if n == last { "" } else { "component " };
        let st = std::fs::metadata(component).map_err(|e| {
            fatal(format!(
                "safely_chroot: stat(\"{shown}\"): {}",
                strerror(&e)
            ))
        })?;
        if st.uid() != 0 || st.mode() & 0o022 != 0 {
            return Err(fatal(format!(
                "bad ownership or modes for chroot directory {kind}\"{shown}\""
            )));
        }
        if !st.is_dir() {
            return Err(fatal(format!(
                "chroot path {kind}\"{shown}\" is not a directory"
            )));
        }
    }
    Ok(())
}

/// Check `path`, then enter it as sshd does: chdir there, chroot, chdir `/`.
/// For a process that is about to become the user (the internal-sftp helper);
/// the session launch does the same steps with raw system calls.
pub(crate) fn enter(path: &Path) -> Result<(), HostError> {
    check(path)?;
    let shown = path.display();
    nix::unistd::chdir(path).map_err(|e| {
        fatal(format!(
            "Unable to chdir to chroot path \"{shown}\": {}",
            e.desc()
        ))
    })?;
    nix::unistd::chroot(path).map_err(|e| fatal(format!("chroot(\"{shown}\"): {}", e.desc())))?;
    nix::unistd::chdir("/").map_err(|e| fatal(format!("chdir(/) after chroot: {}", e.desc())))?;
    Ok(())
}

fn fatal(msg: String) -> HostError {
    HostError::SessionFatal(msg)
}

/// An error as C's `strerror` words it ("No such file or directory"), without
/// Rust's "(os error N)".
pub(crate) fn strerror(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserInfo {
        UserInfo {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/alice".into(),
            shell: "/bin/sh".into(),
            group_names: vec![],
            gids: vec![],
        }
    }

    fn msg(r: Result<(), HostError>) -> String {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn tokens_and_tilde() {
        let u = user();
        let r = |p: &str| resolve(p, &u).map(|p| p.display().to_string());
        assert_eq!(r("/srv/%u").unwrap(), "/srv/alice");
        assert_eq!(r("%h/jail").unwrap(), "/home/alice/jail");
        assert_eq!(r("/srv/%U/%%x").unwrap(), "/srv/1000/%x");
        assert_eq!(r("~").unwrap(), "/home/alice");
        assert_eq!(r("~/j").unwrap(), "/home/alice/j");
        assert_eq!(r("~root/j").unwrap(), "/root/j");
        assert!(r("/srv/%d").is_err());
        assert!(r("~no-such-user-rsshd/j").is_err());
    }

    #[test]
    fn relative_and_missing_paths_are_refused_with_sshds_words() {
        assert_eq!(
            msg(check(Path::new("srv/x"))),
            "chroot path does not begin at root"
        );
        assert_eq!(
            msg(check(Path::new("/no-such-dir-rsshd/x"))),
            "safely_chroot: stat(\"/no-such-dir-rsshd/\"): No such file or directory"
        );
        // A file where a directory should be.
        assert_eq!(
            msg(check(Path::new("/etc/passwd"))),
            "chroot path \"/etc/passwd\" is not a directory"
        );
        assert_eq!(msg(check(Path::new("/"))), "");
    }

    // Ownership and modes on every component need root-owned directories:
    // tests/chroot_sftp.rs checks them as root, with sshd's log lines.
}
