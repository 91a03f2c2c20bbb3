//! Agent forwarding (`ssh -A`): a Unix socket the user's processes find through
//! `SSH_AUTH_SOCK`; each connection to it becomes an `auth-agent@openssh.com`
//! channel to the client's agent.
//!
//! The socket and its private directory are made, and removed when the connection
//! ends, with the user's identity by the privileged boundary
//! ([`crate::host::user_socket`]). The listener holds one of the user's
//! descriptors and each agent connection another, with a place among the
//! connection's channels ([`super::limits`]).

use std::path::{Path, PathBuf};

use russh::server::Handle;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use super::limits::FdLease;
use super::pump::serve_opened;
use super::tunnels::{Tunnels, hold};
use crate::host::UserInfo;
use crate::host::as_user::Creds;

/// The forwarded agent of one connection; dropping it closes and removes the socket.
pub(crate) struct AgentSocket {
    creds: Creds,
    dir: PathBuf,
    path: PathBuf,
    task: JoinHandle<()>,
    _fds: FdLease,
}

impl AgentSocket {
    /// Create the directory and socket for `user` and start accepting on it.
    pub(crate) async fn start(
        user: &UserInfo,
        handle: Handle,
        tunnels: Tunnels,
    ) -> std::io::Result<Self> {
        let fds = FdLease::take(user.uid, 1).map_err(std::io::Error::other)?;
        let creds = Creds::from(user);
        let made = crate::host::user_socket(&creds, &format!("agent.{}", std::process::id()))
            .await
            .map_err(std::io::Error::other)?;
        let listener = match UnixListener::from_std(made.listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = crate::host::remove_user_socket(&creds, made.dir).await;
                return Err(e);
            }
        };
        let task = tokio::spawn(accept_loop(
            listener,
            handle,
            tunnels,
            user.uid,
            user.name.clone(),
        ));
        Ok(AgentSocket {
            creds,
            dir: made.dir,
            path: made.path,
            task,
            _fds: fds,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        self.task.abort();
        let (creds, dir) = (self.creds.clone(), std::mem::take(&mut self.dir));
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = crate::host::remove_user_socket(&creds, dir.clone()).await {
                        tracing::debug!("agent socket {}: not removed: {e}", dir.display());
                    }
                });
            }
            Err(_) => tracing::debug!("agent socket {}: left behind", dir.display()),
        }
    }
}

/// Accept agent clients; like sshd, only the user (or root) may use the socket even
/// if its permissions were loosened.
async fn accept_loop(
    listener: UnixListener,
    handle: Handle,
    tunnels: Tunnels,
    uid: u32,
    user: String,
) {
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
        let Some(hold) = hold(&tunnels, uid, &user, "agent connection") else {
            continue;
        };
        let handle = handle.clone();
        let tunnels = tunnels.clone();
        tokio::spawn(async move {
            let opened = handle.channel_open_agent().await;
            serve_opened(&tunnels, opened, handle, "agent-connection", stream, hold).await;
        });
    }
}
