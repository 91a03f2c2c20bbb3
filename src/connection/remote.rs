//! The `-R` side of port forwarding: listening sockets made and bound as the user, and
//! connections accepted on them as the user, each through its own
//! `forwarded-tcpip` channel. The policy (may this login listen here?) is in
//! [`super::forward`].

use std::net::{IpAddr, SocketAddr, TcpListener as StdListener};
use std::os::fd::OwnedFd;

use russh::server::Handle;
use tokio::net::TcpStream;

use super::pump::serve_opened;
use super::tunnels::{Tunnels, hold};
use crate::host::{Grant, UserInfo, WatchedListener};

/// One listening socket, made, bound and listening as the user by the host
/// (`TcpListen`): the network side neither binds nor listens itself.
async fn listen_on(grant: &Grant, addr: SocketAddr) -> std::io::Result<StdListener> {
    let fd = grant.tcp_listen(addr).await.map_err(|e| match e {
        crate::host::HostError::Io(e) => e,
        e => std::io::Error::other(e),
    })?;
    Ok(StdListener::from(fd))
}

/// Bind every address on one port (the first bind picks it when `port` is 0); the
/// later addresses are best effort, as a host may lack IPv6.
pub(super) async fn bind_all(
    grant: &Grant,
    addrs: &[IpAddr],
    port: u16,
) -> std::io::Result<(Vec<StdListener>, u16)> {
    let mut port = port;
    let mut out = Vec::new();
    let mut first_err = None;
    for ip in addrs {
        match listen_on(grant, SocketAddr::new(*ip, port)).await {
            Ok(l) => {
                if port == 0 {
                    port = l.local_addr()?.port();
                }
                out.push(l);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match (out.is_empty(), first_err) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(std::io::Error::other("no address to bind")),
        _ => Ok((out, port)),
    }
}

/// Connections a `-R` listener takes per trip to the user's identity: a burst of
/// connections costs one thread per this many, not one each.
const ACCEPT_BATCH: usize = 32;

/// Accept on a `-R` listener, with the user's identity (the host accepts, on
/// `Accept`) so that each connection is the user's like the listener: each gets
/// its own `forwarded-tcpip` channel.
pub(super) async fn accept_loop(
    listener: StdListener,
    handle: Handle,
    tunnels: Tunnels,
    grant: Grant,
    user: UserInfo,
    host: String,
    port: u32,
) {
    let listener = match WatchedListener::new(OwnedFd::from(listener)) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("forwarded port {port}: {e}");
            return;
        }
    };
    let accept = |dup| grant.accept(dup, ACCEPT_BATCH as u32);
    loop {
        let accepted = match listener.next(ACCEPT_BATCH, accept).await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                tracing::debug!("accept on forwarded port {port}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        for (fd, from) in accepted {
            // Past a limit the connection is closed at once, as if nobody listened.
            let Some(hold) = hold(&tunnels, user.uid, &user.name, "forwarded connection") else {
                continue;
            };
            let stream = match TcpStream::from_std(std::net::TcpStream::from(fd)) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("forwarded connection on port {port}: {e}");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let handle = handle.clone();
            let tunnels = tunnels.clone();
            let host = host.clone();
            tokio::spawn(async move {
                let opened = handle
                    .channel_open_forwarded_tcpip(
                        host,
                        port,
                        crate::log::display_ip(&from),
                        u32::from(from.port()),
                    )
                    .await;
                serve_opened(&tunnels, opened, handle, "forwarded-tcpip", stream, hold).await;
            });
        }
    }
}
