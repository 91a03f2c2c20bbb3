//! Port forwarding: `direct-tcpip` channels (`ssh -L`, `ssh -D`), `tcpip-forward`
//! listeners with their `forwarded-tcpip` channels (`ssh -R`, sockets and accept
//! loop in [`super::remote`]), and the agent. The bytes of every forwarded channel
//! go through [`super::pump`].
//!
//! Sockets are the user's: created with the user's identity by the privileged
//! boundary through the login's [`Grant`] (`TcpSocket` to connect; `TcpListen`
//! for `-R`, bound and listening as the user), as sshd creates them in the
//! user's own process, so owner-matching firewall rules apply to tunnels. Each holds a share
//! of the user's descriptors and a place among the connection's channels
//! ([`super::limits`]); a request past either is refused and logged.
//!
//! Listeners are not channels: a connection holding only `-R` listeners is unused
//! for `UnusedConnectionTimeout`, as in OpenSSH.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use russh::server::{ChannelOpenHandle, Handle, Msg};
use russh::{Channel, ChannelOpenFailure};

use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use super::agent::AgentSocket;
use super::limits::{FORWARDS_MAX, FdLease, Limit, refused};
use super::login::Login;
use super::pump::pump;
use super::remote::{accept_loop, bind_all};
use super::shared::ConnShared;
use super::tunnels::{Hold, Tunnels, hold};
use crate::config::{Forwarding, GatewayPorts, Settings};
use crate::host::{Grant, KeyOptions};
use crate::log::peer;

/// How long a `direct-tcpip` target may take to accept before the open fails.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Why a forwarding request is refused; decides the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// `AllowTcpForwarding` or the key's `no-port-forwarding`/`restrict`.
    Disabled,
    /// `PermitOpen`/`PermitListen` or the key's `permitopen=`/`permitlisten=`.
    NotPermitted,
    /// A port below 1024 for a user who is not root.
    Privileged,
}

/// May this login open `host:port` (direct-tcpip)?
pub(crate) fn check_open(
    s: &Settings,
    k: &KeyOptions,
    host: &str,
    port: u32,
) -> Result<(), Denied> {
    if s.disable_forwarding
        || k.no_port_forwarding
        || !matches!(s.allow_tcp_forwarding, Forwarding::Yes | Forwarding::Local)
    {
        return Err(Denied::Disabled);
    }
    if !permits(&s.permit_open, host, port)
        || (!k.permit_open.is_empty() && !permits(&k.permit_open, host, port))
    {
        return Err(Denied::NotPermitted);
    }
    Ok(())
}

/// May this login listen on `host:port` (tcpip-forward)?
pub(crate) fn check_listen(
    s: &Settings,
    k: &KeyOptions,
    uid: u32,
    host: &str,
    port: u32,
) -> Result<(), Denied> {
    if s.disable_forwarding
        || k.no_port_forwarding
        || !matches!(s.allow_tcp_forwarding, Forwarding::Yes | Forwarding::Remote)
    {
        return Err(Denied::Disabled);
    }
    if port > u32::from(u16::MAX) {
        return Err(Denied::NotPermitted);
    }
    if port != 0 && port < 1024 && uid != 0 {
        return Err(Denied::Privileged);
    }
    if !permits(&s.permit_listen, host, port)
        || (!k.permit_listen.is_empty() && !permits(&k.permit_listen, host, port))
    {
        return Err(Denied::NotPermitted);
    }
    Ok(())
}

/// A `PermitOpen`/`PermitListen` list: `any`, `none`, or `host:port` entries where
/// either side may be `*`. A key's bare `permitlisten="port"` means any host.
fn permits(list: &[String], host: &str, port: u32) -> bool {
    list.iter().any(|entry| {
        if entry == "any" {
            return true;
        }
        if entry == "none" {
            return false;
        }
        let (h, p) = match entry.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => ("*", entry.as_str()),
        };
        let h = h.trim_start_matches('[').trim_end_matches(']');
        let host_ok = h == "*" || h.eq_ignore_ascii_case(host);
        let port_ok = p == "*" || p.parse::<u32>().ok() == Some(port);
        host_ok && port_ok
    })
}

/// The addresses a `tcpip-forward` for `host` binds, under `GatewayPorts`.
async fn bind_addrs(gateway: GatewayPorts, host: &str) -> Vec<IpAddr> {
    let loopback = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    let wildcard = vec![
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ];
    match gateway {
        GatewayPorts::No => loopback,
        GatewayPorts::Yes => wildcard,
        GatewayPorts::ClientSpecified => match host {
            "" | "*" => wildcard,
            "localhost" => loopback,
            other => match other.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => tokio::net::lookup_host((other, 0))
                    .await
                    .map(|a| a.map(|s| s.ip()).collect())
                    .unwrap_or_default(),
            },
        },
    }
}

/// Connect to `host:port` from a socket of the user's, trying each address the
/// name resolves to in turn.
async fn connect_as(grant: &Grant, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let attempt = async {
            let fd = grant
                .tcp_socket(addr.is_ipv6())
                .await
                .map_err(std::io::Error::other)?;
            TcpSocket::from_std_stream(std::net::TcpStream::from(fd))
                .connect(addr)
                .await
        };
        match attempt.await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}

/// The `-R` listeners of one forward: its accept loops and their descriptors.
struct Listening {
    tasks: Vec<JoinHandle<()>>,
    _fds: FdLease,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// The forwarding state of one connection, owned by its handler: dropping it (the
/// connection ended) closes every listener and removes the agent socket.
pub(crate) struct Forwards {
    tunnels: Tunnels,
    listeners: HashMap<(String, u32), Listening>,
    agent: Option<AgentSocket>,
}

impl Forwards {
    pub(crate) fn new(shared: Arc<ConnShared>, peer: SocketAddr) -> Self {
        Forwards {
            tunnels: Tunnels::new(shared, peer),
            listeners: HashMap::new(),
            agent: None,
        }
    }

    /// The connection's channel places, queue and notices, shared with sessions.
    pub(crate) fn tunnels(&self) -> &Tunnels {
        &self.tunnels
    }

    /// Handle a `direct-tcpip` open: refuse it at once, or connect in a task (russh's
    /// loop must not wait for a slow target) and answer when the connect is done.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn open_direct(
        &self,
        login: Option<&Login>,
        handle: Handle,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
    ) {
        let Some(login) = login else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        };
        match check_open(&login.settings, &login.key_options, host, port) {
            Ok(()) => {}
            Err(Denied::NotPermitted) => {
                tracing::info!(
                    "Received request from {originator} port {originator_port} to connect to host {host} port {port}, but the request was denied."
                );
                reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
                return;
            }
            Err(_) => {
                tracing::info!(
                    "refused local port forward: originator {originator} port {originator_port}, target {host} port {port}"
                );
                reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
                return;
            }
        }
        let Ok(port16) = u16::try_from(port) else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        };
        let Some(hold) = self.hold(login, "local port forward") else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return;
        };
        tracing::debug!(
            "direct-tcpip from {originator} port {originator_port} to {host} port {port}"
        );
        let tunnels = self.tunnels.clone();
        let host = host.to_string();
        let grant = login.grant.clone();
        tokio::spawn(async move {
            let connect = connect_as(&grant, &host, port16);
            let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!("connect_to {host} port {port}: failed: {e}");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                    return;
                }
                Err(_) => {
                    tracing::info!("connect_to {host} port {port}: failed: timed out");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            let reg = tunnels.register(channel.id(), "direct-tcpip", hold, handle);
            reply.accept().await;
            pump(channel, stream, reg).await;
        });
    }

    /// A place for one more channel and one descriptor of the user's, or the
    /// refusal logged.
    fn hold(&self, login: &Login, what: &str) -> Option<Hold> {
        hold(&self.tunnels, login.user.uid, &login.user.name, what)
    }

    /// Handle `tcpip-forward`: check, bind, and accept in a task; `port` 0 is
    /// replaced by the port the kernel chose.
    pub(crate) async fn listen(
        &mut self,
        login: Option<&Login>,
        handle: Handle,
        host: &str,
        port: &mut u32,
    ) -> bool {
        let Some(login) = login else {
            return false;
        };
        let requested = *port;
        if let Err(why) = check_listen(
            &login.settings,
            &login.key_options,
            login.user.uid,
            host,
            requested,
        ) {
            match why {
                Denied::Privileged => tracing::info!(
                    "refused remote port forward: user {} may not listen on privileged port {requested}",
                    login.user.name
                ),
                Denied::NotPermitted => tracing::info!(
                    "Received request from user {} to remote forward to host {host} port {requested}, but the request was denied.",
                    login.user.name
                ),
                Denied::Disabled => {
                    tracing::info!("refused remote port forward: listen {host} port {requested}")
                }
            }
            return false;
        }
        let notices = &self.tunnels.notices;
        let who = format!("user {} from {}", login.user.name, peer(&self.tunnels.peer));
        if self.listeners.len() >= FORWARDS_MAX
            && !self.listeners.contains_key(&(host.to_string(), requested))
        {
            refused!(
                notices,
                Limit::Forwards,
                "refused remote port forward for {who}: listen {host} port {requested}: {FORWARDS_MAX} forwardings on this connection already"
            );
            return false;
        }
        let addrs = bind_addrs(login.settings.gateway_ports, host).await;
        let mut fds = match FdLease::take(login.user.uid, addrs.len()) {
            Ok(l) => l,
            Err(e) => {
                refused!(
                    notices,
                    Limit::Fds,
                    "refused remote port forward for {who}: listen {host} port {requested}: {e}"
                );
                return false;
            }
        };
        let (listeners, bound) = match bind_all(&login.grant, &addrs, requested as u16).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("tcpip-forward listen {host} port {requested}: bind failed: {e}");
                return false;
            }
        };
        fds.shrink_to(listeners.len());
        let bound = u32::from(bound);
        tracing::debug!("tcpip-forward listen {host} port {bound}");
        let tasks = listeners
            .into_iter()
            .map(|l| {
                tokio::spawn(accept_loop(
                    l,
                    handle.clone(),
                    self.tunnels.clone(),
                    login.grant.clone(),
                    login.user.clone(),
                    host.to_string(),
                    bound,
                ))
            })
            .collect();
        self.listeners
            .insert((host.to_string(), bound), Listening { tasks, _fds: fds });
        *port = bound;
        true
    }

    /// Handle `cancel-tcpip-forward`: tunnels already open stay, as in OpenSSH.
    pub(crate) fn cancel(&mut self, host: &str, port: u32) -> bool {
        tracing::debug!("cancel-tcpip-forward {host} port {port}");
        self.listeners.remove(&(host.to_string(), port)).is_some()
    }

    /// Handle `auth-agent-req@openssh.com`.
    pub(crate) async fn start_agent(&mut self, login: Option<&Login>, handle: Handle) -> bool {
        let Some(login) = login else {
            return false;
        };
        let s = &login.settings;
        if s.disable_forwarding
            || !s.allow_agent_forwarding
            || login.key_options.no_agent_forwarding
        {
            tracing::info!("refused agent forwarding for user {}", login.user.name);
            return false;
        }
        if self.agent.is_some() {
            return true;
        }
        match AgentSocket::start(&login.user, &login.grant, handle, self.tunnels.clone()).await {
            Ok(a) => {
                self.agent = Some(a);
                true
            }
            Err(e) => {
                tracing::error!("agent forwarding for {}: {e}", login.user.name);
                false
            }
        }
    }

    /// The forwarded agent's socket, for `SSH_AUTH_SOCK`.
    pub(crate) fn agent_socket(&self) -> Option<String> {
        self.agent.as_ref().map(|a| a.path().to_string())
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn permit_lists() {
        assert!(permits(&list(&["any"]), "h", 1));
        assert!(!permits(&list(&["none"]), "h", 1));
        assert!(permits(&list(&["h:1", "x:2"]), "x", 2));
        assert!(!permits(&list(&["h:1"]), "h", 2));
        assert!(permits(&list(&["h:*"]), "H", 9));
        assert!(permits(&list(&["*:9"]), "any.host", 9));
        assert!(permits(&list(&["[::1]:22"]), "::1", 22));
        assert!(permits(&list(&["8080"]), "localhost", 8080));
    }

    #[test]
    fn open_rules() {
        let mut s = Settings::default();
        let mut k = KeyOptions::default();
        assert_eq!(check_open(&s, &k, "h", 80), Ok(()));
        s.allow_tcp_forwarding = Forwarding::Remote;
        assert_eq!(check_open(&s, &k, "h", 80), Err(Denied::Disabled));
        s.allow_tcp_forwarding = Forwarding::Local;
        s.permit_open = list(&["h:443"]);
        assert_eq!(check_open(&s, &k, "h", 80), Err(Denied::NotPermitted));
        assert_eq!(check_open(&s, &k, "h", 443), Ok(()));
        k.permit_open = list(&["other:443"]);
        assert_eq!(check_open(&s, &k, "h", 443), Err(Denied::NotPermitted));
        k.permit_open.clear();
        k.no_port_forwarding = true;
        assert_eq!(check_open(&s, &k, "h", 443), Err(Denied::Disabled));
        // DisableForwarding wins over everything that would allow it.
        let mut s = Settings::default();
        s.disable_forwarding = true;
        assert_eq!(
            check_open(&s, &KeyOptions::default(), "h", 80),
            Err(Denied::Disabled)
        );
    }

    #[test]
    fn listen_rules() {
        let mut s = Settings::default();
        let k = KeyOptions::default();
        assert_eq!(check_listen(&s, &k, 1000, "localhost", 0), Ok(()));
        assert_eq!(
            check_listen(&s, &k, 1000, "localhost", 80),
            Err(Denied::Privileged)
        );
        assert_eq!(check_listen(&s, &k, 0, "localhost", 80), Ok(()));
        s.allow_tcp_forwarding = Forwarding::Local;
        assert_eq!(
            check_listen(&s, &k, 0, "localhost", 8080),
            Err(Denied::Disabled)
        );
        s.allow_tcp_forwarding = Forwarding::Remote;
        s.permit_listen = list(&["*:8080"]);
        assert_eq!(check_listen(&s, &k, 0, "", 8080), Ok(()));
        assert_eq!(check_listen(&s, &k, 0, "", 8081), Err(Denied::NotPermitted));
        s.disable_forwarding = true;
        assert_eq!(check_listen(&s, &k, 0, "", 8080), Err(Denied::Disabled));
    }

    #[tokio::test]
    async fn gateway_ports() {
        let lo4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let no = bind_addrs(GatewayPorts::No, "").await;
        assert!(no.contains(&lo4) && !no.contains(&any4));
        assert_eq!(bind_addrs(GatewayPorts::No, "0.0.0.0").await, no);
        let yes = bind_addrs(GatewayPorts::Yes, "localhost").await;
        assert!(yes.contains(&any4) && !yes.contains(&lo4));
        let cs = GatewayPorts::ClientSpecified;
        assert_eq!(bind_addrs(cs, "*").await, yes);
        assert_eq!(bind_addrs(cs, "").await, yes);
        assert_eq!(bind_addrs(cs, "localhost").await, no);
        assert_eq!(
            bind_addrs(cs, "127.0.0.2").await,
            vec!["127.0.0.2".parse::<IpAddr>().unwrap()]
        );
    }
}
