//! A Unix socket only one user can reach, for agent forwarding: created in a fresh
//! directory of mode 0700 that is handed to the user only once the socket is in
//! place, so no other local user can reach it or race its creation.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::{HostError, UserInfo};

/// The socket, its private directory (remove it when done) and the bound listener.
pub struct UserSocket {
    pub dir: PathBuf,
    pub path: PathBuf,
    pub listener: std::os::unix::net::UnixListener,
}

/// Create `/tmp/ssh-XXXXXXXXXX/NAME` owned by `user`, listening, non-blocking.
pub fn user_socket(user: &UserInfo, name: &str) -> Result<UserSocket, HostError> {
    let dir = nix::unistd::mkdtemp("/tmp/ssh-XXXXXXXXXX").map_err(|e| HostError::Os {
        what: "mkdtemp".into(),
        source: e,
    })?;
    let path = dir.join(name);
    let made = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))?;
        Ok::<_, std::io::Error>(listener)
    })();
    match made {
        Ok(listener) => Ok(UserSocket {
            dir,
            path,
            listener,
        }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(HostError::Io(e))
        }
    }
}
