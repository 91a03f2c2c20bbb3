//! [`Host`]: the one handle through which the network side reaches the privileged
//! boundary, either in this process ([`Service`]) or in the root monitor over the
//! monitor link ([`Client`]); the typed calls (client.rs) are the same for both.
//!
//! [`Service`] is the host itself: the privilege level (decided once), the config
//! it resolves `Match` with, each connection's authentication state and the login
//! tokens it issued. Both are cheap to clone; every clone is the same host.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::api::{self, ConnId, LoginToken, Reply, Request};
use super::auth_state::{ConnState, HostLogin};
use super::process::{ProcessKiller, WeakKiller};
use super::wire::Client;
use super::{HostError, Privilege};
use crate::config::Config;

/// The handle; see the module docs.
#[derive(Clone)]
pub struct Host(Via);

#[derive(Clone)]
enum Via {
    Local(Service),
    Remote(Privilege, Client),
}

impl Host {
    /// The host for a daemon running with `privilege` under `config`, served in
    /// this process.
    pub fn new(privilege: Privilege, config: Arc<Config>) -> Host {
        Host(Via::Local(Service::new(privilege, config)))
    }

    /// The host in the monitor, which runs with `privilege`, over `link` (the
    /// network process's end of the monitor socketpair); its notices come out of
    /// the second value. Needs a tokio runtime (the link's reader task runs on it).
    pub(crate) fn remote(
        privilege: Privilege,
        link: std::os::fd::OwnedFd,
    ) -> std::io::Result<(Host, super::wire::Notices)> {
        let (client, notices) = Client::new(link)?;
        Ok((Host(Via::Remote(privilege, client)), notices))
    }

    /// The privilege level the host runs with.
    pub fn privilege(&self) -> Privilege {
        match &self.0 {
            Via::Local(s) => s.0.privilege,
            Via::Remote(p, _) => *p,
        }
    }

    /// A reloaded config: connections opened from now on are judged by it. A
    /// remote host reloads its own (the monitor reads the files).
    pub fn set_config(&self, config: Arc<Config>) {
        if let Via::Local(s) = &self.0 {
            s.set_config(config);
        }
    }

    /// Serve one request, here or in the monitor.
    pub(crate) async fn call(&self, request: Request) -> Result<Reply, HostError> {
        match &self.0 {
            Via::Local(s) => s.call(request, Vec::new()).await,
            Via::Remote(_, c) => c.call(request, Vec::new()).await,
        }
    }

    /// The round trips to the monitor so far (`None` in-process).
    pub(crate) fn round_trips(&self) -> Option<u64> {
        match &self.0 {
            Via::Local(_) => None,
            Via::Remote(_, c) => Some(c.round_trips()),
        }
    }
}

impl From<Service> for Host {
    fn from(s: Service) -> Host {
        Host(Via::Local(s))
    }
}

/// The host's own state and the request table's server; see the module docs.
#[derive(Clone)]
pub(crate) struct Service(Arc<Inner>);

struct Inner {
    privilege: Privilege,
    config: RwLock<Arc<Config>>,
    next: AtomicU64,
    conns: Mutex<HashMap<ConnId, Arc<tokio::sync::Mutex<ConnState>>>>,
    /// Tokens issued, with the connection and login each proves.
    tokens: Mutex<HashMap<LoginToken, (ConnId, Arc<HostLogin>)>>,
    /// Session programs started, with the connection each belongs to (weakly: the
    /// session's own end lets go of its terminal and helper, not this table).
    processes: Mutex<HashMap<u64, (ConnId, WeakKiller)>>,
}

/// Locks here guard maps only, never an await; a panic elsewhere leaves them usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Service {
    pub(crate) fn new(privilege: Privilege, config: Arc<Config>) -> Service {
        Service(Arc::new(Inner {
            privilege,
            config: RwLock::new(config),
            next: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            processes: Mutex::new(HashMap::new()),
        }))
    }

    /// A reloaded config: connections opened from now on are judged by it.
    pub(crate) fn set_config(&self, config: Arc<Config>) {
        if let Ok(mut c) = self.0.config.write() {
            *c = config;
        }
    }

    /// Serve one request with the descriptors that came with it.
    pub(crate) async fn call(
        &self,
        request: Request,
        fds: Vec<std::os::fd::OwnedFd>,
    ) -> Result<Reply, HostError> {
        if !fds.is_empty() {
            tracing::error!(
                "host: refused {} descriptors with a request that takes none",
                fds.len()
            );
            return Err(HostError::NotPermitted(
                "descriptors with a request that takes none".into(),
            ));
        }
        api::dispatch(self, request).await
    }

    pub(super) fn conn_opened(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
        rdomain: Option<String>,
    ) -> ConnId {
        let id = ConnId(self.0.next.fetch_add(1, Ordering::Relaxed));
        let config = self
            .0
            .config
            .read()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()));
        let state = ConnState::new(id, self.0.privilege, config, peer, local, rdomain);
        lock(&self.0.conns).insert(id, Arc::new(tokio::sync::Mutex::new(state)));
        id
    }

    /// Forget `conn`: its tokens stop working, its PAM session closes (once no
    /// request of its is in flight).
    pub(super) fn conn_closed(&self, conn: ConnId) {
        let state = lock(&self.0.conns).remove(&conn);
        lock(&self.0.tokens).retain(|_, (c, _)| *c != conn);
        lock(&self.0.processes).retain(|_, (c, _)| *c != conn);
        if let Some(state) = state {
            // The last reference closes PAM when dropped; close it now if we can.
            if let Ok(mut s) = state.try_lock() {
                s.close();
            }
        }
    }

    pub(super) fn conn(
        &self,
        conn: ConnId,
    ) -> Result<Arc<tokio::sync::Mutex<ConnState>>, HostError> {
        match lock(&self.0.conns).get(&conn) {
            Some(s) => Ok(Arc::clone(s)),
            None => {
                tracing::error!("host: refused request for unknown connection {}", conn.0);
                Err(HostError::NotPermitted("unknown connection".into()))
            }
        }
    }

    /// Record a login token `conn` completed.
    pub(super) fn issue(
        &self,
        conn: ConnId,
        login: Arc<HostLogin>,
    ) -> Result<LoginToken, HostError> {
        use rand::TryRng;
        let mut bits = [0u8; 16];
        rand::rngs::SysRng
            .try_fill_bytes(&mut bits)
            .map_err(|e| HostError::Io(std::io::Error::other(e.to_string())))?;
        let token = LoginToken(bits);
        lock(&self.0.tokens).insert(token, (conn, login));
        Ok(token)
    }

    /// The connection and login `token` proves for a request `what` made on
    /// `conn`; an unknown token, or one issued to another connection, is refused
    /// and logged.
    pub(super) fn login(
        &self,
        conn: ConnId,
        token: &LoginToken,
        what: &str,
    ) -> Result<(Arc<tokio::sync::Mutex<ConnState>>, Arc<HostLogin>), HostError> {
        let found = lock(&self.0.tokens).get(token).cloned();
        let login = match found {
            Some((owner, login)) if owner == conn => login,
            Some(_) => {
                tracing::error!(
                    "host: refused {what} on connection {}: login token of another connection",
                    conn.0
                );
                return Err(HostError::NotPermitted(
                    "login token of another connection".into(),
                ));
            }
            None => {
                tracing::error!(
                    "host: refused {what} on connection {}: no such login token",
                    conn.0
                );
                return Err(HostError::NotPermitted("no such login token".into()));
            }
        };
        Ok((self.conn(conn)?, login))
    }

    /// Remember a started program's killer under a number of the host's.
    pub(super) fn register_process(&self, conn: ConnId, killer: ProcessKiller) -> u64 {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        let mut table = lock(&self.0.processes);
        table.retain(|_, (_, k)| k.upgrade().is_some());
        table.insert(id, (conn, killer.downgrade()));
        id
    }

    /// The killer of program `process`, if `conn` started it (`None` once its
    /// session is over); refused and logged otherwise.
    pub(super) fn process(
        &self,
        conn: ConnId,
        process: u64,
        what: &str,
    ) -> Result<Option<ProcessKiller>, HostError> {
        match lock(&self.0.processes).get(&process) {
            Some((owner, killer)) if *owner == conn => Ok(killer.upgrade()),
            _ => {
                tracing::error!(
                    "host: refused {what} on connection {}: process {process} is not one of its sessions",
                    conn.0
                );
                Err(HostError::NotPermitted(
                    "not a process of this connection".into(),
                ))
            }
        }
    }
}
