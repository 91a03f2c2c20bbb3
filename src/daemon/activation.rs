//! Socket activation without `-i` (systemd `Accept=no`): the listening sockets the
//! service manager passes in `LISTEN_FDS` are used instead of binding `ListenAddress`
//! and `Port`. (With `Accept=yes` the manager passes one connection per process
//! instead, which is `-i`; see [`super::inetd`].)

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Mutex;

use nix::sys::socket::{
    AddressFamily, SockType, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt,
};

use crate::log::display_ip;

/// Sockets claimed at start, until the daemon takes them as listeners.
static ADOPTED: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

/// Claim the sockets passed to this process, if any, and unset the variables that
/// passed them. Call first thing in `main`, while the process has one thread.
pub fn adopt() -> Result<(), crate::host::HostError> {
    let fds = crate::host::take_listen_fds()?;
    if let Ok(mut adopted) = ADOPTED.lock() {
        adopted.extend(fds);
    }
    Ok(())
}

/// Drop whatever was adopted (`-i`, `-t`, `-T` do not listen); the descriptors close.
pub fn discard() {
    if let Ok(mut adopted) = ADOPTED.lock() {
        adopted.clear();
    }
}

/// The adopted sockets as listeners, each logged as `Server listening on ...` like a
/// bound one; empty when none were passed (the daemon then binds as configured).
/// A passed socket that is not a listening TCP socket is an error: the unit is wrong.
pub fn take_listeners() -> io::Result<Vec<std::net::TcpListener>> {
    let fds = match ADOPTED.lock() {
        Ok(mut a) => std::mem::take(&mut *a),
        Err(_) => Vec::new(),
    };
    if fds.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for fd in fds {
        let raw = fd.as_raw_fd();
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "socket activation: descriptor {raw} {what}; only listening TCP sockets (ListenStream=[addr:]port, Accept=no) are supported"
                ),
            )
        };
        if getsockopt(&fd.as_fd(), sockopt::SockType).map_err(io::Error::from)? != SockType::Stream
            || !getsockopt(&fd.as_fd(), sockopt::AcceptConn).map_err(io::Error::from)?
        {
            return Err(bad("is not a listening stream socket"));
        }
        let local: SockaddrStorage = getsockname(raw).map_err(io::Error::from)?;
        if !matches!(
            local.family(),
            Some(AddressFamily::Inet | AddressFamily::Inet6)
        ) {
            return Err(bad("is not an internet socket"));
        }
        let listener = std::net::TcpListener::from(fd);
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        tracing::info!(
            "Server listening on {} port {}.",
            display_ip(&addr),
            addr.port()
        );
        out.push(listener);
    }
    tracing::debug!(
        "using {} listening socket(s) from the service manager; ListenAddress and Port are not used",
        out.len()
    );
    Ok(out)
}
