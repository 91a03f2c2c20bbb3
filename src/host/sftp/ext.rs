//! OpenSSH's SFTP extensions, which sftp-server advertises and its clients use
//! (`sftp` renames with posix-rename, `df` uses statvfs, `ls -l` names owners
//! with users-groups-by-id, sshfs uses hardlink, fsync and statvfs). Payloads
//! are read and written with `russh-sftp`'s own encoder.

use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};

use bytes::Bytes;
use russh_sftp::protocol::{ExtendedReply, FileAttributes, Packet, StatusCode};

use super::files;
use super::server::{Open, Reply, Server, Target};

/// Extensions in sftp-server's order, with their versions.
pub(super) const ADVERTISED: &[(&str, &str)] = &[
    ("posix-rename@openssh.com", "1"),
    ("statvfs@openssh.com", "2"),
    ("fstatvfs@openssh.com", "2"),
    ("hardlink@openssh.com", "1"),
    ("fsync@openssh.com", "1"),
    ("lsetstat@openssh.com", "1"),
    ("limits@openssh.com", "1"),
    ("expand-path@openssh.com", "1"),
    ("copy-data", "1"),
    ("home-directory", "1"),
    ("users-groups-by-id@openssh.com", "1"),
];

/// The `-P`/`-p` name of an extension, and whether it writes (refused by `-R`).
pub(super) fn request_of(ext: &str) -> Option<(&'static str, bool)> {
    Some(match ext {
        "posix-rename@openssh.com" => ("posix-rename", true),
        "statvfs@openssh.com" => ("statvfs", false),
        "fstatvfs@openssh.com" => ("fstatvfs", false),
        "hardlink@openssh.com" => ("hardlink", true),
        "fsync@openssh.com" => ("fsync", true),
        "lsetstat@openssh.com" => ("lsetstat", true),
        "limits@openssh.com" => ("limits", false),
        "expand-path@openssh.com" => ("expand-path", false),
        "copy-data" => ("copy-data", true),
        "home-directory" => ("home-directory", false),
        "users-groups-by-id@openssh.com" => ("users-groups-by-id", false),
        _ => return None,
    })
}

/// Handles the client may hold: the descriptor limit less stdio, syslog and a
/// spare, as sftp-server's limits reply says.
pub(super) fn max_handles() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft.saturating_sub(5))
        .unwrap_or(0)
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    russh_sftp::ser::to_bytes(v)
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

impl Server {
    fn parse<T: serde::de::DeserializeOwned>(&self, data: &mut Bytes) -> Reply<T> {
        russh_sftp::de::from_bytes::<T>(data).map_err(|_| self.fail(StatusCode::BadMessage))
    }

    fn done(&self, id: u32, r: Reply<()>) -> Reply<Packet> {
        self.status(id, r).map(Packet::Status)
    }

    fn reply(id: u32, data: Vec<u8>) -> Reply<Packet> {
        Ok(Packet::ExtendedReply(ExtendedReply { id, data }))
    }

    pub(super) fn extended_request(
        &mut self,
        id: u32,
        request: &str,
        data: Vec<u8>,
    ) -> Reply<Packet> {
        let Some((name, writes)) = request_of(request) else {
            let shown: String = request.chars().take(100).collect();
            self.log()
                .error(&format!("Unknown extended request \"{shown}\""));
            return Err(self.fail(StatusCode::OpUnsupported));
        };
        self.permit(name, writes)?;
        let mut data = Bytes::from(data);
        let d = &mut data;
        match name {
            "posix-rename" => {
                let (old, new): (String, String) = self.parse(d)?;
                self.log()
                    .info(&format!("posix-rename old \"{old}\" new \"{new}\""));
                let r = std::fs::rename(&old, &new).map_err(|e| self.errno(&e));
                self.done(id, r)
            }
            "statvfs" => {
                let path: String = self.parse(d)?;
                self.log().info(&format!("statvfs \"{path}\""));
                let st = nix::sys::statvfs::statvfs(path.as_str()).map_err(|e| self.nix(e))?;
                Self::reply(id, statvfs_reply(&st))
            }
            "fstatvfs" => {
                let handle: String = self.parse(d)?;
                let st = match self.fd_of(&handle) {
                    Some(f) => nix::sys::statvfs::fstatvfs(f.as_fd()),
                    None => return Err(self.fail(StatusCode::Failure)),
                };
                let st = st.map_err(|e| self.nix(e))?;
                Self::reply(id, statvfs_reply(&st))
            }
            "hardlink" => {
                let (old, new): (String, String) = self.parse(d)?;
                self.log()
                    .info(&format!("hardlink old \"{old}\" new \"{new}\""));
                let r = std::fs::hard_link(&old, &new).map_err(|e| self.errno(&e));
                self.done(id, r)
            }
            "fsync" => {
                let handle: String = self.parse(d)?;
                let found = match self.file(&handle) {
                    Some(Open::File { file, name, .. }) => Some((file.try_clone(), name.clone())),
                    _ => None,
                };
                let Some((file, name)) = found else {
                    return Err(self.fail(StatusCode::NoSuchFile));
                };
                self.log().verbose(&format!("fsync \"{name}\""));
                let r = file.and_then(|f| f.sync_all()).map_err(|e| self.errno(&e));
                self.done(id, r)
            }
            "lsetstat" => {
                let (path, attrs): (String, FileAttributes) = self.parse(d)?;
                let r = if attrs.size.is_some() {
                    // Nonsensical for links, as sftp-server says.
                    Err(self.fail(StatusCode::BadMessage))
                } else {
                    self.set_attrs(&path, &attrs, Target::Path { follow: false })
                };
                self.done(id, r)
            }
            "limits" => {
                let max = u64::from(super::server::MAX_PACKET);
                Self::reply(
                    id,
                    encode(&(
                        max,
                        u64::from(super::server::MAX_READ),
                        max - 1024,
                        max_handles(),
                    )),
                )
            }
            "expand-path" => {
                let path: String = self.parse(d)?;
                self.expand(id, path)
            }
            "copy-data" => {
                let args: (String, u64, u64, String, u64) = self.parse(d)?;
                let r = self.copy_data(args);
                self.done(id, r)
            }
            "home-directory" => {
                let user: String = self.parse(d)?;
                let home = if user.is_empty() {
                    Some(self.s.home.clone())
                } else if self.s.jailed {
                    None
                } else {
                    nix::unistd::User::from_name(&user)
                        .ok()
                        .flatten()
                        .map(|u| u.dir.to_string_lossy().into_owned())
                };
                let Some(home) = home else {
                    return Err(self.fail(StatusCode::Failure));
                };
                self.log().verbose(&format!("home-directory \"{home}\""));
                Ok(Packet::Name(self.name_reply(id, home)))
            }
            "users-groups-by-id" => {
                let (uids, gids): (Vec<u8>, Vec<u8>) = self.parse(d)?;
                let ids = |b: &[u8]| -> Vec<u32> {
                    b.chunks_exact(4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .collect()
                };
                let (uids, gids) = (ids(&uids), ids(&gids));
                let mut users = Vec::new();
                for u in &uids {
                    users.extend(encode(&self.names.user(*u).unwrap_or_default()));
                }
                let mut groups = Vec::new();
                for g in &gids {
                    groups.extend(encode(&self.names.group(*g).unwrap_or_default()));
                }
                self.log().verbose(&format!(
                    "users-groups-by-id: {} users, {} groups",
                    uids.len(),
                    gids.len()
                ));
                Self::reply(id, encode(&(users, groups)))
            }
            _ => Err(self.fail(StatusCode::OpUnsupported)),
        }
    }

    /// expand-path: `~` and `~/...` are the working directory (the start
    /// directory), relative paths are under it, then realpath.
    fn expand(&mut self, id: u32, path: String) -> Reply<Packet> {
        let cwd = std::env::current_dir()
            .map_err(|e| self.errno(&e))?
            .to_string_lossy()
            .into_owned();
        let path = if path.is_empty() {
            ".".to_string()
        } else if path == "~" {
            cwd
        } else if let Some(rest) = path.strip_prefix("~/") {
            format!("{cwd}/{rest}")
        } else if let Some(rest) = path.strip_prefix('~') {
            let (user, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let home = (!self.s.jailed)
                .then(|| nix::unistd::User::from_name(user).ok().flatten())
                .flatten();
            match home {
                Some(u) => format!("{}{tail}", u.dir.to_string_lossy()),
                None => {
                    return Err(self
                        .fail(StatusCode::NoSuchFile)
                        .with_message("no such user"));
                }
            }
        } else if !path.starts_with('/') {
            format!("{cwd}/{path}")
        } else {
            path
        };
        self.log().verbose(&format!("expand \"{path}\""));
        let resolved = files::real_path(&path).map_err(|e| self.errno(&e))?;
        Ok(Packet::Name(self.name_reply(id, resolved)))
    }

    /// copy-data: copy between two open files on the server, never a file onto
    /// itself (same handle, name or inode).
    fn copy_data(&mut self, args: (String, u64, u64, String, u64)) -> Reply<()> {
        let (rh, mut roff, rlen, wh, mut woff) = args;
        let get = |s: &mut Server, h: &str| match s.file(h) {
            Some(Open::File {
                file, name, append, ..
            }) => file.try_clone().ok().map(|f| (f, name.clone(), *append)),
            _ => None,
        };
        let (Some((rf, rname, _)), Some((wf, wname, append))) = (get(self, &rh), get(self, &wh))
        else {
            self.log().error("copy_data: bad read or write fd");
            return Err(self.fail(files::portable(libc::EBADF)));
        };
        let (rst, wst) = match (rf.metadata(), wf.metadata()) {
            (Ok(r), Ok(w)) => (r, w),
            (Err(e), _) | (_, Err(e)) => return Err(self.errno(&e)),
        };
        if rh == wh
            || rname == wname
            || (rst.dev() != 0
                && rst.ino() != 0
                && rst.dev() == wst.dev()
                && rst.ino() == wst.ino())
        {
            self.log().error(&format!(
                "copy_data: refusing to read/write same file: read \"{rname}\" dev {} ino {}, \
                 write \"{wname}\" dev {} ino {}",
                rst.dev(),
                rst.ino(),
                wst.dev(),
                wst.ino()
            ));
            return Err(self.fail(StatusCode::Failure));
        }
        let until_eof = rlen == 0;
        let mut left = if until_eof { u64::MAX - roff } else { rlen };
        let mut buf = vec![0u8; 64 * 1024];
        let (mut nread, mut nwritten) = (0u64, 0u64);
        let mut result = Ok(());
        while left > 0 {
            let want = (buf.len() as u64).min(left) as usize;
            let n = match rf.read_at(&mut buf[..want], roff) {
                Ok(0) => {
                    if !until_eof {
                        result = Err(self.fail(StatusCode::Eof));
                    }
                    break;
                }
                Ok(n) => n,
                Err(e) => {
                    result = Err(self.errno(&e));
                    break;
                }
            };
            nread += n as u64;
            let w = if append {
                std::io::Write::write_all(&mut &wf, &buf[..n])
            } else {
                wf.write_all_at(&buf[..n], woff)
            };
            if let Err(e) = w {
                result = Err(self.errno(&e));
                break;
            }
            nwritten += n as u64;
            roff += n as u64;
            woff += n as u64;
            left -= n as u64;
        }
        if let Some(Open::File { read, .. }) = self.file(&rh) {
            *read += nread;
        }
        if let Some(Open::File { written, .. }) = self.file(&wh) {
            *written += nwritten;
        }
        result
    }
}

/// The statvfs@openssh.com reply: eleven u64s.
fn statvfs_reply(st: &nix::sys::statvfs::Statvfs) -> Vec<u8> {
    use nix::sys::statvfs::FsFlags;
    let mut flag = 0u64;
    if st.flags().contains(FsFlags::ST_RDONLY) {
        flag |= 1;
    }
    if st.flags().contains(FsFlags::ST_NOSUID) {
        flag |= 2;
    }
    encode(&(
        st.block_size(),
        st.fragment_size(),
        st.blocks(),
        st.blocks_free(),
        st.blocks_available(),
        st.files(),
        st.files_free(),
        st.files_available(),
        st.filesystem_id(),
        flag,
        st.name_max(),
    ))
}
