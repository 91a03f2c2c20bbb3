//! The per-connection state shared by the handler, the connection task and the
//! channels' tasks: the fixed facts ([`ConnContext`]) and what changes
//! ([`ConnShared`]), with the connection's one channel table.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::channels::ChannelTable;
use super::cleanup::Sessions;
use super::gate;
use super::login::Login;
use crate::admin::{Facts, registry::Entry};
use crate::config::{Config, ConnSpec, Settings};
use crate::lifetime::{Event, Events, Policy};

/// Fixed facts about a connection, shared by its handler and tasks.
///
/// An unspecified address (`0.0.0.0`) with port 65535 is sshd's `UNKNOWN`: a
/// connection on pipes (`-i` under a ProxyCommand) has no addresses, and no accepted
/// TCP connection can have that one. It prints as `UNKNOWN` (see
/// [`crate::log::display_ip`]) and matches no `Match Address`/`LocalAddress`.
pub(crate) struct ConnContext {
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) config: Arc<Config>,
    /// Settings for this address before a user is known (Banner, LoginGraceTime).
    pub(crate) pre_auth: Arc<Settings>,
    /// The privileged boundary: every decision that needs root or a user's files.
    pub(crate) host: crate::host::Host,
    /// The daemon's bound on unauthenticated connections at work (see `gate`).
    pub(crate) preauth_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// The routing domain `Match RDomain` sees ([`rdomain_of`] the connection's
    /// socket); `None` on pipes.
    pub(crate) rdomain: Option<String>,
    /// Under `UseDNS yes`, the name the peer's address maps to and back, once the
    /// host looked it up (when the first user name arrived, as sshd).
    pub(crate) dns_name: std::sync::OnceLock<String>,
}

impl ConnContext {
    /// The name `Match Host`, `from=`, `AllowUsers user@host`, PAM's RHOST and utmp
    /// see, as sshd's `auth_get_canonical_hostname`: with `UseDNS yes`, the name
    /// the host confirmed; otherwise (or before that, or when the lookup failed) the
    /// address itself.
    pub(crate) fn remote_host(&self) -> String {
        match self.dns_name.get() {
            Some(name) => name.clone(),
            None => crate::log::display_ip(&self.peer),
        }
    }

    /// The Match criteria of this connection, for `user` once known.
    pub(crate) fn spec(&self, user: Option<&str>, groups: Option<Vec<String>>) -> ConnSpec {
        ConnSpec::of_connection(
            user,
            self.remote_host(),
            self.peer,
            self.local,
            self.rdomain.clone(),
            groups,
        )
    }

    /// The lifetime policy `config` gives this connection now.
    pub(super) fn policy_under(&self, config: &Config, login: Option<&Login>) -> Policy {
        let spec = match login {
            Some(l) => self.spec(Some(&l.user.name), Some(l.user.group_names.clone())),
            None => self.spec(None, None),
        };
        Policy::from_settings(&config.resolve(&spec))
    }
}

/// State the handler writes and the connection task reads.
pub(crate) struct ConnShared {
    pub(super) user: Mutex<Option<String>>,
    /// RefuseConnection ended the connection (already logged).
    pub(super) refused: std::sync::atomic::AtomicBool,
    pub(super) login: watch::Sender<Option<Arc<Login>>>,
    /// The session channels' programs, for the connection's end.
    pub(crate) sessions: Sessions,
    /// Lifetime events go here.
    pub(crate) events: Events,
    /// The connection's open channels (see [`super::channels`]).
    pub(crate) channels: ChannelTable,
    /// This connection's row in the daemon's registry.
    pub(crate) entry: Arc<Entry>,
    /// The client tried an authentication method other than `none`
    /// (PerSourcePenalties tells `authfail` from `noauth` by it).
    pub(super) attempted: std::sync::atomic::AtomicBool,
    /// This connection's place at the pre-auth work gate.
    gate: Option<Arc<gate::Ticket>>,
    /// Set by the handler when MaxAuthTries is reached (it has logged sshd's
    /// lines and answers with sshd's DISCONNECT), so the end of the
    /// connection is not logged as the client's close.
    pub(crate) auth_exhausted: std::sync::atomic::AtomicBool,
}

impl ConnShared {
    pub(super) fn new(events: Events, entry: Arc<Entry>, gate: Option<Arc<gate::Ticket>>) -> Self {
        ConnShared {
            user: Mutex::new(None),
            refused: Default::default(),
            login: watch::channel(None).0,
            sessions: Sessions::default(),
            events,
            channels: ChannelTable::default(),
            entry,
            attempted: std::sync::atomic::AtomicBool::new(false),
            gate,
            auth_exhausted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The client tried to authenticate with a real method.
    pub(crate) fn attempted(&self) {
        self.attempted
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Update the registry's facts about this connection.
    pub(crate) fn facts(&self, f: impl FnOnce(&mut Facts)) {
        if let Ok(mut facts) = self.entry.facts.lock() {
            f(&mut facts);
        }
    }

    /// `RefuseConnection` ends this connection: its log line says it all.
    pub(crate) fn refused(&self) {
        self.refused
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Remember the user name last asked for, for the preauth close log line. Every
    /// authentication callback starts here, and may then wait (PAM, files): it
    /// gives back the pre-auth work permit so that no one waits behind it.
    pub(crate) fn set_user(&self, user: &str) {
        if let Some(g) = &self.gate {
            g.release();
        }
        if let Ok(mut u) = self.user.lock() {
            *u = Some(user.to_string());
        }
    }

    /// The login is complete: its policy replaces the pre-auth one.
    pub(crate) fn authenticated(&self, login: Arc<Login>) {
        if let Some(g) = &self.gate {
            g.open();
        }
        self.events
            .send(Event::PolicyReplaced(Box::new(Policy::from_settings(
                &login.settings,
            ))));
        self.events.send(Event::Authenticated);
        self.facts(|f| {
            f.user = Some(login.user.name.clone());
            f.uid = Some(login.user.uid);
            f.login_at = Some(std::time::SystemTime::now());
        });
        self.login.send_replace(Some(login));
    }

    pub(super) fn login(&self) -> Option<Arc<Login>> {
        self.login.borrow().clone()
    }

    pub(super) fn pty_channels(&self) -> Vec<russh::ChannelId> {
        self.channels.ptys()
    }

    /// Retire channel `n` (see [`super::channels`]). Safe to call from every path
    /// that learns of the close; only the first call of a channel does anything.
    pub(crate) fn retire(&self, n: u32) {
        if self.channels.remove(n) {
            self.events.send(Event::ChannelClosed { channel: n });
        }
    }
}
