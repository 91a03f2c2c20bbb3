//! The handler's side of channels: opening session channels, the requests that
//! shape a session before its program starts (pty-req, env, window-change,
//! signal), and the checks every packet of client data goes through (the
//! channel's window and the user's queued data).

use super::*;
use crate::connection::flow::WINDOW;
use crate::connection::limits::{FDS_PIPE_SESSION, FDS_PTY_SESSION, FdLease, USER_QUEUED_MAX};

impl ConnHandler {
    /// Check a packet of `len` bytes on `channel` against the window the client
    /// was granted; past OpenSSH's grace, disconnect as sshd does (channels.c).
    /// True if the connection is being ended.
    pub(super) fn window_overrun(
        &mut self,
        channel: ChannelId,
        len: usize,
        session: &mut Session,
    ) -> Result<bool, ConnError> {
        let n = u32::from(channel);
        let Err(o) = self.shared.channels.received(n, len) else {
            return Ok(false);
        };
        refused!(
            self.forwards.tunnels().notices,
            Limit::Window,
            "channel {n}: rcvd too much data {len}, win {}/{} (excess {})",
            o.window,
            WINDOW,
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
    pub(super) fn user_overrun(&mut self, session: &mut Session) -> Result<bool, ConnError> {
        if !self.forwards.tunnels().conn.over_user_max() {
            return Ok(false);
        }
        let text = format!(
            "more than {} MiB of data queued for this user",
            USER_QUEUED_MAX >> 20
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
    /// (see `connection::channels`): their session state.
    pub(super) fn forget_retired(&mut self) {
        let gone = self.shared.channels.take_retired();
        if gone.is_empty() {
            return;
        }
        self.channels
            .retain(|id, _| !gone.contains(&u32::from(*id)));
    }

    /// The user's descriptors a session's PTY or pipes will take, claimed before
    /// they are created; `None` (logged) past the per-user cap.
    pub(super) fn session_fds(&self, login: &Login, pty: bool) -> Option<FdLease> {
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

    pub(super) fn on_data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), ConnError> {
        // The data itself went to the channel's reader, whose consumer gives the
        // window back (`inflow`); here it is only checked against the window.
        if !self.window_overrun(channel, data.len(), session)? {
            self.user_overrun(session)?;
        }
        Ok(())
    }

    pub(super) fn on_extended_data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), ConnError> {
        // Nothing reads a client's extended data, but it uses the window too:
        // check it, then give its window back at once.
        if !self.window_overrun(channel, data.len(), session)? {
            self.shared
                .channels
                .given_back(u32::from(channel), data.len());
            let _ = session
                .handle()
                .channel_consumed(channel, data.len() as u32);
        }
        Ok(())
    }

    pub(super) async fn open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), ConnError> {
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
        let shared = Arc::clone(&self.shared);
        self.channels.insert(
            id,
            SessionChannel::open(channel, session.handle(), stamps, &conn, slot, shared),
        );
        reply.accept().await;
        Ok(())
    }

    /// `size` is the client's (columns, rows, pixel width, pixel height).
    pub(super) fn on_pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        (col_width, row_height, pix_width, pix_height): (u32, u32, u32, u32),
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), ConnError> {
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

    pub(super) fn on_env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), ConnError> {
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

    pub(super) fn on_window_change(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
    ) {
        if let Some(chan) = self.channels.get_mut(&channel) {
            chan.resize(col_width, row_height, pix_width, pix_height);
        }
    }

    pub(super) async fn on_signal(&mut self, channel: ChannelId, signal: Sig) {
        if let Some(chan) = self.channels.get(&channel) {
            // A signal is the user acting: it counts as input.
            chan.stamps.input.touch();
            chan.signal(&signal).await;
        }
    }
}
