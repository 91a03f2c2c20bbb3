//! The SFTP requests, answered as OpenSSH's sftp-server answers them (same
//! status codes, same log lines at the same levels), on `russh-sftp`'s server
//! (packet framing and encoding). Runs in the helper as the user, inside the jail
//! if any, so the file system's own permissions decide what the user may do;
//! `-R`, `-P` and `-p` are checked here before anything is touched.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, FileExt};

use nix::fcntl::OFlag;
use russh_sftp::protocol::{Attrs, Data, FileAttributes, Name, OpenFlags, Status, StatusCode};
use russh_sftp::server::StatusReply;

use super::files::{self, Names, io_portable, message, portable};
use super::log::Log;
use super::options::{Level, Options, in_list};

/// sftp-server's limits: the largest packet, and the largest read it answers.
pub(crate) const MAX_PACKET: u32 = 256 * 1024;
pub(crate) const MAX_READ: u32 = MAX_PACKET - 1024;
/// Entries per SSH_FXP_NAME reply to a readdir, as sftp-server.
const READDIR_BATCH: usize = 100;

/// An open handle.
pub(super) enum Open {
    File {
        file: File,
        name: String,
        append: bool,
        read: u64,
        written: u64,
    },
    Dir {
        dir: std::fs::ReadDir,
        name: String,
        /// `.` and `..` still to list (readdir(3) returns them; std skips them).
        dots: Vec<&'static str>,
    },
}

/// Who is served and how.
pub(crate) struct Session {
    pub options: Options,
    pub log: Log,
    pub user: String,
    pub home: String,
    pub client_addr: String,
    pub jailed: bool,
}

pub(crate) struct Server {
    pub(super) s: Session,
    pub(super) handles: HashMap<u32, Open>,
    next: u32,
    pub(super) names: Names,
    /// Dropped with the server: the helper waits for that.
    _done: tokio::sync::oneshot::Sender<()>,
}

pub(super) type Reply<T> = Result<T, StatusReply>;

impl Server {
    pub(crate) fn new(s: Session, done: tokio::sync::oneshot::Sender<()>) -> Server {
        let names = Names::new(s.jailed);
        Server {
            s,
            handles: HashMap::new(),
            next: 0,
            names,
            _done: done,
        }
    }

    pub(super) fn log(&self) -> &Log {
        &self.s.log
    }

    /// sftp-server's `request_permitted`.
    pub(super) fn permit(&self, name: &str, writes: bool) -> Reply<()> {
        let o = &self.s.options;
        if o.readonly && writes {
            self.log()
                .verbose(&format!("Refusing {name} request in read-only mode"));
            return Err(self.fail(StatusCode::PermissionDenied));
        }
        if o.deny.as_deref().is_some_and(|l| in_list(name, l)) {
            self.log()
                .verbose(&format!("Refusing denylisted {name} request"));
            return Err(self.fail(StatusCode::PermissionDenied));
        }
        match &o.allow {
            Some(l) if in_list(name, l) => {
                self.log().at(
                    Level::Debug2,
                    &format!("Permitting allowlisted {name} request"),
                );
                Ok(())
            }
            Some(_) => {
                self.log()
                    .verbose(&format!("Refusing non-allowlisted {name} request"));
                Err(self.fail(StatusCode::PermissionDenied))
            }
            None => Ok(()),
        }
    }

    /// A failure status, logged as sftp-server logs every status but OK and EOF.
    pub(super) fn fail(&self, code: StatusCode) -> StatusReply {
        if self.log().enabled(Level::Debug1) || !matches!(code, StatusCode::Ok | StatusCode::Eof) {
            self.log().info(&format!("sent status {}", message(code)));
        }
        StatusReply::new(code).with_message(message(code))
    }

    pub(super) fn errno(&self, e: &std::io::Error) -> StatusReply {
        self.fail(io_portable(e))
    }

    pub(super) fn nix(&self, e: nix::Error) -> StatusReply {
        self.fail(portable(e as i32))
    }

    pub(super) fn ok(&self, id: u32) -> Status {
        if self.log().enabled(Level::Debug1) {
            self.log().info("sent status Success");
        }
        Status {
            id,
            status_code: StatusCode::Ok,
            error_message: message(StatusCode::Ok).into(),
            language_tag: String::new(),
        }
    }

    /// A status that may be OK or not, for requests that answer with one.
    pub(super) fn status(&self, id: u32, r: Reply<()>) -> Reply<Status> {
        r.map(|()| self.ok(id))
    }

    fn add(&mut self, open: Open) -> Reply<String> {
        let limit = super::ext::max_handles();
        if self.handles.len() as u64 >= limit {
            return Err(self.fail(StatusCode::Failure));
        }
        while self.handles.contains_key(&self.next) {
            self.next = self.next.wrapping_add(1);
        }
        let h = self.next;
        self.next = self.next.wrapping_add(1);
        self.handles.insert(h, open);
        Ok(h.to_string())
    }

    pub(super) fn file(&mut self, handle: &str) -> Option<&mut Open> {
        let h: u32 = handle.parse().ok()?;
        self.handles
            .get_mut(&h)
            .filter(|o| matches!(o, Open::File { .. }))
    }

    pub(super) fn fd_of(&mut self, handle: &str) -> Option<&File> {
        match self.file(handle) {
            Some(Open::File { file, .. }) => Some(file),
            _ => None,
        }
    }

    pub(super) fn open(
        &mut self,
        name: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Reply<String> {
        self.permit("open", false)?;
        let (flags, text) = open_flags(pflags);
        let mode = attrs.permissions.unwrap_or(0o666);
        self.log()
            .info(&format!("open \"{name}\" flags {text} mode 0{mode:o}"));
        let read_only = flags & OFlag::O_ACCMODE == OFlag::O_RDONLY
            && !flags.intersects(OFlag::O_CREAT | OFlag::O_TRUNC);
        if self.s.options.readonly && !read_only {
            self.log()
                .verbose("Refusing open request in read-only mode");
            return Err(self.fail(StatusCode::PermissionDenied));
        }
        let fd = nix::fcntl::open(
            &files::path(&name),
            flags | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777),
        )
        .map_err(|e| self.nix(e))?;
        self.add(Open::File {
            file: File::from(fd),
            append: flags.contains(OFlag::O_APPEND),
            name,
            read: 0,
            written: 0,
        })
    }

    pub(super) fn close(&mut self, id: u32, handle: String) -> Reply<Status> {
        self.permit("close", false)?;
        let h: Option<u32> = handle.parse().ok();
        match h.and_then(|h| self.handles.remove(&h)) {
            Some(open) => {
                self.log_close(&open, "");
                Ok(self.ok(id))
            }
            None => Err(self.fail(StatusCode::NoSuchFile)),
        }
    }

    /// `close "NAME" bytes read R written W` / `closedir "NAME"`, with `forced`
    /// for handles still open when the session ends.
    pub(super) fn log_close(&self, open: &Open, prefix: &str) {
        match open {
            Open::File {
                name,
                read,
                written,
                ..
            } => self.log().info(&format!(
                "{prefix}close \"{name}\" bytes read {read} written {written}"
            )),
            Open::Dir { name, .. } => self.log().info(&format!("{prefix}closedir \"{name}\"")),
        }
    }

    pub(super) fn read(&mut self, id: u32, handle: String, offset: u64, len: u32) -> Reply<Data> {
        self.permit("read", false)?;
        let len = len.min(MAX_READ) as usize;
        let Some(Open::File { file, read, .. }) = self.file(&handle) else {
            return Err(self.fail(StatusCode::Failure));
        };
        let mut buf = vec![0u8; len];
        let result = if len == 0 {
            Ok(0)
        } else {
            file.read_at(&mut buf, offset)
        };
        match result {
            Ok(0) if len > 0 => Err(self.fail(StatusCode::Eof)),
            Ok(n) => {
                *read += n as u64;
                buf.truncate(n);
                Ok(Data { id, data: buf })
            }
            Err(e) => Err(self.errno(&e)),
        }
    }

    pub(super) fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Reply<Status> {
        self.permit("write", true)?;
        let Some(Open::File {
            file,
            append,
            written,
            ..
        }) = self.file(&handle)
        else {
            return Err(self.fail(StatusCode::Failure));
        };
        // O_APPEND writes go to the end whatever the offset, as write(2) does.
        let r = if *append {
            std::io::Write::write_all(&mut &*file, &data)
        } else {
            file.write_all_at(&data, offset)
        };
        match r {
            Ok(()) => {
                *written += data.len() as u64;
                Ok(self.ok(id))
            }
            Err(e) => Err(self.errno(&e)),
        }
    }

    pub(super) fn stat(&mut self, id: u32, path: String, follow: bool) -> Reply<Attrs> {
        self.permit(if follow { "stat" } else { "lstat" }, false)?;
        let l = if follow { "" } else { "l" };
        self.log().verbose(&format!("{l}stat name \"{path}\""));
        let p = files::path(&path);
        let m = if follow {
            std::fs::metadata(p)
        } else {
            std::fs::symlink_metadata(p)
        };
        match m {
            Ok(m) => Ok(Attrs {
                id,
                attrs: files::attrs(&m),
            }),
            Err(e) => Err(self.errno(&e)),
        }
    }

    pub(super) fn fstat(&mut self, id: u32, handle: String) -> Reply<Attrs> {
        self.permit("fstat", false)?;
        let m = match self.fd_of(&handle) {
            Some(f) => f.metadata(),
            None => return Err(self.fail(StatusCode::Failure)),
        };
        m.map(|m| Attrs {
            id,
            attrs: files::attrs(&m),
        })
        .map_err(|e| self.errno(&e))
    }

    /// setstat, fsetstat and lsetstat: size, mode, times, owner, in
    /// sftp-server's order; the status is the last failure's.
    pub(super) fn set_attrs(&self, name: &str, a: &FileAttributes, target: Target) -> Reply<()> {
        let mut status = Ok(());
        let mut fail = |e: nix::Error| status = Err(self.nix(e));
        if let Some(size) = a.size {
            self.log().info(&format!("set \"{name}\" size {size}"));
            let r = match target {
                Target::Fd(f) => nix::unistd::ftruncate(f, size as i64),
                Target::Path { .. } => nix::unistd::truncate(name, size as i64),
            };
            r.unwrap_or_else(&mut fail);
        }
        if let Some(perm) = a.permissions {
            self.log().info(&format!("set \"{name}\" mode {perm:04o}"));
            let mode = nix::sys::stat::Mode::from_bits_truncate(perm & 0o7777);
            let r = match target {
                Target::Fd(f) => nix::sys::stat::fchmod(f, mode),
                Target::Path { follow } => nix::sys::stat::fchmodat(
                    nix::fcntl::AT_FDCWD,
                    name,
                    mode,
                    if follow {
                        nix::sys::stat::FchmodatFlags::FollowSymlink
                    } else {
                        nix::sys::stat::FchmodatFlags::NoFollowSymlink
                    },
                ),
            };
            r.unwrap_or_else(&mut fail);
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let (at, mt) = (a.atime.unwrap_or(0), a.mtime.unwrap_or(0));
            self.log().info(&format!(
                "set \"{name}\" modtime {}",
                files::log_time(i64::from(mt))
            ));
            let at = nix::sys::time::TimeSpec::new(i64::from(at), 0);
            let mt = nix::sys::time::TimeSpec::new(i64::from(mt), 0);
            let r = match target {
                Target::Fd(f) => nix::sys::stat::futimens(f, &at, &mt),
                Target::Path { follow } => nix::sys::stat::utimensat(
                    nix::fcntl::AT_FDCWD,
                    name,
                    &at,
                    &mt,
                    if follow {
                        nix::sys::stat::UtimensatFlags::FollowSymlink
                    } else {
                        nix::sys::stat::UtimensatFlags::NoFollowSymlink
                    },
                ),
            };
            r.unwrap_or_else(&mut fail);
        }
        if a.uid.is_some() || a.gid.is_some() {
            let (uid, gid) = (a.uid.unwrap_or(0), a.gid.unwrap_or(0));
            self.log()
                .info(&format!("set \"{name}\" owner {uid} group {gid}"));
            let (u, g) = (Some(uid.into()), Some(gid.into()));
            let r = match target {
                Target::Fd(f) => nix::unistd::fchown(f, u, g),
                Target::Path { follow } => nix::unistd::fchownat(
                    nix::fcntl::AT_FDCWD,
                    name,
                    u,
                    g,
                    if follow {
                        nix::fcntl::AtFlags::empty()
                    } else {
                        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW
                    },
                ),
            };
            r.unwrap_or_else(&mut fail);
        }
        status
    }

    pub(super) fn opendir(&mut self, path: String) -> Reply<String> {
        self.permit("opendir", false)?;
        self.log().info(&format!("opendir \"{path}\""));
        let dir = std::fs::read_dir(files::path(&path)).map_err(|e| self.errno(&e))?;
        self.add(Open::Dir {
            dir,
            name: path,
            dots: vec![".", ".."],
        })
    }

    pub(super) fn readdir(&mut self, id: u32, handle: String) -> Reply<Name> {
        self.permit("readdir", false)?;
        let h: Option<u32> = handle.parse().ok();
        let Some(Open::Dir { dir, name, dots }) = h.and_then(|h| self.handles.get_mut(&h)) else {
            return Err(self.fail(StatusCode::Failure));
        };
        let mut found = Vec::new();
        while found.len() < READDIR_BATCH {
            if let Some(dot) = dots.first().copied() {
                dots.remove(0);
                if let Ok(m) = std::fs::symlink_metadata(files::path(name).join(dot)) {
                    found.push((dot.to_string(), m));
                }
                continue;
            }
            let Some(entry) = dir.next() else { break };
            let Ok(entry) = entry else { continue };
            // lstat by the directory's descriptor, as sftp-server's lstat of
            // the joined name (an entry gone meanwhile is skipped).
            if let Ok(m) = entry.metadata() {
                found.push((entry.file_name().to_string_lossy().into_owned(), m));
            }
        }
        if found.is_empty() {
            return Err(self.fail(StatusCode::Eof));
        }
        let files = found
            .into_iter()
            .map(|(n, m)| russh_sftp::protocol::File {
                longname: files::long_name(&n, &m, &mut self.names),
                attrs: files::attrs(&m),
                filename: n,
            })
            .collect();
        Ok(Name { id, files })
    }

    pub(super) fn remove(&mut self, id: u32, name: String) -> Reply<Status> {
        self.permit("remove", true)?;
        self.log().info(&format!("remove name \"{name}\""));
        let r = nix::unistd::unlink(name.as_str()).map_err(|e| self.nix(e));
        self.status(id, r)
    }

    pub(super) fn mkdir(&mut self, id: u32, path: String, attrs: FileAttributes) -> Reply<Status> {
        self.permit("mkdir", true)?;
        let mode = attrs.permissions.map(|p| p & 0o7777).unwrap_or(0o777);
        self.log()
            .info(&format!("mkdir name \"{path}\" mode 0{mode:o}"));
        let r = std::fs::DirBuilder::new()
            .mode(mode)
            .create(files::path(&path))
            .map_err(|e| self.errno(&e));
        self.status(id, r)
    }

    pub(super) fn rmdir(&mut self, id: u32, path: String) -> Reply<Status> {
        self.permit("rmdir", true)?;
        self.log().info(&format!("rmdir name \"{path}\""));
        let r = std::fs::remove_dir(files::path(&path)).map_err(|e| self.errno(&e));
        self.status(id, r)
    }

    pub(super) fn name_reply(&self, id: u32, text: String) -> Name {
        Name {
            id,
            files: vec![russh_sftp::protocol::File {
                filename: text.clone(),
                longname: text,
                attrs: FileAttributes::empty(),
            }],
        }
    }

    pub(super) fn realpath(&mut self, id: u32, path: String) -> Reply<Name> {
        self.permit("realpath", false)?;
        let path = if path.is_empty() { ".".into() } else { path };
        self.log().verbose(&format!("realpath \"{path}\""));
        let resolved = files::real_path(&path).map_err(|e| self.errno(&e))?;
        Ok(self.name_reply(id, resolved))
    }

    /// SSH_FXP_RENAME never replaces an existing file: a regular file is linked
    /// to the new name and then unlinked (atomic refusal when the name exists);
    /// anything else is renamed only if the new name does not exist.
    pub(super) fn rename(&mut self, id: u32, old: String, new: String) -> Reply<Status> {
        self.permit("rename", true)?;
        self.log()
            .info(&format!("rename old \"{old}\" new \"{new}\""));
        let r = match std::fs::symlink_metadata(files::path(&old)) {
            Err(e) => Err(self.errno(&e)),
            Ok(m) if m.file_type().is_file() => match std::fs::hard_link(&old, &new) {
                Ok(()) => match std::fs::remove_file(&old) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let _ = std::fs::remove_file(&new);
                        Err(self.errno(&e))
                    }
                },
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EXDEV | libc::EPERM)
                    ) =>
                {
                    // No hard links here: the racy way, as sftp-server.
                    if std::fs::metadata(&new).is_err() {
                        std::fs::rename(&old, &new).map_err(|e| self.errno(&e))
                    } else {
                        Err(self.fail(StatusCode::Failure))
                    }
                }
                Err(e) => Err(self.errno(&e)),
            },
            Ok(_) => {
                if std::fs::metadata(&new).is_err() {
                    std::fs::rename(&old, &new).map_err(|e| self.errno(&e))
                } else {
                    Err(self.fail(StatusCode::Failure))
                }
            }
        };
        self.status(id, r)
    }

    pub(super) fn readlink(&mut self, id: u32, path: String) -> Reply<Name> {
        self.permit("readlink", false)?;
        self.log().verbose(&format!("readlink \"{path}\""));
        let target = std::fs::read_link(files::path(&path)).map_err(|e| self.errno(&e))?;
        Ok(self.name_reply(id, target.to_string_lossy().into_owned()))
    }

    /// OpenSSH's SSH_FXP_SYMLINK carries the link's target first, then the
    /// link's path (the reverse of the draft; every OpenSSH client sends this).
    pub(super) fn symlink(&mut self, id: u32, target: String, link: String) -> Reply<Status> {
        self.permit("symlink", true)?;
        self.log()
            .info(&format!("symlink old \"{target}\" new \"{link}\""));
        let r = std::os::unix::fs::symlink(&target, &link).map_err(|e| self.errno(&e));
        self.status(id, r)
    }
}

/// What a set-attributes request applies to.
#[derive(Clone, Copy)]
pub(super) enum Target<'a> {
    Fd(std::os::fd::BorrowedFd<'a>),
    Path { follow: bool },
}

/// open(2) flags and sftp-server's log words for SSH_FXF_* flags.
fn open_flags(p: OpenFlags) -> (OFlag, String) {
    let mut flags = match (p.contains(OpenFlags::READ), p.contains(OpenFlags::WRITE)) {
        (true, true) => OFlag::O_RDWR,
        (false, true) => OFlag::O_WRONLY,
        _ => OFlag::O_RDONLY,
    };
    let mut words = Vec::new();
    for (f, o, w) in [
        (OpenFlags::READ, OFlag::empty(), "READ"),
        (OpenFlags::WRITE, OFlag::empty(), "WRITE"),
        (OpenFlags::APPEND, OFlag::O_APPEND, "APPEND"),
        (OpenFlags::CREATE, OFlag::O_CREAT, "CREATE"),
        (OpenFlags::TRUNCATE, OFlag::O_TRUNC, "TRUNCATE"),
        (OpenFlags::EXCLUDE, OFlag::O_EXCL, "EXCL"),
    ] {
        if p.contains(f) {
            flags |= o;
            words.push(w);
        }
    }
    (flags, words.join(","))
}

impl Drop for Server {
    /// sftp-server's exit: handles still open are logged as forced closes, then
    /// the session's end.
    fn drop(&mut self) {
        let mut open: Vec<_> = self.handles.drain().collect();
        open.sort_by_key(|(h, _)| *h);
        for (_, o) in &open {
            self.log_close(o, "forced ");
        }
        self.log().info(&format!(
            "session closed for local user {} from [{}]",
            self.s.user, self.s.client_addr
        ));
    }
}
