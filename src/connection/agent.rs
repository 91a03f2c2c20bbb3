//! Agent forwarding (`ssh -A`): a Unix socket the user's processes find through
//! `SSH_AUTH_SOCK`; each connection to it becomes an `auth-agent@openssh.com`
//! channel to the client's agent.
//!
//! The socket and its private directory come from the privileged boundary
//! ([`crate::host::user_socket`]); the directory goes when the connection ends.

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
        let made = crate::host::user_socket(user, &format!("agent.{}", std::process::id()))
            .map_err(std::io::Error::other)?;
        let listener = match UnixListener::from_std(made.listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&made.dir);
                return Err(e);
            }
        };
        let task = tokio::spawn(accept_loop(listener, handle, tunnels, user.uid));
        Ok(AgentSocket {
            dir: made.dir,
            path: made.path,
            task,
        })
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
