//! `russh-sftp`'s request callbacks, each answered by the synchronous method of
//! the same name in `server` (one request at a time, as sftp-server).

use std::collections::HashMap;
use std::os::fd::AsFd;

use russh_sftp::protocol::{
    Attrs, Data, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode, Version,
};
use russh_sftp::server::{Handler, StatusReply};

use super::files::message;
use super::server::{Open, Server, Target};

/// `russh-sftp` wants futures; the work is synchronous.
fn ready<T: Send>(v: T) -> impl std::future::Future<Output = T> + Send {
    std::future::ready(v)
}

impl Handler for Server {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusReply::new(StatusCode::OpUnsupported).with_message(message(StatusCode::OpUnsupported))
    }

    fn init(
        &mut self,
        version: u32,
        _extensions: HashMap<String, String>,
    ) -> impl std::future::Future<Output = Result<Version, Self::Error>> + Send {
        self.log()
            .verbose(&format!("received client version {version}"));
        let mut v = Version::new();
        for (ext, ver) in super::ext::ADVERTISED {
            if let Some((name, writes)) = super::ext::request_of(ext)
                && self.permit(name, writes).is_ok()
            {
                v.extensions.insert(ext.to_string(), ver.to_string());
            }
        }
        ready(Ok(v))
    }

    fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> impl std::future::Future<Output = Result<Handle, Self::Error>> + Send {
        ready(Server::open(self, filename, pflags, attrs).map(|handle| Handle { id, handle }))
    }

    fn close(
        &mut self,
        id: u32,
        handle: String,
    ) -> impl std::future::Future<Output = Result<Status, Self::Error>> + Send {
        ready(Server::close(self, id, handle))
    }

    fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> impl std::future::Future<Output = Result<Data, Self::Error>> + Send {
        ready(Server::read(self, id, handle, offset, len))
    }

    fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<Status, Self::Error>> + Send {
        ready(Server::write(self, id, handle, offset, data))
    }

    fn lstat(
        &mut self,
        id: u32,
        path: String,
    ) -> impl std::future::Future<Output = Result<Attrs, Self::Error>> + Send {
        ready(Server::stat(self, id, path, false))
    }

    fn fstat(
        &mut self,
        id: u32,
        handle: String,
    ) -> impl std::future::Future<Output = Result<Attrs, Self::Error>> + Send {
        ready(Server::fstat(self, id, handle))
    }

    fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> impl std::future::Future<Output = Result<Status, Self::Error>> + Send {
        let r = self
            .permit("setstat", true)
            .and_then(|()| self.set_attrs(&path, &attrs, Target::Path { follow: true }));
        ready(self.status(id, r))
    }

    fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> impl std::future::Future<Output = Result<Status, Self::Error>> + Send {
        let r = self.permit("fsetstat", true).and_then(|()| {
            let found = match self.file(&handle) {
                Some(Open::File { file, name, .. }) => Some((file.try_clone(), name.clone())),
                _ => None,
            };
            match found {
                Some((Ok(fd), name)) => self.set_attrs(&name, &attrs, Target::Fd(fd.as_fd())),
                Some((Err(e), _)) => Err(self.errno(&e)),
                None => Err(self.fail(StatusCode::Failure)),
            }
        });
        ready(self.status(id, r))
    }

    fn opendir(
        &mut self,
        id: u32,
        path: String,
    ) -> impl std::future::Future<Output = Result<Handle, Self::Error>> + Send {
        ready(Server::opendir(self, path).map(|handle| Handle { id, handle }))
    }

    fn readdir(
        &mut self,
        id: u32,
        handle: String,
    ) -> impl std::future::Future<Output = Result<Name, Self::Error>> + Send {
        ready(Server::readdir(self, id, handle))
    }

    fn remove(
        &mut self,
        id: u32,
        filename: String,
    ) -> impl std::future::Future<Output = Result<Status, Self::Error>> + Send {
        ready(Server::remove(self, id, filename))
    }

    fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> impl std::future::Future<Output = Result<Status, Self::Error>> + Send {
        ready(Server::mkdir(self, id, path, attrs))
    }

    fn rmdir(
        &mut self,
        id: u32,
        path: String,
    ) -> impl std::future::Future<Output = Result<Status, Self::Error>> + Send {
        ready(Server::rmdir(self, id, path))
    }

    fn realpath(
        &mut self,
        id: u32,
        path: String,
    ) -> impl std::future::Future<Output = Result<Name, Self::Error>> + Send {
        ready(Server::realpath(self, id, path))
    }

    fn stat(
        &mut self,
        id: u32,
        path: String,
    ) -> impl std::future::Future<Output = Result<Attrs, Self::Error>> + Send {
        ready(Server::stat(self, id, path, true))
    }

    fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> impl std::future::Future<Output = Result<Status, Self::Error>> + Send {
        ready(Server::rename(self, id, oldpath, newpath))
    }

    fn readlink(
        &mut self,
        id: u32,
        path: String,
    ) -> impl std::future::Future<Output = Result<Name, Self::Error>> + Send {
        ready(Server::readlink(self, id, path))
    }

    fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> impl std::future::Future<Output = Result<Status, Self::Error>> + Send {
        // The library names the fields after the draft; OpenSSH sends the
        // target first (see `Server::symlink`).
        ready(Server::symlink(self, id, linkpath, targetpath))
    }

    fn extended(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<Packet, Self::Error>> + Send {
        ready(self.extended_request(id, &request, data))
    }
}
