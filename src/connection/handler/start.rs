//! Starting the process of a session channel: the network side asks the host
//! (`Spawn`, with the connection's login token) and wires what comes back to
//! the channel. What runs (forced commands, subsystems, chroot, PAM, the login
//! messages) is the host's decision.

use super::*;
use crate::host::api::SpawnAsk;

impl ConnHandler {
    /// Start the process of a session channel: shell (`command` None), exec or
    /// subsystem. Replies success/failure on `session` before returning, because
    /// russh matches replies to requests by order.
    pub(super) async fn start(
        &mut self,
        channel: ChannelId,
        requested: Option<String>,
        is_subsystem: bool,
        session: &mut Session,
    ) -> Result<(), ConnError> {
        let ok = self
            .try_start(channel, requested, is_subsystem, session.handle())
            .await;
        if ok {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    pub(super) async fn try_start(
        &mut self,
        channel: ChannelId,
        requested: Option<String>,
        is_subsystem: bool,
        handle: russh::server::Handle,
    ) -> bool {
        let Some(login) = self.login.clone() else {
            return false;
        };
        let Some(chan) = self.channels.get(&channel) else {
            return false;
        };
        if chan.started() {
            return false;
        }
        let s = &login.settings;
        // The same plan the host makes, made here for sshd's log lines and the
        // channel's kind; the host decides again from its own settings.
        let Some(plan) = host::plan(
            s,
            &login.key_options,
            &login.user.name,
            &peer(&self.ctx.peer),
            requested.as_deref(),
            is_subsystem,
            true,
        ) else {
            return false;
        };
        let kind = if is_subsystem {
            format!("session:subsystem:{}", requested.as_deref().unwrap_or(""))
        } else if plan.is_shell {
            "session:shell".to_string()
        } else {
            "session:command".to_string()
        };
        self.shared.events.send(Event::ChannelOpened {
            channel: u32::from(channel),
            kind,
        });
        let ask = SpawnAsk {
            requested,
            is_subsystem,
            pty: chan.pty.clone(),
            client_env: chan.env.clone(),
            auth_sock: self.forwards.agent_socket(),
        };
        let Some(fds) = self.session_fds(&login, ask.pty.is_some()) else {
            return false;
        };
        let (spawned, io) = match login.grant.spawn(ask).await {
            Ok(p) => p,
            // What sshd's session child would log before dying (a bad jail).
            Err(host::HostError::SessionFatal(e)) => {
                tracing::error!("{e}");
                return false;
            }
            Err(e) => {
                tracing::error!("session for {} could not start: {e}", login.user.name);
                return false;
            }
        };
        let tty = spawned
            .tty
            .as_deref()
            .map(|t| t.trim_start_matches("/dev/").to_string());
        let pid = spawned.pid;
        self.shared.facts(|f| {
            if f.tty.is_none() && tty.is_some() {
                f.tty = tty.clone();
                f.leader = Some(pid);
            } else if f.leader.is_none() {
                f.leader = Some(pid);
            }
        });
        if let Some(chan) = self.channels.get_mut(&channel) {
            chan.fds = Some(fds);
            // As sshd: a client may not signal a forced command or a subsystem.
            chan.signals_refused = match (spawned.forced, is_subsystem) {
                (true, _) => Some("forced-command"),
                (false, true) => Some("subsystem"),
                (false, false) => None,
            };
            chan.program = Some((login.grant.clone(), spawned.process));
            self.shared.sessions.track(&chan.end);
            let motd = spawned.motd.map(Bytes::from);
            let grant = login.grant.clone();
            chan.start(grant, spawned.process, (spawned.io, io), handle, motd);
        }
        true
    }
}
