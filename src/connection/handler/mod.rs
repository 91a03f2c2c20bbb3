//! The russh [`Handler`] for one connection: a thin layer that turns protocol
//! callbacks into requests to the privileged boundary ([`host`](crate::host)) and
//! work of [`session`](super::session). Authentication lives in [`auth`], starting a
//! session's process in [`start`].

mod auth;
mod channel;
mod start;

use auth::Candidate;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use russh::keys::Certificate;
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet, Pty, Sig};

use super::limits::{CHANNELS_MAX, ENV_MAX_BYTES, ENV_MAX_VARS, Limit, refused};
use super::login::Login;
use super::session::SessionChannel;
use super::shared::{ConnContext, ConnShared};
use crate::config::Settings;
use crate::config::algorithms::fingerprint;
use crate::host::api::ConnId;
use crate::host::{self, PtyParams, key_type_name};
use crate::lifetime::Event;
use crate::log::peer;

/// Errors that end a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error(transparent)]
    Protocol(#[from] russh::Error),
}

/// One per connection; see the module docs.
pub(crate) struct ConnHandler {
    ctx: Arc<ConnContext>,
    shared: Arc<ConnShared>,
    /// Tunnels, `-R` listeners and the agent socket; dropped with the connection.
    forwards: super::forward::Forwards,
    /// This connection as the host numbered it.
    conn: ConnId,
    /// The host's verdict on each user name asked about (see `auth`).
    candidates: HashMap<String, Candidate>,
    login: Option<Arc<Login>>,
    channels: HashMap<ChannelId, SessionChannel>,
    /// When the keyboard-interactive exchange in flight began (its failure takes
    /// at least `auth::FAIL_DELAY` from there).
    kbd_started: Option<std::time::Instant>,
    /// Failed attempts as sshd counts them, against MaxAuthTries.
    failures: u32,
    /// MaxAuthTries was reached: every further request fails.
    exhausted: bool,
    /// An authentication request was seen (sshd forgives only the first `none`).
    auth_seen: bool,
}

impl Handler for ConnHandler {
    type Error = ConnError;

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.on_data(channel, data, session)
    }

    async fn extended_data(
        &mut self,
        channel: ChannelId,
        _code: u32,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.on_extended_data(channel, data, session)
    }

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        if self.ctx.pre_auth.banner.is_none() {
            return Ok(None);
        }
        // The host reads it, from its own settings for this connection.
        Ok(self.ctx.host.banner(self.conn).await.unwrap_or(None))
    }

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        self.on_auth_none(user).await
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.on_publickey_offered(user, offer).await
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.on_publickey(user, key).await
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        self.on_openssh_certificate(user, certificate).await
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        self.on_password(user, password).await
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let answers = response.map(|r| {
            r.map(|b: Bytes| String::from_utf8_lossy(&b).into_owned())
                .collect()
        });
        self.on_keyboard_interactive(user, answers).await
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.open_session(channel, reply, session).await
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
        self.on_pty_request(
            channel,
            term,
            (col_width, row_height, pix_width, pix_height),
            modes,
            session,
        )
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.on_env_request(channel, name, value, session)
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
        self.on_window_change(channel, col_width, row_height, pix_width, pix_height);
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.on_signal(channel, signal).await;
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
