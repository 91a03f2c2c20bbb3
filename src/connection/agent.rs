//! Agent forwarding (`ssh -A`): a Unix socket the user's processes find through
//! `SSH_AUTH_SOCK`; each connection to it becomes an `auth-agent@openssh.com`
//! channel to the client's agent.
//!
//! The socket and its private directory are made with the user's identity by
//! the privileged boundary (`AgentSocket`), which passes the listener back and
//! removes them when the connection ends (or when asked: `RemoveAgentSocket`). The listener holds one of the user's
//! descriptors and each agent connection another, with a place among the
//! connection's channels ([`super::limits`]).

use std::os::unix::net::UnixListener as StdUnixListener;

use russh::server::Handle;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use super::limits::FdLease;
use super::pump::serve_opened;
use super::tunnels::{Tunnels, hold};
use crate::host::{Grant, UserInfo};

/// The forwarded agent of one connection; dropping it (with the connection)
/// closes the listener, and the host removes the socket with the connection.
pub(crate) struct AgentSocket {
    path: String,
    task: JoinHandle<()>,
    _fds: FdLease,
}

impl AgentSocket {
    /// Have the host make the directory and socket for `user` (the login
    /// `grant` proves) and start accepting on it.
    pub(crate) async fn start(
        user: &UserInfo,
        grant: &Grant,
        handle: Handle,
        tunnels: Tunnels,
    ) -> std::io::Result<Self> {
        let fds = FdLease::take(user.uid, 1).map_err(std::io::Error::other)?;
        let (socket, path, fd) = grant.agent_socket().await.map_err(std::io::Error::other)?;
        let listener = match UnixListener::from_std(StdUnixListener::from(fd)) {
            Ok(l) => l,
            Err(e) => {
                let _ = grant.remove_agent_socket(socket).await;
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
            path,
            task,
            _fds: fds,
        })
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        self.task.abort();
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
