//! Port forwarding: `direct-tcpip` channels (`ssh -L`, `ssh -D`), `tcpip-forward`
//! listeners with their `forwarded-tcpip` channels (`ssh -R`), and the byte pump that
//! every forwarded channel, agent ones included, shares.
//!
//! Flow control is the one session channels use (see [`super::session`]): russh's
//! loop must never wait on a slow socket, or the data flowing the other way through
//! the same connection stops too, and an echoing peer deadlocks. So client data is
//! always drained into a queue whose size is counted in a [`BacklogCounter`], and the
//! handler throttles the window of a channel whose backlog is high. Data towards the
//! client goes through a fixed buffer and russh's window-aware writer.
//!
//! Listeners are not channels: a connection holding only `-R` listeners is unused
//! for `UnusedConnectionTimeout`, as in OpenSSH.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use russh::server::{ChannelOpenHandle, Handle, Msg};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::ConnShared;
use super::agent::AgentSocket;
use super::handler::Login;
use super::session::{BacklogCounter, Input};
use crate::config::{Forwarding, GatewayPorts, Settings};
use crate::host::KeyOptions;
use crate::lifetime::ChannelStamps;

/// How long a `direct-tcpip` target may take to accept before the open fails.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Backlog counters of the connection's forwarded channels, for the window throttle.
type Backlogs = Arc<Mutex<HashMap<ChannelId, Arc<BacklogCounter>>>>;

/// Why a forwarding request is refused; decides the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// `AllowTcpForwarding` or the key's `no-port-forwarding`/`restrict`.
    Disabled,
    /// `PermitOpen`/`PermitListen` or the key's `permitopen=`/`permitlisten=`.
    NotPermitted,
    /// A port below 1024 for a user who is not root.
    Privileged,
}

/// May this login open `host:port` (direct-tcpip)?
pub fn check_open(s: &Settings, k: &KeyOptions, host: &str, port: u32) -> Result<(), Denied> {
    if k.no_port_forwarding
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
pub fn check_listen(
    s: &Settings,
    k: &KeyOptions,
    uid: u32,
    host: &str,
    port: u32,
) -> Result<(), Denied> {
    if k.no_port_forwarding
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

/// One listening socket, with SO_REUSEADDR like sshd's, and IPv6 kept to IPv6 so
/// both families can share a port.
fn listen_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// Bind every address on one port (the first bind picks it when `port` is 0); the
/// later addresses are best effort, as a host may lack IPv6.
fn bind_all(addrs: &[IpAddr], port: u16) -> std::io::Result<(Vec<TcpListener>, u16)> {
    let mut port = port;
    let mut out = Vec::new();
    let mut first_err = None;
    for ip in addrs {
        match listen_on(SocketAddr::new(*ip, port)) {
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

/// What a forwarded channel's task needs from its connection.
#[derive(Clone)]
pub struct Tunnels {
    shared: Arc<ConnShared>,
    backlogs: Backlogs,
}

impl Tunnels {
    /// Announce a confirmed channel to the lifetime engine (so `ChannelTimeout`
    /// applies and it can be closed by number) and give it a backlog counter.
    fn register(&self, id: ChannelId, kind: &str) -> Registration {
        let n = u32::from(id);
        let stamps = self.shared.events.channel_opened(n, kind);
        if let Ok(mut c) = self.shared.channels.lock() {
            c.insert(n, (id, false));
        }
        let backlog = Arc::new(BacklogCounter::default());
        if let Ok(mut b) = self.backlogs.lock() {
            b.insert(id, Arc::clone(&backlog));
        }
        Registration {
            id,
            backlogs: Arc::clone(&self.backlogs),
            stamps,
            backlog,
        }
    }

    /// Pump an accepted socket through a channel the server opens (forwarded-tcpip
    /// or agent), once the client confirms it.
    pub async fn serve_opened<S>(
        &self,
        opened: Result<Channel<Msg>, russh::Error>,
        kind: &str,
        stream: S,
    ) where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        match opened {
            Ok(channel) => {
                let reg = self.register(channel.id(), kind);
                pump(channel, stream, reg).await;
            }
            Err(e) => tracing::debug!("{kind} channel not opened: {e}"),
        }
    }
}

/// A forwarded channel's entry in the connection's tables, withdrawn when its pump
/// ends. The engine hears of the close from the handler's `channel_close`.
struct Registration {
    id: ChannelId,
    backlogs: Backlogs,
    stamps: Arc<ChannelStamps>,
    backlog: Arc<BacklogCounter>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut b) = self.backlogs.lock() {
            b.remove(&self.id);
        }
    }
}

/// Copy between a channel and a socket until both sides sent EOF, either side
/// fails, or the client closes the channel (which drops the socket).
async fn pump<S>(channel: Channel<Msg>, stream: S, reg: Registration)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut read, write) = channel.split();
    let (sock_read, sock_write) = tokio::io::split(stream);
    let (tx, rx) = mpsc::unbounded_channel();
    // Never blocks on the socket: see the module docs.
    let drain = super::pump::from_client(&mut read, &tx, &reg.stamps, &reg.backlog);
    let copy = async {
        tokio::try_join!(
            to_socket(rx, sock_write, &reg.backlog),
            to_client(sock_read, write.make_writer(), &reg.stamps),
        )
    };
    tokio::select! {
        _ = drain => {}
        _ = copy => {
            let _ = write.close().await;
        }
    }
}

/// Client data to the socket; the client's EOF shuts the socket's write side.
async fn to_socket(
    mut rx: mpsc::UnboundedReceiver<Input>,
    mut sock: impl AsyncWrite + Unpin,
    backlog: &BacklogCounter,
) -> Result<(), std::io::Error> {
    while let Some(msg) = rx.recv().await {
        match msg {
            Input::Data(data) => {
                let written = sock.write_all(&data).await;
                backlog.sub(data.len());
                written?;
            }
            Input::Eof => {
                let _ = sock.shutdown().await;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Socket data to the client through the window-aware writer; the socket's EOF
/// becomes the channel's.
async fn to_client(
    sock: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    stamps: &ChannelStamps,
) -> Result<(), std::io::Error> {
    super::pump::to_client(sock, &mut to, stamps).await?;
    to.shutdown().await
}

/// The forwarding state of one connection, owned by its handler: dropping it (the
/// connection ended) closes every listener and removes the agent socket.
pub struct Forwards {
    tunnels: Tunnels,
    listeners: HashMap<(String, u32), Vec<JoinHandle<()>>>,
    agent: Option<AgentSocket>,
}

impl Forwards {
    pub fn new(shared: Arc<ConnShared>) -> Self {
        Forwards {
            tunnels: Tunnels {
                shared,
                backlogs: Arc::default(),
            },
            listeners: HashMap::new(),
            agent: None,
        }
    }

    /// The backlog of a forwarded channel, for the handler's window throttle.
    pub fn backlog(&self, id: ChannelId) -> Option<Arc<BacklogCounter>> {
        self.tunnels
            .backlogs
            .lock()
            .ok()
            .and_then(|b| b.get(&id).cloned())
    }

    /// Handle a `direct-tcpip` open: refuse it at once, or connect in a task (russh's
    /// loop must not wait for a slow target) and answer when the connect is done.
    #[allow(clippy::too_many_arguments)]
    pub async fn open_direct(
        &self,
        login: Option<&Login>,
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
        tracing::debug!(
            "direct-tcpip from {originator} port {originator_port} to {host} port {port}"
        );
        let tunnels = self.tunnels.clone();
        let host = host.to_string();
        tokio::spawn(async move {
            let connect = TcpStream::connect((host.as_str(), port16));
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
            let reg = tunnels.register(channel.id(), "direct-tcpip");
            reply.accept().await;
            pump(channel, stream, reg).await;
        });
    }

    /// Handle `tcpip-forward`: check, bind, and accept in a task; `port` 0 is
    /// replaced by the port the kernel chose.
    pub async fn listen(
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
        let addrs = bind_addrs(login.settings.gateway_ports, host).await;
        let (listeners, bound) = match bind_all(&addrs, requested as u16) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("tcpip-forward listen {host} port {requested}: bind failed: {e}");
                return false;
            }
        };
        let bound = u32::from(bound);
        tracing::debug!("tcpip-forward listen {host} port {bound}");
        let tasks = listeners
            .into_iter()
            .map(|l| {
                tokio::spawn(accept_loop(
                    l,
                    handle.clone(),
                    self.tunnels.clone(),
                    host.to_string(),
                    bound,
                ))
            })
            .collect();
        if let Some(old) = self.listeners.insert((host.to_string(), bound), tasks) {
            old.iter().for_each(JoinHandle::abort);
        }
        *port = bound;
        true
    }

    /// Handle `cancel-tcpip-forward`: tunnels already open stay, as in OpenSSH.
    pub fn cancel(&mut self, host: &str, port: u32) -> bool {
        tracing::debug!("cancel-tcpip-forward {host} port {port}");
        match self.listeners.remove(&(host.to_string(), port)) {
            Some(tasks) => {
                tasks.iter().for_each(JoinHandle::abort);
                true
            }
            None => false,
        }
    }

    /// Handle `auth-agent-req@openssh.com`.
    pub fn start_agent(&mut self, login: Option<&Login>, handle: Handle) -> bool {
        let Some(login) = login else {
            return false;
        };
        if !login.settings.allow_agent_forwarding || login.key_options.no_agent_forwarding {
            tracing::info!("refused agent forwarding for user {}", login.user.name);
            return false;
        }
        if self.agent.is_some() {
            return true;
        }
        match AgentSocket::start(&login.user, handle, self.tunnels.clone()) {
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
    pub fn agent_socket(&self) -> Option<String> {
        self.agent
            .as_ref()
            .map(|a| a.path().to_string_lossy().into_owned())
    }
}

impl Drop for Forwards {
    fn drop(&mut self) {
        for tasks in self.listeners.values() {
            tasks.iter().for_each(JoinHandle::abort);
        }
    }
}

/// Accept on a `-R` listener: each connection gets its own `forwarded-tcpip` channel.
async fn accept_loop(
    listener: TcpListener,
    handle: Handle,
    tunnels: Tunnels,
    host: String,
    port: u32,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                tracing::debug!("accept on forwarded port {port}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
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
            tunnels
                .serve_opened(opened, "forwarded-tcpip", stream)
                .await;
        });
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
