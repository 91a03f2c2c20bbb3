//! The russh [`Handler`] for one connection: a thin layer that turns protocol
//! callbacks into decisions made by [`access`](super::access), [`host`](crate::host)
//! and [`session`](super::session).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use russh::keys::{Algorithm, HashAlg, PublicKey};
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure, Pty, Sig};

use super::access::{self, Refusal};
use super::session::{SessionChannel, signal_for};
use super::{ConnContext, ConnShared};
use crate::config::Settings;
use crate::host::{self, KeyLookup, KeyOptions, PtyParams, SpawnRequest, UserInfo};
use crate::lifetime::Event;
use crate::log::peer;

/// Errors that end a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error(transparent)]
    Protocol(#[from] russh::Error),
}

/// What is known about a user name the client asked for.
struct Candidate {
    info: Option<UserInfo>,
    settings: Arc<Settings>,
    refused: Option<Refusal>,
}

/// The account a connection logged in as, with everything its sessions need.
pub struct Login {
    pub user: UserInfo,
    pub settings: Arc<Settings>,
    pub key_options: KeyOptions,
}

/// One per connection; see the module docs.
pub struct ConnHandler {
    ctx: Arc<ConnContext>,
    shared: Arc<ConnShared>,
    /// Tunnels, `-R` listeners and the agent socket; dropped with the connection.
    forwards: super::forward::Forwards,
    candidates: HashMap<String, Candidate>,
    /// Key options of the key that matched the last publickey query, by user.
    pending_key: Option<(String, KeyOptions)>,
    login: Option<Arc<Login>>,
    channels: HashMap<ChannelId, SessionChannel>,
}

impl ConnHandler {
    pub fn new(ctx: Arc<ConnContext>, shared: Arc<ConnShared>) -> Self {
        ConnHandler {
            forwards: super::forward::Forwards::new(Arc::clone(&shared)),
            ctx,
            shared,
            candidates: HashMap::new(),
            pending_key: None,
            login: None,
            channels: HashMap::new(),
        }
    }

    /// Look the user up once per name, resolve `Match` for them, and log refusals in
    /// sshd's words the first time.
    fn candidate(&mut self, user: &str) -> &Candidate {
        if !self.candidates.contains_key(user) {
            let ctx = &self.ctx;
            let info = match host::lookup_user(user) {
                Ok(info) => info,
                Err(e) => {
                    tracing::error!("user lookup for {user} failed: {e}");
                    None
                }
            };
            let spec = ctx.spec(Some(user), info.as_ref().map(|i| i.group_names.clone()));
            let settings = Arc::new(ctx.config.resolve(&spec));
            let refused = match &info {
                None => {
                    tracing::info!("Invalid user {user} from {}", peer(&ctx.peer));
                    None
                }
                Some(i) => {
                    let r = access::check_user(
                        i,
                        &ctx.remote_host(),
                        ctx.peer.ip(),
                        &settings,
                        ctx.daemon_uid,
                    )
                    .err();
                    if let Some(r) = &r {
                        tracing::info!(
                            "User {user} from {} not allowed because {}",
                            crate::log::display_ip(&ctx.peer),
                            r.reason()
                        );
                    }
                    r
                }
            };
            self.candidates.insert(
                user.to_string(),
                Candidate {
                    info,
                    settings,
                    refused,
                },
            );
        }
        &self.candidates[user]
    }

    /// Whether `key` may log `user` in: allowed user, publickey enabled, key listed
    /// (with its `from=`), PermitRootLogin. Returns the key's options.
    fn check_key(
        &mut self,
        user: &str,
        key: &PublicKey,
        algorithm: &Algorithm,
    ) -> Option<KeyOptions> {
        if matches!(algorithm, Algorithm::Rsa { hash: None }) {
            // ssh-rsa signatures are SHA-1; refuse them like OpenSSH >= 8.8.
            return None;
        }
        let remote_host = self.ctx.remote_host();
        let remote_ip = self.ctx.peer.ip();
        let peer_text = peer(&self.ctx.peer);
        let c = self.candidate(user);
        let (Some(info), None) = (&c.info, &c.refused) else {
            return None;
        };
        if !c.settings.pubkey_authentication {
            return None;
        }
        let lookup = host::find_authorized_key(
            info,
            &c.settings.authorized_keys_file,
            c.settings.strict_modes,
            key,
            &remote_host,
            remote_ip,
        );
        let options = match lookup {
            KeyLookup::Found(found) => found.options,
            KeyLookup::NotFound => return None,
            KeyLookup::FromRejected { file, line } => {
                tracing::info!(
                    "Authentication tried for {user} with correct key but not from a permitted host ({peer_text}, {}:{line}).",
                    file.display()
                );
                return None;
            }
        };
        if info.uid == 0 {
            let forced = options.command.is_some() || c.settings.force_command.is_some();
            if !access::root_key_login_allowed(&c.settings, forced) {
                tracing::info!("ROOT LOGIN REFUSED FROM {peer_text}");
                return None;
            }
        }
        Some(options)
    }

    /// Environment every process of this connection gets from the connection itself.
    fn connection_env(&self) -> Vec<(String, String)> {
        let c = &self.ctx;
        let rip = crate::log::display_ip(&c.peer);
        let lip = crate::log::display_ip(&c.local);
        vec![
            (
                "SSH_CLIENT".into(),
                format!("{rip} {} {}", c.peer.port(), c.local.port()),
            ),
            (
                "SSH_CONNECTION".into(),
                format!("{rip} {} {lip} {}", c.peer.port(), c.local.port()),
            ),
        ]
    }

    /// Start the process of a session channel: shell (`command` None), exec or
    /// subsystem, with forced commands applied. Replies success/failure on `session`
    /// synchronously, because russh matches replies to requests by order.
    fn start(
        &mut self,
        channel: ChannelId,
        requested: Option<String>,
        is_subsystem: bool,
        session: &mut Session,
    ) -> Result<(), ConnError> {
        let ok = self.try_start(channel, requested, is_subsystem, session.handle());
        if ok {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    fn try_start(
        &mut self,
        channel: ChannelId,
        requested: Option<String>,
        is_subsystem: bool,
        handle: russh::server::Handle,
    ) -> bool {
        let Some(login) = self.login.clone() else {
            return false;
        };
        let mut env = Vec::new();
        let Some(chan) = self.channels.get(&channel) else {
            return false;
        };
        if chan.started() {
            return false;
        }
        let s = &login.settings;
        let forced = s
            .force_command
            .clone()
            .or_else(|| login.key_options.command.clone());
        let command = if is_subsystem {
            let name = requested.clone().unwrap_or_default();
            let Some((_, cmd)) = s.subsystem.iter().find(|(n, _)| *n == name) else {
                tracing::info!(
                    "subsystem request for {name} by user {} failed, subsystem not found",
                    login.user.name
                );
                return false;
            };
            tracing::info!("subsystem request for {name} by user {}", login.user.name);
            match &forced {
                Some(f) => Some(f.clone()),
                None => Some(subsystem_command(cmd)),
            }
        } else {
            forced.clone().or_else(|| requested.clone())
        };
        if forced.is_some()
            && let Some(orig) = &requested
        {
            env.push(("SSH_ORIGINAL_COMMAND".to_string(), orig.clone()));
        }
        // Client-sent variables first, then the key's environment=, then SetEnv, then
        // the connection's own: later entries win.
        env.extend(chan.env.iter().cloned());
        if !s.permit_user_environment.is_empty() {
            for (k, v) in &login.key_options.environment {
                let allowed = s
                    .permit_user_environment
                    .iter()
                    .any(|p| crate::pattern::match_pattern(k, p));
                if allowed {
                    env.push((k.clone(), v.clone()));
                }
            }
        }
        env.extend(s.set_env.iter().cloned());
        env.extend(self.connection_env());
        if let Some(sock) = self.forwards.agent_socket() {
            env.push(("SSH_AUTH_SOCK".into(), sock));
        }
        let is_shell = command.is_none();
        let kind = if is_subsystem {
            format!("session:subsystem:{}", requested.as_deref().unwrap_or(""))
        } else if is_shell {
            "session:shell".to_string()
        } else {
            "session:command".to_string()
        };
        self.shared.events.send(Event::ChannelOpened {
            channel: u32::from(channel),
            kind,
        });
        let req = SpawnRequest {
            user: login.user.clone(),
            command,
            pty: chan.pty.clone(),
            env,
        };
        let process = match host::spawn(req) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("session for {} could not start: {e}", login.user.name);
                return false;
            }
        };
        if let Ok(mut list) = self.shared.processes.lock() {
            list.push(process.killer());
        }
        let tty = process
            .tty_name()
            .map(|t| t.to_string_lossy().trim_start_matches("/dev/").to_string());
        let pid = process.pid() as i32;
        self.shared.facts(|f| {
            if f.tty.is_none() && tty.is_some() {
                f.tty = tty.clone();
                f.leader = Some(pid);
            } else if f.leader.is_none() {
                f.leader = Some(pid);
            }
        });
        let motd = if is_shell && s.print_motd {
            std::fs::read("/etc/motd")
                .ok()
                .filter(|m| !m.is_empty())
                .map(|m| Bytes::from(crlf_if(chan.pty.is_some(), m)))
        } else {
            None
        };
        if let Some(chan) = self.channels.get_mut(&channel) {
            chan.start(process, handle, motd);
        }
        true
    }
}

/// `internal-sftp` is OpenSSH's in-process server; we run the sftp-server binary it
/// ships instead, so configs written for sshd keep working.
fn subsystem_command(cmd: &str) -> String {
    let mut words = cmd.split_whitespace();
    if words.next() == Some("internal-sftp") {
        let args: Vec<&str> = words.collect();
        for path in [
            "/usr/lib/openssh/sftp-server",
            "/usr/libexec/openssh/sftp-server",
            "/usr/libexec/sftp-server",
            "/usr/lib/ssh/sftp-server",
        ] {
            if std::path::Path::new(path).exists() {
                return std::iter::once(path)
                    .chain(args)
                    .collect::<Vec<_>>()
                    .join(" ");
            }
        }
    }
    cmd.to_string()
}

/// Text written straight to a client terminal needs CR LF line ends.
fn crlf_if(pty: bool, text: Vec<u8>) -> Vec<u8> {
    if !pty {
        return text;
    }
    let mut out = Vec::with_capacity(text.len() + 16);
    for b in text {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// sshd's name for a key type in `Accepted publickey ... ssh2: ED25519 SHA256:...`.
fn key_type_name(key: &PublicKey) -> &'static str {
    match key.algorithm() {
        Algorithm::Ed25519 => "ED25519",
        Algorithm::Ecdsa { .. } => "ECDSA",
        Algorithm::Rsa { .. } => "RSA",
        Algorithm::Dsa => "DSA",
        Algorithm::SkEd25519 => "ED25519-SK",
        Algorithm::SkEcdsaSha2NistP256 => "ECDSA-SK",
        _ => "UNKNOWN",
    }
}

impl Handler for ConnHandler {
    type Error = ConnError;

    fn adjust_window(&mut self, channel: ChannelId, _current: u32) -> u32 {
        let backlog = self
            .channels
            .get(&channel)
            .map(|c| c.backlog.get())
            .or_else(|| self.forwards.backlog(channel).map(|b| b.get()))
            .unwrap_or(0);
        super::session::window_target(backlog)
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The data itself went to the channel's reader; here we only pace a
        // throttled client (see `session::BacklogCounter::pace`).
        if let Some(c) = self.channels.get(&channel) {
            let backlog = Arc::clone(&c.backlog);
            backlog.pace().await;
        } else if let Some(backlog) = self.forwards.backlog(channel) {
            backlog.pace().await;
        }
        Ok(())
    }

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        let Some(path) = &self.ctx.pre_auth.banner else {
            return Ok(None);
        };
        Ok(std::fs::read_to_string(path).ok())
    }

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        // Resolve (and log an invalid user) on the first request, as sshd does.
        self.candidate(user);
        self.shared.set_user(user);
        Ok(Auth::reject())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.shared.set_user(user);
        match self.check_key(user, offer.public_key, offer.algorithm) {
            Some(opts) => {
                self.pending_key = Some((user.to_string(), opts));
                Ok(Auth::Accept)
            }
            None => Ok(Auth::reject()),
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.shared.set_user(user);
        let Some(options) = self.check_key(user, key.public_key, key.algorithm) else {
            return Ok(Auth::reject());
        };
        let Some(c) = self.candidates.get(user) else {
            return Ok(Auth::reject());
        };
        let Some(info) = c.info.clone() else {
            return Ok(Auth::reject());
        };
        tracing::info!(
            "Accepted publickey for {user} from {} ssh2: {} {}",
            peer(&self.ctx.peer),
            key_type_name(key.public_key),
            key.public_key.fingerprint(HashAlg::Sha256)
        );
        let login = Arc::new(Login {
            user: info,
            settings: Arc::clone(&c.settings),
            key_options: options,
        });
        // Not in auth_succeeded: russh 0.65 skips that callback unless compression
        // is deferred.
        self.shared.authenticated(Arc::clone(&login));
        self.login = Some(login);
        self.pending_key = None;
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let max = self
            .login
            .as_ref()
            .map(|l| l.settings.max_sessions as usize)
            .unwrap_or(0);
        if self.channels.len() >= max {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let id = channel.id();
        let n = u32::from(id);
        let stamps = self.shared.events.channel_opened(n, "session");
        if let Ok(mut c) = self.shared.channels.lock() {
            c.insert(n, (id, false));
        }
        self.channels
            .insert(id, SessionChannel::open(channel, stamps));
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        let n = u32::from(channel);
        if let Ok(mut c) = self.shared.channels.lock() {
            c.remove(&n);
        }
        self.shared.events.send(Event::ChannelClosed { channel: n });
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let allowed = self
            .login
            .as_ref()
            .is_some_and(|l| l.settings.permit_tty && !l.key_options.no_pty);
        match self.channels.get_mut(&channel) {
            Some(chan) if allowed && !chan.started() && chan.pty.is_none() => {
                chan.pty = Some(PtyParams {
                    term: term.to_string(),
                    cols: col_width,
                    rows: row_height,
                    pix_width,
                    pix_height,
                    modes: modes.iter().map(|(p, v)| (*p as u8, *v)).collect(),
                });
                if let Ok(mut c) = self.shared.channels.lock()
                    && let Some(entry) = c.get_mut(&u32::from(channel))
                {
                    entry.1 = true;
                }
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let accepted = self.login.as_ref().is_some_and(|l| {
            l.settings
                .accept_env
                .iter()
                .any(|p| crate::pattern::match_pattern(name, p))
        });
        match self.channels.get_mut(&channel) {
            Some(chan) if accepted && !chan.started() => {
                chan.env.push((name.to_string(), value.to_string()));
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, None, false, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        self.start(channel, Some(command), false, session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, Some(name.to_string()), true, session)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(chan) = self.channels.get_mut(&channel) {
            if let Some(r) = &chan.resizer {
                let _ = r.resize(col_width, row_height, pix_width, pix_height);
            } else if let Some(p) = &mut chan.pty {
                p.cols = col_width;
                p.rows = row_height;
                p.pix_width = pix_width;
                p.pix_height = pix_height;
            }
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(chan) = self.channels.get(&channel) {
            // A signal is the user acting: it counts as input (SPEC section 3).
            chan.stamps.input.touch();
            if let Some(sig) = signal_for(&signal) {
                chan.signal(sig);
            }
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let login = self.login.clone();
        self.forwards
            .open_direct(
                login.as_deref(),
                channel,
                host_to_connect,
                port_to_connect,
                originator_address,
                originator_port,
                reply,
            )
            .await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let login = self.login.clone();
        Ok(self
            .forwards
            .listen(login.as_deref(), session.handle(), address, port)
            .await)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.forwards.cancel(address, port))
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let login = self.login.clone();
        Ok(self
            .forwards
            .start_agent(login.as_deref(), session.handle()))
    }
}
