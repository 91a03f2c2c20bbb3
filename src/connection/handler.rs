//! The russh [`Handler`] for one connection: a thin layer that turns protocol
//! callbacks into decisions made by [`access`](super::access), [`host`](crate::host)
//! and [`session`](super::session).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use russh::keys::{Algorithm, HashAlg, PublicKey};
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet, Pty, Sig};

use super::access::{self, Refusal};
use super::methods;
use super::session::{SessionChannel, signal_for};
use super::{ConnContext, ConnShared};
use crate::config::PermitRootLogin;
use crate::config::Settings;
use crate::host::pam::{self, AuthOutcome, AuthParams, KbdAuth, KbdEvent, PasswordConversation};
use crate::host::{
    self, KeyLookup, KeyOptions, LoginRecord, PamSession, PtyParams, SpawnRequest, UserInfo,
};
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
    /// AuthenticationMethods progress: the user it is for and methods completed.
    progress: Option<(String, Vec<String>)>,
    /// Options of the key that completed `publickey`, kept for the final login.
    key_options: Option<KeyOptions>,
    /// A keyboard-interactive PAM conversation in flight.
    kbd: Option<KbdState>,
    /// Failed password-style attempts, for sshd's MaxAuthTries log line.
    failures: u32,
}

/// Keyboard-interactive state between round trips.
struct KbdState {
    user: String,
    started: std::time::Instant,
    /// `None` for an invalid or refused user: we still prompt, then fail, so the
    /// answer does not reveal which users exist.
    pam: Option<KbdAuth>,
    /// PAM refused the account and the client was shown why; the next round ends
    /// in failure (already logged).
    notice_shown: bool,
}

/// The least time a failed password or keyboard-interactive attempt takes.
const FAIL_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

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
            progress: None,
            key_options: None,
            kbd: None,
            failures: 0,
        }
    }

    /// Methods completed so far for `user` (a new user name starts over).
    fn done_for(&mut self, user: &str) -> &mut Vec<String> {
        if self.progress.as_ref().is_some_and(|(u, _)| u != user) {
            self.progress = None;
            self.key_options = None;
        }
        &mut self
            .progress
            .get_or_insert_with(|| (user.to_string(), Vec::new()))
            .1
    }

    /// Whether `method` may be tried now under AuthenticationMethods.
    fn method_ok(&mut self, user: &str, method: &str) -> bool {
        let chains = methods::chains(&self.candidate(user).settings.authentication_methods);
        let done = self.done_for(user).clone();
        methods::next_allowed(&chains, &done).is_none_or(|next| next.iter().any(|m| m == method))
    }

    /// Record a successful method. Completes the login (and returns `Accept`)
    /// when AuthenticationMethods is satisfied; otherwise partial success with the
    /// methods that may come next.
    fn method_succeeded(
        &mut self,
        user: &str,
        method: &str,
        options: Option<KeyOptions>,
    ) -> (Auth, bool) {
        if options.is_some() {
            self.key_options = options;
        }
        self.done_for(user).push(method.to_string());
        let done = self.done_for(user).clone();
        let Some(c) = self.candidates.get(user) else {
            return (Auth::reject(), false);
        };
        let Some(info) = c.info.clone() else {
            return (Auth::reject(), false);
        };
        let chains = methods::chains(&c.settings.authentication_methods);
        if !methods::satisfied(&chains, &done) {
            let next = methods::next_allowed(&chains, &done).unwrap_or_default();
            let kinds: Vec<MethodKind> = next
                .iter()
                .filter_map(|m| match m.as_str() {
                    "publickey" => Some(MethodKind::PublicKey),
                    "password" => Some(MethodKind::Password),
                    "keyboard-interactive" => Some(MethodKind::KeyboardInteractive),
                    _ => None,
                })
                .collect();
            let auth = Auth::Reject {
                proceed_with_methods: Some(MethodSet::from(&kinds[..])),
                partial_success: true,
            };
            return (auth, false);
        }
        let login = Arc::new(Login {
            user: info,
            settings: Arc::clone(&c.settings),
            key_options: self.key_options.take().unwrap_or_default(),
        });
        // Not in auth_succeeded: russh 0.65 skips that callback unless compression
        // is deferred.
        self.shared.authenticated(Arc::clone(&login));
        self.login = Some(login);
        (Auth::Accept, true)
    }

    /// The PAM parameters for `user`, if password-style methods may be used.
    fn pam_params(&mut self, user: &str, method: &str) -> Option<AuthParams> {
        let rhost = self.ctx.remote_host();
        let c = self.candidate(user);
        let (Some(info), None) = (&c.info, &c.refused) else {
            return None;
        };
        let s = &c.settings;
        let enabled = match method {
            "password" => s.password_authentication,
            _ => s.kbd_interactive_authentication,
        };
        if !enabled || !s.use_pam {
            return None;
        }
        if info.uid == 0 && s.permit_root_login != PermitRootLogin::Yes {
            tracing::info!("ROOT LOGIN REFUSED FROM {}", peer(&self.ctx.peer));
            return None;
        }
        let params = AuthParams {
            service: s.pam_service_name.clone(),
            user: user.to_string(),
            rhost,
            allow_empty: s.permit_empty_passwords,
        };
        if !self.method_ok(user, method) {
            return None;
        }
        Some(params)
    }

    /// With `UsePAM yes`, the parameters for an account check of `user`.
    fn account_params(&mut self, user: &str) -> Option<AuthParams> {
        let rhost = self.ctx.remote_host();
        let c = self.candidate(user);
        c.settings.use_pam.then(|| AuthParams {
            service: c.settings.pam_service_name.clone(),
            user: user.to_string(),
            rhost,
            allow_empty: false,
        })
    }

    /// Log a PAM outcome in sshd's words; true if it was a success.
    /// Count a failed attempt; at MaxAuthTries, say so as sshd does (fail2ban and
    /// logwatch match this line).
    fn count_failure(&mut self, user: &str) {
        self.failures += 1;
        let max = self.candidate(user).settings.max_auth_tries;
        if max > 0 && self.failures == max {
            tracing::info!(
                "maximum authentication attempts exceeded for {user} from {} ssh2 [preauth]",
                peer(&self.ctx.peer)
            );
        }
    }

    fn log_pam(&mut self, user: &str, method: &str, outcome: &AuthOutcome) -> bool {
        let p = peer(&self.ctx.peer);
        match outcome {
            AuthOutcome::Accepted => return true,
            AuthOutcome::Failed(_) => tracing::info!("Failed {method} for {user} from {p} ssh2"),
            AuthOutcome::AccountRefused(why) => {
                tracing::info!("PAM: {why} for {user} from {p}");
                tracing::info!("Failed {method} for {user} from {p} ssh2");
            }
            AuthOutcome::PasswordChangeRequired => {
                tracing::info!(
                    "PAM: password change required for {user} from {p}; refusing: change it another way first"
                );
                tracing::info!("Failed {method} for {user} from {p} ssh2");
            }
            AuthOutcome::Unavailable(e) => tracing::error!("PAM unavailable: {e}"),
        }
        self.count_failure(user);
        false
    }

    /// Log a failure for a user PAM was never asked about.
    fn log_fail_without_pam(&mut self, user: &str, method: &str) {
        let p = peer(&self.ctx.peer);
        let invalid = self.candidate(user).info.is_none();
        if invalid {
            tracing::info!("Failed {method} for invalid user {user} from {p} ssh2");
        } else {
            tracing::info!("Failed {method} for {user} from {p} ssh2");
        }
        self.count_failure(user);
    }

    /// Finish a keyboard-interactive exchange.
    async fn kbd_step(&mut self, event: KbdEvent) -> Auth {
        let Some(state) = self.kbd.as_ref() else {
            return Auth::reject();
        };
        let (user, started) = (state.user.clone(), state.started);
        match event {
            KbdEvent::Prompts {
                instructions,
                prompts,
            } => Auth::Partial {
                name: "".into(),
                instructions: instructions.into(),
                prompts: prompts
                    .into_iter()
                    .map(|(t, echo)| (t.into(), echo))
                    .collect::<Vec<_>>()
                    .into(),
            },
            KbdEvent::Done(outcome) => {
                self.kbd = None;
                let notice = match &outcome {
                    AuthOutcome::AccountRefused(why) => {
                        Some(format!("rsshd: {why}; ask your administrator."))
                    }
                    AuthOutcome::PasswordChangeRequired => Some(
                        "rsshd: your password has expired and must be changed; \
                         it cannot be changed here."
                            .to_string(),
                    ),
                    _ => None,
                };
                if let Some(text) = notice {
                    // Keyboard-interactive can carry text: tell the user why (an
                    // info request without prompts), then fail on their reply.
                    self.log_pam(&user, "keyboard-interactive/pam", &outcome);
                    self.kbd = Some(KbdState {
                        user,
                        started,
                        pam: None,
                        notice_shown: true,
                    });
                    return Auth::Partial {
                        name: "".into(),
                        instructions: text.into(),
                        prompts: Vec::new().into(),
                    };
                }
                if self.log_pam(&user, "keyboard-interactive/pam", &outcome) {
                    let (auth, complete) =
                        self.method_succeeded(&user, "keyboard-interactive", None);
                    let word = if complete { "Accepted" } else { "Partial" };
                    tracing::info!(
                        "{word} keyboard-interactive/pam for {user} from {} ssh2",
                        peer(&self.ctx.peer)
                    );
                    auth
                } else {
                    tokio::time::sleep_until((started + FAIL_DELAY).into()).await;
                    Auth::reject()
                }
            }
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
            pam: s.use_pam.then(|| PamSession {
                service: s.pam_service_name.clone(),
                rhost: self.ctx.remote_host(),
            }),
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
        // As sshd: for an interactive login, the previous login (PrintLastLog, read
        // before this one is recorded), then /etc/motd (PrintMotd).
        let mut preamble = Vec::new();
        if let Some(tty) = process.tty_name() {
            let uid = login.user.uid;
            if is_shell
                && s.print_last_log
                && let Some(last) = host::last_login(uid)
            {
                preamble.extend_from_slice(last.message().as_bytes());
                preamble.push(b'\n');
            }
            let line = tty
                .to_string_lossy()
                .trim_start_matches("/dev/")
                .to_string();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            if let Err(e) = host::record_lastlog(uid, &line, &self.ctx.remote_host(), now) {
                tracing::debug!("lastlog: {e}");
            }
        }
        if is_shell
            && s.print_motd
            && let Ok(m) = std::fs::read("/etc/motd")
        {
            preamble.extend_from_slice(&m);
        }
        let motd =
            (!preamble.is_empty()).then(|| Bytes::from(crlf_if(chan.pty.is_some(), preamble)));
        let login_record = process.tty_name().map(|tty| LoginRecord {
            tty: tty.to_path_buf(),
            user: login.user.name.clone(),
            host: self.ctx.remote_host(),
            addr: self.ctx.peer.ip(),
            pid,
        });
        if let Some(chan) = self.channels.get_mut(&channel) {
            chan.start(process, handle, motd, login_record);
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
        if !self.method_ok(user, "publickey") {
            return Ok(Auth::reject());
        }
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
        if !self.method_ok(user, "publickey") {
            return Ok(Auth::reject());
        }
        let Some(options) = self.check_key(user, key.public_key, key.algorithm) else {
            return Ok(Auth::reject());
        };
        self.pending_key = None;
        if let Some(params) = self.account_params(user) {
            let outcome = tokio::task::spawn_blocking(move || pam::account(&params))
                .await
                .unwrap_or_else(|e| AuthOutcome::Unavailable(e.to_string()));
            if !self.log_pam(user, "publickey", &outcome) {
                return Ok(Auth::reject());
            }
        }
        let (auth, complete) = self.method_succeeded(user, "publickey", Some(options));
        tracing::info!(
            "{} publickey for {user} from {} ssh2: {} {}",
            if complete { "Accepted" } else { "Partial" },
            peer(&self.ctx.peer),
            key_type_name(key.public_key),
            key.public_key.fingerprint(HashAlg::Sha256)
        );
        Ok(auth)
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let started = std::time::Instant::now();
        self.shared.set_user(user);
        let Some(params) = self.pam_params(user, "password") else {
            self.log_fail_without_pam(user, "password");
            tokio::time::sleep_until((started + FAIL_DELAY).into()).await;
            return Ok(Auth::reject());
        };
        let outcome = if password.is_empty() && !params.allow_empty {
            AuthOutcome::Failed("empty password".into())
        } else {
            let conv = PasswordConversation::boxed(password);
            tokio::task::spawn_blocking(move || pam::authenticate(&params, conv))
                .await
                .unwrap_or_else(|e| AuthOutcome::Unavailable(e.to_string()))
        };
        if self.log_pam(user, "password", &outcome) {
            let (auth, complete) = self.method_succeeded(user, "password", None);
            let word = if complete { "Accepted" } else { "Partial" };
            tracing::info!(
                "{word} password for {user} from {} ssh2",
                peer(&self.ctx.peer)
            );
            return Ok(auth);
        }
        tokio::time::sleep_until((started + FAIL_DELAY).into()).await;
        Ok(Auth::reject())
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        self.shared.set_user(user);
        match response {
            None => {
                let pam = self
                    .pam_params(user, "keyboard-interactive")
                    .map(KbdAuth::start);
                self.kbd = Some(KbdState {
                    user: user.to_string(),
                    started: std::time::Instant::now(),
                    pam,
                    notice_shown: false,
                });
            }
            Some(answers) => {
                let answers: Vec<String> = answers
                    .map(|b: Bytes| String::from_utf8_lossy(&b).into_owned())
                    .collect();
                match self.kbd.as_ref() {
                    Some(KbdState { pam: Some(k), .. }) => k.answer(answers),
                    Some(KbdState {
                        pam: None,
                        user,
                        started,
                        notice_shown,
                    }) => {
                        // The decoy (or notice) round is over: fail like a wrong
                        // password.
                        let (user, started, logged) = (user.clone(), *started, *notice_shown);
                        self.kbd = None;
                        if !logged {
                            self.log_fail_without_pam(&user, "keyboard-interactive/pam");
                        }
                        tokio::time::sleep_until((started + FAIL_DELAY).into()).await;
                        return Ok(Auth::reject());
                    }
                    None => return Ok(Auth::reject()),
                }
            }
        }
        let event = match self.kbd.as_mut() {
            Some(KbdState { pam: Some(k), .. }) => k.next().await,
            Some(KbdState { pam: None, .. }) => KbdEvent::Prompts {
                instructions: String::new(),
                prompts: vec![("Password: ".into(), false)],
            },
            None => return Ok(Auth::reject()),
        };
        Ok(self.kbd_step(event).await)
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
            tracing::info!(
                "Refused session channel for user {} from {}: MaxSessions {max} reached",
                self.login
                    .as_ref()
                    .map(|l| l.user.name.as_str())
                    .unwrap_or("unknown"),
                peer(&self.ctx.peer)
            );
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
