//! The russh [`Handler`] for one connection: a thin layer that turns protocol
//! callbacks into decisions made by [`access`](super::access), [`host`](crate::host)
//! and [`session`](super::session). Authentication lives in [`auth`], starting a
//! session's process in [`start`].

mod auth;
mod start;

use auth::{Candidate, FAIL_DELAY, KbdState, key_type_name};

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
        self.shared.attempted();
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
        self.shared.attempted();
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
        self.shared.attempted();
        let Some(params) = self.pam_params(user, "password") else {
            self.log_fail_without_pam(user, "password");
            tokio::time::sleep_until((started + FAIL_DELAY).into()).await;
            return Ok(Auth::reject());
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
        Ok(Auth::reject())
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        self.shared.set_user(user);
        self.shared.attempted();
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
