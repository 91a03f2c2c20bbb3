//! Turning `ListenAddress`/`Port`/`AddressFamily` into bound sockets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Settings;

/// Why a listener could not be set up; the daemon refuses to start, as sshd does when
/// it cannot bind any address.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("bad listen address \"{0}\"")]
    Resolve(String),
    #[error("Bind to port {port} on {addr} failed: {source}.")]
    Bind {
        addr: IpAddr,
        port: u16,
        source: std::io::Error,
    },
    #[error("Cannot bind any address.")]
    NoneBound,
}

/// Every address to listen on, in config order, without duplicates.
pub fn addresses(s: &Settings) -> Result<Vec<SocketAddr>, ListenError> {
    let want_v4 = s.address_family != "inet6";
    let want_v6 = s.address_family != "inet";
    let ports = if s.port.is_empty() {
        vec![22]
    } else {
        s.port.clone()
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    let mut push = |a: SocketAddr| {
        let fam_ok = (a.is_ipv4() && want_v4) || (a.is_ipv6() && want_v6);
        if fam_ok && !out.contains(&a) {
            out.push(a);
        }
    };
    if s.listen_address.is_empty() {
        for &p in &ports {
            push(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p));
            push(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), p));
        }
    }
    for la in &s.listen_address {
        let host = la.host.trim_start_matches('[').trim_end_matches(']');
        let port_list: Vec<u16> = la.port.map(|p| vec![p]).unwrap_or_else(|| ports.clone());
        for p in port_list {
            let resolved: Vec<SocketAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, p)],
                Err(_) => (host, p)
                    .to_socket_addrs()
                    .map_err(|_| ListenError::Resolve(la.host.clone()))?
                    .collect(),
            };
            for a in resolved {
                push(a);
            }
        }
    }
    Ok(out)
}

/// Bind one address the way sshd does: SO_REUSEADDR, IPv6 sockets v6-only so that
/// `0.0.0.0` and `::` can both be bound, non-blocking for tokio.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ListenError> {
    let err = |source| ListenError::Bind {
        addr: addr.ip(),
        port: addr.port(),
        source,
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(err)?;
    }
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(128).map_err(err)?;
    Ok(socket.into())
}
