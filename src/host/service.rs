//! [`Host`]: the one handle through which the network side reaches the privileged
//! boundary, either in this process ([`Service`]) or in the root monitor over the
//! monitor link ([`Client`]); the typed calls (client.rs) are the same for both.
//!
//! [`Service`] is the host itself: the privilege level (decided once), the config
//! it resolves `Match` with, each connection's authentication state and the login
//! tokens it issued. Both are cheap to clone; every clone is the same host.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::api::{self, ConnId, LoginToken, Reply, Request};
use super::auth_state::{ConnState, HostLogin};
use super::host_keys::HostKeySet;
use super::kex_sign::KexSigner;
use super::lifecycle::{self, AgentDir, Tracked};
use super::spawn::SessionProcess;
use super::wire::Client;
use super::{HostError, LoginRecord, Privilege};
use crate::config::{Config, SessionCleanup};

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
        link: OwnedFd,
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

    /// The host keys to sign with from now on (at start and on reload), for a
    /// host in this process; the monitor gives its own service the keys.
    pub fn set_host_keys(&self, keys: HostKeySet) {
        if let Via::Local(s) = &self.0 {
            s.set_host_keys(keys);
        }
    }

    /// Serve one request with the descriptors attached to it, here or in the
    /// monitor.
    pub(crate) async fn call(
        &self,
        request: Request,
        fds: Vec<OwnedFd>,
    ) -> Result<Reply, HostError> {
        match &self.0 {
            Via::Local(s) => s.call(request, fds).await,
            Via::Remote(_, c) => c.call(request, fds).await,
        }
    }

    /// The network side is gone: every connection closed as by `conn_closed`
    /// (in-process only; across the link, the monitor calls its service's).
    #[cfg(test)]
    pub(crate) async fn network_lost(&self) {
        if let Via::Local(s) = &self.0 {
            s.network_lost().await;
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
    /// Session programs started and not yet reaped, with the connection each
    /// belongs to.
    processes: Mutex<HashMap<u64, (ConnId, Arc<Tracked>)>>,
    /// Agent sockets made and not yet removed.
    agent_dirs: Mutex<HashMap<u64, AgentDir>>,
    /// The host keys and the exchange hashes signed with them.
    kex: Mutex<KexSigner>,
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
            agent_dirs: Mutex::new(HashMap::new()),
            kex: Mutex::new(KexSigner::new()),
        }))
    }

    /// A reloaded config: connections opened from now on are judged by it.
    pub(crate) fn set_config(&self, config: Arc<Config>) {
        if let Ok(mut c) = self.0.config.write() {
            *c = config;
        }
    }

    /// Serve one request, with the descriptors attached to it (in-process in
    /// step 1).
    pub(crate) async fn call(
        &self,
        request: Request,
        fds: Vec<OwnedFd>,
    ) -> Result<Reply, HostError> {
        match request {
            // A `Wait` lasts as long as its program: served on its own, so that
            // the waiting session's task holds its small future, not the
            // table's (the size of its largest request, boxed below).
            Request::Wait {
                conn,
                token,
                process,
            } => lifecycle::wait(self, conn, token, process).await,
            request => Box::pin(api::dispatch(self, request, fds)).await,
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

    /// Forget `conn` and leave nothing of it behind: its tokens stop working;
    /// its programs still running are ended as lost ones (`SessionCleanup`),
    /// those already ended as ended ones, and each is reaped once it has ended
    /// (its utmp/wtmp logout written); its PAM session closes (once no request
    /// of its is in flight); its agent sockets are removed. Returns once the
    /// hang-ups and removals are done.
    pub(crate) async fn conn_closed(&self, conn: ConnId) {
        let state = lock(&self.0.conns).remove(&conn);
        lock(&self.0.tokens).retain(|_, (c, _)| *c != conn);
        let programs: Vec<Arc<Tracked>> = lock(&self.0.processes)
            .values()
            .filter(|(c, _)| *c == conn)
            .map(|(_, t)| Arc::clone(t))
            .collect();
        let dirs: Vec<AgentDir> = {
            let mut table = lock(&self.0.agent_dirs);
            let ids: Vec<u64> = (table.iter())
                .filter(|(_, d)| d.conn == conn)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter().filter_map(|id| table.remove(&id)).collect()
        };
        self.kex().conn_closed(conn);
        let mut work = tokio::task::JoinSet::new();
        for program in programs {
            work.spawn(async move { program.conn_gone().await });
        }
        if let Some(state) = state {
            // The last reference closes PAM when dropped; close it now if we can.
            if let Ok(mut s) = state.try_lock() {
                s.close();
            }
        }
        for dir in dirs {
            work.spawn(dir.remove());
        }
        while work.join_next().await.is_some() {}
    }

    /// The network side is gone (its process died): every connection is closed
    /// as by [`Host::conn_closed`]. The monitor calls it (step 2).
    pub(crate) async fn network_lost(&self) {
        let conns: Vec<ConnId> = lock(&self.0.conns).keys().copied().collect();
        let mut work = tokio::task::JoinSet::new();
        for conn in conns {
            let host = self.clone();
            work.spawn(async move { host.conn_closed(conn).await });
        }
        while work.join_next().await.is_some() {}
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

    /// Keep a started program under a number of the host's, until it is
    /// reaped (see `lifecycle`).
    pub(super) fn register_process(
        &self,
        conn: ConnId,
        process: SessionProcess,
        policy: SessionCleanup,
        record: Option<LoginRecord>,
    ) -> u64 {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        let tracked = lifecycle::track(self.clone(), id, process, policy, record);
        // Under the connections' lock, so that `conn_closed` cannot come between
        // the check and the insert.
        let conns = lock(&self.0.conns);
        if conns.contains_key(&conn) {
            lock(&self.0.processes).insert(id, (conn, tracked));
        } else {
            // The connection closed while the program was being started.
            tokio::spawn(async move { tracked.conn_gone().await });
        }
        id
    }

    /// The session leaders of the programs started and not yet reaped.
    pub(super) fn live_leaders(&self) -> Vec<i32> {
        (lock(&self.0.processes).values())
            .filter_map(|(_, t)| t.killer().live_leader())
            .collect()
    }

    /// A program was reaped.
    pub(super) fn forget_process(&self, id: u64) {
        lock(&self.0.processes).remove(&id);
    }

    /// Program `process`, if `conn` started it and it is not reaped yet;
    /// refused and logged otherwise.
    pub(super) fn program(
        &self,
        conn: ConnId,
        process: u64,
        what: &str,
    ) -> Result<Arc<Tracked>, HostError> {
        match lock(&self.0.processes).get(&process) {
            Some((owner, tracked)) if *owner == conn => Ok(Arc::clone(tracked)),
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

impl Service {
    /// Keep an agent socket made for `dir.conn` under a number of the host's;
    /// if that connection has closed meanwhile, it is removed at once instead.
    pub(super) fn add_agent_dir(&self, dir: AgentDir) -> Result<u64, HostError> {
        // Under the connections' lock, so that `conn_closed` cannot come between
        // the check and the insert.
        let conns = lock(&self.0.conns);
        if !conns.contains_key(&dir.conn) {
            drop(conns);
            tokio::spawn(dir.remove());
            return Err(HostError::NotPermitted("unknown connection".into()));
        }
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.0.agent_dirs).insert(id, dir);
        Ok(id)
    }

    /// Agent socket `socket`, if `conn` has it.
    pub(super) fn take_agent_dir(&self, conn: ConnId, socket: u64) -> Option<AgentDir> {
        let mut table = lock(&self.0.agent_dirs);
        match table.get(&socket) {
            Some(d) if d.conn == conn => table.remove(&socket),
            _ => None,
        }
    }
}
