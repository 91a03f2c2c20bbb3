//! The russh [`Handler`] for one connection: a thin layer that turns protocol
//! callbacks into decisions made by [`access`](super::access), [`host`](crate::host)
//! and [`session`](super::session). Authentication lives in [`auth`], starting a
//! session's process in [`start`].

mod auth;
mod start;

use auth::{Candidate, FAIL_DELAY, KbdState, KeyState, key_type_name};

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use russh::keys::{Algorithm, Certificate, PublicKey};
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet, Pty, Sig};

use super::access::{self, Refusal};
use super::limits::{CHANNELS_MAX, ENV_MAX_BYTES, ENV_MAX_VARS, Limit, refused};
use super::methods;
use super::session::SessionChannel;
use super::{ConnContext, ConnShared};
use crate::config::PermitRootLogin;
use crate::config::Settings;
use crate::daemon::algorithms::fingerprint;
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
    /// Failed attempts as sshd counts them, against MaxAuthTries.
    failures: u32,
    /// MaxAuthTries was reached: every further request fails.
    exhausted: bool,
    /// An authentication request was seen (sshd forgives only the first `none`).
    auth_seen: bool,
    /// Publickey verdicts and keys already used (see `auth::KeyState`).
    keys: KeyState,
    /// The window each channel has left, to catch a client that ignores it.
    credits: super::flow::Credits,
}

impl ConnHandler {
    pub fn new(ctx: Arc<ConnContext>, shared: Arc<ConnShared>) -> Self {
        ConnHandler {
            forwards: super::forward::Forwards::new(Arc::clone(&shared), ctx.peer),
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
            exhausted: false,
            auth_seen: false,
            keys: KeyState::default(),
            credits: super::flow::Credits::default(),
        }
    }

    /// A publickey request whose signature russh has verified, with a plain key or
    /// a certificate (`cert`, of `key`): the key's verdict, PAM's account check,
    /// AuthenticationMethods, and sshd's `Accepted publickey` line.
    async fn publickey_verified(
        &mut self,
        user: &str,
        key: &PublicKey,
        algorithm: Option<&Algorithm>,
        cert: Option<&Certificate>,
    ) -> Result<Auth, ConnError> {
        self.admit(user).await?;
        self.shared.attempted();
        if self.exhausted {
            return Ok(Auth::reject());
        }
        if !self.method_ok(user, "publickey") {
            self.count_failure(user);
            return Ok(Auth::reject());
        }
        let Some(options) = self.check_key(user, key, algorithm, cert).await else {
            self.count_failure(user);
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
        self.keys.used(key);
        let (auth, complete) = self.method_succeeded(user, "publickey", Some(options));
        tracing::info!(
            "{} publickey for {user} from {} ssh2: {}",
            if complete { "Accepted" } else { "Partial" },
            peer(&self.ctx.peer),
            match cert {
                Some(c) => host::describe_cert(c, self.ctx.pre_auth.fingerprint_hash),
                None => format!(
                    "{} {}",
                    key_type_name(key),
                    fingerprint(key, self.ctx.pre_auth.fingerprint_hash)
                ),
            }
        );
        Ok(auth)
    }

    /// Check a packet of `len` bytes on `channel` against the window the client
    /// was granted; past OpenSSH's grace, disconnect as sshd does (channels.c).
    /// True if the connection is being ended.
    fn window_overrun(
        &mut self,
        channel: ChannelId,
        len: usize,
        session: &mut Session,
    ) -> Result<bool, ConnError> {
        let n = u32::from(channel);
        let released = self
            .channels
            .get(&channel)
            .map(|c| c.inflow.released())
            .or_else(|| self.forwards.released(channel))
            .unwrap_or(0);
        let Err(o) = self.credits.received(n, len, released) else {
            return Ok(false);
        };
        refused!(
            self.forwards.tunnels().notices,
            Limit::Window,
            "channel {n}: rcvd too much data {len}, win {}/{} (excess {})",
            o.window,
            super::session::WINDOW,
            o.excess
        );
        if !o.fatal {
            return Ok(false);
        }
        let text = format!("channel {n}: peer ignored channel window");
        let user = self
            .login
            .as_ref()
            .map(|l| format!("user {} ", l.user.name))
            .unwrap_or_default();
        tracing::info!("Disconnecting {user}{}: {text}", peer(&self.ctx.peer));
        session.disconnect(russh::Disconnect::ProtocolError, &text, "")?;
        Ok(true)
    }

    /// End the connection if its user has more client data queued, on all their
    /// connections, than the daemon holds for one user (`limits::USER_QUEUED_MAX`).
    fn user_overrun(&mut self, session: &mut Session) -> Result<bool, ConnError> {
        if !self.forwards.tunnels().conn.over_user_max() {
            return Ok(false);
        }
        let text = format!(
            "more than {} MiB of data queued for this user",
            super::limits::USER_QUEUED_MAX >> 20
        );
        let user = self
            .login
            .as_ref()
            .map(|l| format!("user {} ", l.user.name))
            .unwrap_or_default();
        tracing::info!("Disconnecting {user}{}: {text}", peer(&self.ctx.peer));
        session.disconnect(russh::Disconnect::ByApplication, &text, "")?;
        Ok(true)
    }

    /// Drop what the handler keeps for channels retired since it last looked
    /// (see `connection::channels`): their session state and window credit.
    fn forget_retired(&mut self) {
        let gone = self.shared.channels.take_retired();
        if gone.is_empty() {
            return;
        }
        self.channels
            .retain(|id, _| !gone.contains(&u32::from(*id)));
        for n in gone {
            self.credits.closed(n);
        }
    }

    /// The user's descriptors a session's PTY or pipes will take, claimed before
    /// they are created; `None` (logged) past the per-user cap.
    fn session_fds(&self, login: &Login, pty: bool) -> Option<super::limits::FdLease> {
        use super::limits::{FDS_PIPE_SESSION, FDS_PTY_SESSION, FdLease};
        let n = if pty {
            FDS_PTY_SESSION
        } else {
            FDS_PIPE_SESSION
        };
        match FdLease::take(login.user.uid, n) {
            Ok(l) => Some(l),
            Err(e) => {
                refused!(
                    self.forwards.tunnels().notices,
                    Limit::Fds,
                    "session for user {} from {} not started: {e}",
                    login.user.name,
                    peer(&self.ctx.peer)
                );
                None
            }
        }
    }
}

impl Handler for ConnHandler {
    type Error = ConnError;

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The data itself went to the channel's reader, whose consumer gives the
        // window back (`inflow`); here it is only checked against the window.
        if !self.window_overrun(channel, data.len(), session)? {
            self.user_overrun(session)?;
        }
        Ok(())
    }

    async fn extended_data(
        &mut self,
        channel: ChannelId,
        _code: u32,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Nothing reads a client's extended data, but it uses the window too:
        // check it, then give its window back at once.
        if !self.window_overrun(channel, data.len(), session)? {
            self.credits.given_back(u32::from(channel), data.len());
            let _ = session
                .handle()
                .channel_consumed(channel, data.len() as u32);
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
        self.admit(user).await?;
        // Only a first `none` is free (sshd's userauth_finish).
        if std::mem::replace(&mut self.auth_seen, true) && !self.exhausted {
            self.count_failure(user);
        }
        Ok(Auth::reject())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.admit(user).await?;
        self.shared.attempted();
        self.auth_seen = true;
        if self.exhausted {
            return Ok(Auth::reject());
        }
        if !self.method_ok(user, "publickey") {
            self.count_failure(user);
            return Ok(Auth::reject());
        }
        match self
            .check_key(
                user,
                offer.public_key,
                Some(offer.algorithm),
                offer.certificate,
            )
            .await
        {
            Some(opts) => {
                self.pending_key = Some((user.to_string(), opts));
                Ok(Auth::Accept)
            }
            None => {
                // sshd's VERBOSE line, so `-d` names the key that was refused.
                tracing::debug!(
                    "Failed publickey for {user} from {} ssh2: {} {}",
                    peer(&self.ctx.peer),
                    key_type_name(offer.public_key),
                    fingerprint(offer.public_key, self.ctx.pre_auth.fingerprint_hash)
                );
                // Each key refused is a failed attempt for sshd.
                self.count_failure(user);
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.publickey_verified(user, key.public_key, Some(key.algorithm), None)
            .await
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        // russh verified the signature with the algorithm the offer of this
        // certificate was accepted with (hence `None`).
        let key = PublicKey::new(certificate.public_key().clone(), "");
        self.publickey_verified(user, &key, None, Some(certificate))
            .await
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let started = std::time::Instant::now();
        self.admit(user).await?;
        self.shared.attempted();
        self.auth_seen = true;
        if self.exhausted {
            return Ok(Auth::reject());
        }
        let Some(params) = self.pam_params(user, "password") else {
            self.log_fail_without_pam(user, "password");
            tokio::time::sleep_until((started + FAIL_DELAY).into()).await;
            return Ok(self.failure(user));
        };
        let outcome = if password.is_empty() && !params.allow_empty {
            AuthOutcome::Failed("empty password".into())
        } else if password.len() > auth::MAX_PASSWORD_LEN {
            AuthOutcome::Failed("password too long".into())
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
        Ok(self.failure(user))
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        self.admit(user).await?;
        self.shared.attempted();
        self.auth_seen = true;
        if self.exhausted {
            return Ok(Auth::reject());
        }
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
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Sessions we closed count no more (MaxSessions is about open ones).
        self.forget_retired();
        let max = self
            .login
            .as_ref()
            .map(|l| l.settings.max_sessions as usize)
            .unwrap_or(0);
        let user = self
            .login
            .as_ref()
            .map(|l| l.user.name.as_str())
            .unwrap_or("unknown");
        if self.shared.channels.sessions() >= max {
            tracing::info!(
                "Refused session channel for user {user} from {}: MaxSessions {max} reached",
                peer(&self.ctx.peer)
            );
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let tunnels = self.forwards.tunnels();
        if let Some(l) = &self.login {
            tunnels.conn.bind_user(l.user.uid);
        }
        let Some(slot) = tunnels.slots.take() else {
            refused!(
                tunnels.notices,
                Limit::Channels,
                "Refused session channel for user {user} from {}: {CHANNELS_MAX} channels open on this connection",
                peer(&self.ctx.peer)
            );
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        let conn = Arc::clone(&tunnels.conn);
        let id = channel.id();
        let n = u32::from(id);
        let stamps = self.shared.events.channel_opened(n, "session");
        let retired = self.shared.channels.open(id, true, slot);
        let shared = Arc::clone(&self.shared);
        self.channels.insert(
            id,
            SessionChannel::open(channel, session.handle(), stamps, &conn, retired, shared),
        );
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The client closed first; the same retiring as when we do.
        self.shared.retire(u32::from(channel));
        self.forget_retired();
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
                self.shared.channels.set_pty(u32::from(channel));
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
        let notices = self.forwards.tunnels().notices.clone();
        match self.channels.get_mut(&channel) {
            Some(chan) if !chan.started() => {
                // sshd's order: the count first, whatever the name.
                let bytes: usize = chan.env.iter().map(|(k, v)| k.len() + v.len()).sum();
                if chan.env.len() >= ENV_MAX_VARS {
                    refused!(
                        notices,
                        Limit::EnvCount,
                        "Ignoring env request {name}: too many env vars"
                    );
                    session.channel_failure(channel)?;
                } else if !accepted {
                    tracing::debug!("Ignoring env request {name}: disallowed name");
                    session.channel_failure(channel)?;
                } else if bytes + name.len() + value.len() > ENV_MAX_BYTES {
                    refused!(
                        notices,
                        Limit::EnvBytes,
                        "Ignoring env request {name}: more than {ENV_MAX_BYTES} bytes of env vars"
                    );
                    session.channel_failure(channel)?;
                } else {
                    chan.env.push((name.to_string(), value.to_string()));
                    session.channel_success(channel)?;
                }
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
        self.start(channel, None, false, session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        self.start(channel, Some(command), false, session).await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, Some(name.to_string()), true, session)
            .await
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
            chan.resize(col_width, row_height, pix_width, pix_height);
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
            // A signal is the user acting: it counts as input.
            chan.stamps.input.touch();
            chan.signal(&signal);
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
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.forget_retired();
        let login = self.login.clone();
        self.forwards
            .open_direct(
                login.as_deref(),
                session.handle(),
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
            .start_agent(login.as_deref(), session.handle())
            .await)
    }
}
