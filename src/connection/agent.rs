//! Agent forwarding (`ssh -A`): a Unix socket the user's processes find through
//! `SSH_AUTH_SOCK`; each connection to it becomes an `auth-agent@openssh.com`
//! channel to the client's agent.
//!
//! The socket lives in a fresh directory of mode 0700 that is handed to the user only
//! once the socket in it is in place, so no other local user can reach the agent or
//! race its creation, and the whole directory goes when the connection ends.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use russh::server::Handle;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use super::forward::Tunnels;
use crate::host::UserInfo;

/// The forwarded agent of one connection; dropping it closes and removes the socket.
pub struct AgentSocket {
    dir: PathBuf,
    path: PathBuf,
    task: JoinHandle<()>,
}

impl AgentSocket {
    /// Create the directory and socket for `user` and start accepting on it.
    pub fn start(user: &UserInfo, handle: Handle, tunnels: Tunnels) -> std::io::Result<Self> {
        let dir = nix::unistd::mkdtemp("/tmp/ssh-XXXXXXXXXX").map_err(std::io::Error::from)?;
        let path = dir.join(format!("agent.{}", std::process::id()));
        let made = (|| {
            let listener = UnixListener::bind(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))?;
            Ok::<_, std::io::Error>(listener)
        })();
        let listener = match made {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let task = tokio::spawn(accept_loop(listener, handle, tunnels, user.uid));
        Ok(AgentSocket { dir, path, task })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Accept agent clients; like sshd, only the user (or root) may use the socket even
/// if its permissions were loosened.
async fn accept_loop(listener: UnixListener, handle: Handle, tunnels: Tunnels, uid: u32) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::debug!("accept on agent socket: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(c) if c.uid() == uid || c.uid() == 0 => {}
            Ok(c) => {
                tracing::info!("agent socket: refused connection from uid {}", c.uid());
                continue;
            }
            Err(e) => {
                tracing::debug!("agent socket: no peer credentials: {e}");
                continue;
            }
        }
        let handle = handle.clone();
        let tunnels = tunnels.clone();
        tokio::spawn(async move {
            let opened = handle.channel_open_agent().await;
            tunnels
                .serve_opened(opened, "agent-connection", stream)
                .await;
        });
    }
}
