//! [`Host`]: the one handle through which the network side reaches the privileged
//! boundary. It holds the privilege level (decided once), the config the host
//! resolves `Match` with, each connection's authentication state and the login
//! tokens it issued. Cheap to clone; every clone is the same host.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::api::{self, ConnId, LoginToken, Reply, Request};
use super::auth_state::{ConnState, HostLogin};
use super::host_keys::HostKeySet;
use super::kex_sign::KexSigner;
use super::process::{ProcessKiller, WeakKiller};
use super::{HostError, Privilege};
use crate::config::Config;

/// The handle; see the module docs.
#[derive(Clone)]
pub struct Host(Arc<Inner>);

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
    /// The host keys and the exchange hashes signed with them.
    kex: Mutex<KexSigner>,
}

/// Locks here guard maps only, never an await; a panic elsewhere leaves them usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Host {
    /// The host for a daemon running with `privilege` under `config`.
    pub fn new(privilege: Privilege, config: Arc<Config>) -> Host {
        Host(Arc::new(Inner {
            privilege,
            config: RwLock::new(config),
            next: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            processes: Mutex::new(HashMap::new()),
            kex: Mutex::new(KexSigner::new()),
        }))
    }

    pub fn privilege(&self) -> Privilege {
        self.0.privilege
    }

    /// A reloaded config: connections opened from now on are judged by it.
    pub fn set_config(&self, config: Arc<Config>) {
        if let Ok(mut c) = self.0.config.write() {
            *c = config;
        }
    }

    /// The host keys to sign with from now on (at start and on reload); keys
    /// dropped by a reload still sign rekeys of the connections made before.
    pub fn set_host_keys(&self, keys: HostKeySet) {
        self.kex().set_keys(keys);
    }

    pub(super) fn kex(&self) -> std::sync::MutexGuard<'_, KexSigner> {
        lock(&self.0.kex)
    }

    /// The config new connections are judged by.
    pub(super) fn config(&self) -> Arc<Config> {
        self.0
            .config
            .read()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// Serve one request (in-process in step 1).
    pub(crate) async fn call(&self, request: Request) -> Result<Reply, HostError> {
        api::dispatch(self, request).await
    }

    pub(super) fn conn_opened(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
        rdomain: Option<String>,
    ) -> ConnId {
        let id = ConnId(self.0.next.fetch_add(1, Ordering::Relaxed));
        let config = self.config();
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
        self.kex().conn_closed(conn);
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
