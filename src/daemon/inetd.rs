//! Inetd mode (`-i`): serve the one connection on standard input and output, as
//! `sshd -i` does under inetd, systemd `Accept=yes` (Debian's `ssh@.service`) or a
//! `ProxyCommand`. No listener, no PID file and no control socket: every
//! connection is its own process, and a control socket path is one daemon's (binding
//! it would take it away from the daemon that owns it).
//!
//! The peer is whatever `getpeername` says when both descriptors are the same
//! internet socket; otherwise (pipes) it is sshd's `UNKNOWN` port 65535, for logs,
//! `SSH_CONNECTION`, `Match` and `from=` alike.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use super::{ConfigSource, StartError, host_key_paths, hostkeys};
use crate::admin::{Control, Registry};
use crate::config::{Config, ConnSpec};
use crate::connection::stream::{FdPair, Transport};
use crate::connection::{self, ConnContext, PreauthEnd};
use crate::lifetime::Ending;
use crate::log::{display_ip, peer};

/// sshd's address and port for a connection that is not on a socket.
const UNKNOWN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 65535);

/// The connection's descriptors, taken from standard input and output.
pub struct Stdio {
    read: OwnedFd,
    write: OwnedFd,
}

/// Take the connection off fds 0 and 1 (close-on-exec duplicates) and put
/// /dev/null in their place, and in fd 2's unless logs go there, as sshd does:
/// nothing else this process prints can then land in the SSH stream, and no child
/// inherits the connection.
pub fn take_stdio(keep_stderr: bool) -> io::Result<Stdio> {
    let read = io::stdin().as_fd().try_clone_to_owned()?;
    let write = io::stdout().as_fd().try_clone_to_owned()?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    if !keep_stderr {
        nix::unistd::dup2_stderr(&null)?;
    }
    Ok(Stdio { read, write })
}

/// Configuration and host keys for one connection.
pub struct Inetd {
    config: Config,
    keys: Vec<hostkeys::HostKey>,
}

/// Load the config and host keys; errors are the same as the daemon's.
pub fn prepare(
    source: &ConfigSource,
    overrides: &[String],
    extra_host_keys: &[PathBuf],
) -> Result<Inetd, StartError> {
    let (config, warnings) = source.load(overrides)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let paths = host_key_paths(&config, extra_host_keys, true)?;
    let keys = hostkeys::load(&paths, config.global().host_key_agent.as_deref())?;
    super::algorithms::check_host_keys(&paths, &keys, config.global())?;
    Ok(Inetd { config, keys })
}

/// Serve the connection to its end. SIGTERM, SIGINT and SIGHUP end it as a daemon's
/// shutdown ends a session (with the reason, then hanging up its processes).
pub async fn serve(p: Inetd, stdio: Stdio) -> Result<PreauthEnd, StartError> {
    let (transport, peer_addr, local) = connection_of(stdio)?;
    let config = Arc::new(p.config);
    let rdomain = match &transport {
        Transport::Tcp(s) => connection::rdomain_of(s),
        _ => None,
    };
    let pre_auth = config.resolve_shared(&ConnSpec {
        user: None,
        host: Some(display_ip(&peer_addr)),
        addr: Some(peer_addr.ip()).filter(|a| !a.is_unspecified()),
        laddr: Some(local.ip()).filter(|a| !a.is_unspecified()),
        lport: Some(local.port()),
        rdomain: rdomain.clone(),
        groups: None,
    });
    if let Transport::Tcp(s) = &transport
        && pre_auth.tcp_keep_alive
    {
        let _ = socket2::SockRef::from(s).set_keepalive(true);
    }
    tracing::debug!(
        "inetd connection from {} on {} port {}",
        peer(&peer_addr),
        display_ip(&local),
        local.port()
    );
    let (host, protocol) = super::local_host(&config, p.keys).await?;
    let protocol = Arc::new(protocol);
    let protocol = super::algorithms::for_connection(&protocol, config.global(), &pre_auth);
    let registry = Registry::new();
    for kind in [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
    ] {
        let mut s = signal(kind)?;
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            // A ProxyCommand's ssh sends SIGHUP as it exits, usually after the
            // connection is already over: only a live one is worth a line.
            if s.recv().await.is_some() && !registry.is_empty() {
                tracing::info!("Received signal; terminating.");
                registry.broadcast(|| Control::End(Ending::Shutdown));
            }
        });
    }
    let ctx = ConnContext {
        peer: peer_addr,
        local,
        config,
        pre_auth,
        host,
        // One connection per process: nothing to share the workers with.
        preauth_gate: None,
        rdomain,
        dns_name: Default::default(),
    };
    Ok(connection::serve(transport, ctx, protocol, registry, || {}).await)
}

/// The transport and the addresses: sshd's `ssh_packet_connection_is_on_socket`
/// (both descriptors with the same internet peer) decides between a socket and
/// `UNKNOWN`.
fn connection_of(s: Stdio) -> io::Result<(Transport, SocketAddr, SocketAddr)> {
    let peer_of = |fd: &OwnedFd| {
        socket2::SockRef::from(fd)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
    };
    match (peer_of(&s.read), peer_of(&s.write)) {
        (Some(a), Some(b)) if a == b => {
            let local = socket2::SockRef::from(&s.read)
                .local_addr()?
                .as_socket()
                .unwrap_or(UNKNOWN);
            let std = std::net::TcpStream::from(s.read);
            std.set_nonblocking(true)?;
            // The write duplicate is the same socket; reading and writing one
            // descriptor is enough.
            drop(s.write);
            let stream = tokio::net::TcpStream::from_std(std)?;
            Ok((Transport::Tcp(stream), a, local))
        }
        _ => Ok((
            Transport::Fds(FdPair::new(s.read, s.write)?),
            UNKNOWN,
            UNKNOWN,
        )),
    }
}
