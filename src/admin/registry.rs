//! The daemon's table of live connections: what `rsshd sessions` lists, and the
//! channel through which `kill`, reload and shutdown reach each connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::lifetime::{Ending, Snapshot};

/// What the daemon asks of a connection.
#[derive(Debug)]
pub enum Control {
    /// End it as the lifetime rules do (README, "Why rsshd"), for this reason.
    End(Ending),
    /// A reload succeeded: re-evaluate the lifetime policy against this config.
    Reload(Arc<Config>),
    /// Report the lifetime engine's current view.
    Query(oneshot::Sender<Snapshot>),
}

/// Facts about a connection that change rarely (set at accept, login, pty).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub user: Option<String>,
    pub uid: Option<u32>,
    /// The first PTY of the connection, e.g. `pts/3`.
    pub tty: Option<String>,
    /// Session leader of that PTY (or of the first session), for the WHAT column.
    pub leader: Option<i32>,
    pub login_at: Option<SystemTime>,
    /// The keys or certificates the login used (publickey), in order.
    pub keys: Vec<crate::host::LoginKey>,
}

/// One registered connection.
#[derive(Debug)]
pub struct Entry {
    pub id: u64,
    pub peer: SocketAddr,
    pub connected_at: SystemTime,
    pub facts: Mutex<Facts>,
    pub control: mpsc::UnboundedSender<Control>,
}

/// Shared by the daemon, every connection and the control socket.
#[derive(Debug, Default)]
pub struct Registry {
    next: AtomicU64,
    entries: Mutex<BTreeMap<u64, Arc<Entry>>>,
}

/// Removes a connection from the registry when its task ends, however it ends.
pub struct Registration {
    registry: Arc<Registry>,
    pub entry: Arc<Entry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut e) = self.registry.entries.lock() {
            e.remove(&self.entry.id);
        }
    }
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Registry {
            next: AtomicU64::new(1),
            entries: Mutex::new(BTreeMap::new()),
        })
    }

    /// Add a connection; returns its registration and the receiving end of its
    /// control channel.
    pub fn register(
        self: &Arc<Self>,
        peer: SocketAddr,
    ) -> (Registration, mpsc::UnboundedReceiver<Control>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            id,
            peer,
            connected_at: SystemTime::now(),
            facts: Mutex::new(Facts::default()),
            control: tx,
        });
        if let Ok(mut e) = self.entries.lock() {
            e.insert(id, Arc::clone(&entry));
        }
        (
            Registration {
                registry: Arc::clone(self),
                entry,
            },
            rx,
        )
    }

    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.entries
            .lock()
            .map(|e| e.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, id: u64) -> Option<Arc<Entry>> {
        self.entries.lock().ok().and_then(|e| e.get(&id).cloned())
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Send `make()` to every connection.
    pub fn broadcast(&self, make: impl Fn() -> Control) {
        for e in self.entries() {
            let _ = e.control.send(make());
        }
    }
}
