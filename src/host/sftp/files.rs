//! What sftp-server says about files: attributes, `ls -l` long names, status
//! codes for errno values, and its `realpath`.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use russh_sftp::protocol::{FileAttributes, StatusCode};

/// sftp-server's `errno_to_portable`.
pub(crate) fn portable(errno: i32) -> StatusCode {
    match errno {
        0 => StatusCode::Ok,
        libc::ENOENT | libc::ENOTDIR | libc::EBADF | libc::ELOOP => StatusCode::NoSuchFile,
        libc::EPERM | libc::EACCES | libc::EFAULT => StatusCode::PermissionDenied,
        libc::ENAMETOOLONG | libc::EINVAL => StatusCode::BadMessage,
        libc::ENOSYS => StatusCode::OpUnsupported,
        _ => StatusCode::Failure,
    }
}

pub(crate) fn io_portable(e: &std::io::Error) -> StatusCode {
    portable(e.raw_os_error().unwrap_or(libc::EIO))
}

/// sftp-server's `status_to_message`.
pub(crate) fn message(code: StatusCode) -> &'static str {
    match code {
        StatusCode::Ok => "Success",
        StatusCode::Eof => "End of file",
        StatusCode::NoSuchFile => "No such file",
        StatusCode::PermissionDenied => "Permission denied",
        StatusCode::Failure => "Failure",
        StatusCode::BadMessage => "Bad message",
        StatusCode::NoConnection => "No connection",
        StatusCode::ConnectionLost => "Connection lost",
        StatusCode::OpUnsupported => "Operation unsupported",
    }
}

/// `stat_to_attrib`: size, owner, mode with the file type, times.
pub(crate) fn attrs(m: &Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(m.size()),
        uid: Some(m.uid()),
        user: None,
        gid: Some(m.gid()),
        group: None,
        permissions: Some(m.mode()),
        atime: Some(m.atime() as u32),
        mtime: Some(m.mtime() as u32),
    }
}

/// A client's path as the file system sees it (the library has already turned
/// invalid UTF-8 into U+FFFD).
pub(crate) fn path(p: &str) -> PathBuf {
    PathBuf::from(p)
}

/// Account names for long listings. Inside a jail the host's account database
/// is never consulted (no NSS module is loaded from a tree the user may shape):
/// only root has a name there, as with sshd on Debian, where only nss-systemd's
/// built-in root answers inside a jail.
pub(crate) struct Names {
    jailed: bool,
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Names {
    pub(crate) fn new(jailed: bool) -> Names {
        Names {
            jailed,
            users: HashMap::new(),
            groups: HashMap::new(),
        }
    }

    pub(crate) fn user(&mut self, uid: u32) -> Option<String> {
        let jailed = self.jailed;
        self.users
            .entry(uid)
            .or_insert_with(|| match (jailed, uid) {
                (_, 0) => Some("root".into()),
                (true, _) => None,
                (false, _) => nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name),
            })
            .clone()
    }

    pub(crate) fn group(&mut self, gid: u32) -> Option<String> {
        let jailed = self.jailed;
        self.groups
            .entry(gid)
            .or_insert_with(|| match (jailed, gid) {
                (_, 0) => Some("root".into()),
                (true, _) => None,
                (false, _) => nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name),
            })
            .clone()
    }
}

/// BSD `strmode`: type, permissions with set-id and sticky bits, and the
/// trailing space where an ACL mark would go.
fn strmode(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFREG => '-',
        libc::S_IFLNK => 'l',
        libc::S_IFSOCK => 's',
        libc::S_IFIFO => 'p',
        _ => '?',
    };
    let bit = |b: u32, c: char| if mode & b != 0 { c } else { '-' };
    let exec =
        |x: u32, special: u32, on: char, off: char| match (mode & x != 0, mode & special != 0) {
            (true, true) => on,
            (false, true) => off,
            (true, false) => 'x',
            (false, false) => '-',
        };
    [
        kind,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        exec(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        exec(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        exec(0o001, 0o1000, 't', 'T'),
        ' ',
    ]
    .iter()
    .collect()
}

fn local_time(t: i64, fmt: &std::ffi::CStr) -> String {
    crate::host::local_time::format(t, fmt)
}

/// The time in sftp-server's `set ... modtime` log line.
pub(crate) fn log_time(t: i64) -> String {
    local_time(t, c"%Y%m%d-%H:%M:%S")
}

/// sftp-server's `ls_file(name, st, 0, 0, NULL, NULL)`: the `longname` of a
/// directory entry, as `ls -l` prints it.
pub(crate) fn long_name(name: &str, m: &Metadata, names: &mut Names) -> String {
    let user = names.user(m.uid()).unwrap_or_else(|| m.uid().to_string());
    let group = names.group(m.gid()).unwrap_or_else(|| m.gid().to_string());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mtime = m.mtime();
    let recent = now - (365 * 24 * 60 * 60) / 2 < mtime && now >= mtime;
    let when = local_time(mtime, if recent { c"%b %e %H:%M" } else { c"%b %e  %Y" });
    let ulen = user.len().max(8);
    let glen = group.len().max(8);
    format!(
        "{} {:>3} {user:<ulen$} {group:<glen$} {:>8} {when} {name}",
        strmode(m.mode()),
        m.nlink(),
        m.size()
    )
}

/// sftp-server's `realpath`: symbolic links, `.` and `..` resolved; the last
/// component may be missing (BSD semantics), so a client can name a file it is
/// about to create.
pub(crate) fn real_path(p: &str) -> std::io::Result<String> {
    let path = Path::new(if p.is_empty() { "." } else { p });
    let resolved = match std::fs::canonicalize(path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(e);
            };
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            std::fs::canonicalize(parent)?.join(name)
        }
        Err(e) => return Err(e),
    };
    Ok(resolved.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(strmode(0o040755), "drwxr-xr-x ");
        assert_eq!(strmode(0o100644), "-rw-r--r-- ");
        assert_eq!(strmode(0o104755), "-rwsr-xr-x ");
        assert_eq!(strmode(0o102644), "-rw-r-Sr-- ");
        assert_eq!(strmode(0o041777), "drwxrwxrwt ");
        assert_eq!(strmode(0o120777), "lrwxrwxrwx ");
        assert_eq!(strmode(0o010600), "prw------- ");
    }

    #[test]
    fn long_names_have_sftp_servers_columns() {
        let m = std::fs::metadata("/").unwrap();
        let mut names = Names::new(true);
        let l = long_name("x", &m, &mut names);
        assert!(l.starts_with("drwxr-xr-x "), "{l}");
        assert!(l.contains(" root     root     "), "{l}");
        assert!(l.ends_with(" x"), "{l}");
    }

    #[test]
    fn jailed_names_are_numeric_except_root() {
        let mut jailed = Names::new(true);
        assert_eq!(jailed.user(0).as_deref(), Some("root"));
        assert_eq!(jailed.user(65534), None);
        let mut free = Names::new(false);
        assert_eq!(free.group(0).as_deref(), Some("root"));
    }

    #[test]
    fn realpath_allows_a_missing_last_component() {
        assert_eq!(real_path("/etc/../etc").unwrap(), "/etc");
        assert_eq!(
            real_path("/etc/no-such-file-rsshd").unwrap(),
            "/etc/no-such-file-rsshd"
        );
        assert!(real_path("/no-such-dir-rsshd/x").is_err());
        assert_eq!(portable(libc::ENOENT), StatusCode::NoSuchFile);
        assert_eq!(portable(libc::EACCES), StatusCode::PermissionDenied);
        assert_eq!(portable(libc::EEXIST), StatusCode::Failure);
    }
}
