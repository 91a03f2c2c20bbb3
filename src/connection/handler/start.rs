//! Starting the process of a session channel: forced commands, subsystems, the
//! environment, PAM, and the preamble an interactive login shows.

use super::*;
use crate::host::{InternalSftp, SessionEnv};

impl ConnHandler {
    /// Environment every process of this connection gets from the connection itself.
    pub(super) fn connection_env(&self) -> Vec<(String, String)> {
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
    /// before returning, because russh matches replies to requests by order.
    pub(super) async fn start(
        &mut self,
        channel: ChannelId,
        requested: Option<String>,
        is_subsystem: bool,
        session: &mut Session,
    ) -> Result<(), ConnError> {
        let ok = match self.user_env(channel).await {
            Some(user_env) => {
                self.try_start(channel, requested, is_subsystem, session.handle(), user_env)
                    .await
            }
            None => false,
        };
        if ok {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    /// Under PermitUserEnvironment: the key's `environment=` options, then
    /// `~/.ssh/environment` (read with the user's identity), names filtered by
    /// the allow-list. `None` when the session must not start (a file over
    /// sshd's line limit).
    async fn user_env(&self, channel: ChannelId) -> Option<Vec<(String, String)>> {
        let login = self.login.clone()?;
        let allow = &login.settings.permit_user_environment;
        if allow.is_empty() || self.channels.get(&channel).is_none_or(|c| c.started()) {
            return Some(Vec::new());
        }
        let list = allow.join(",");
        let mut env: Vec<(String, String)> = login
            .key_options
            .environment
            .iter()
            .filter(|(k, _)| crate::pattern::match_pattern_list(k, &list, false).is_positive())
            .cloned()
            .collect();
        match host::user_environment(&login.user, allow).await {
            Ok(file) => env.extend(file),
            Err(e) => {
                tracing::error!("{e}");
                return None;
            }
        }
        Some(env)
    }

    pub(super) async fn try_start(
        &mut self,
        channel: ChannelId,
        requested: Option<String>,
        is_subsystem: bool,
        handle: russh::server::Handle,
        user_env: Vec<(String, String)>,
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
        let forced = s
            .force_command
            .clone()
            .or_else(|| login.key_options.command.clone());
        // As sshd's do_exec: a forced internal-sftp serves SFTP to a subsystem
        // request and refuses anything else; a subsystem whose program is
        // internal-sftp is served in-process too (see host::sftp).
        let forced_sftp = forced.as_deref().is_some_and(is_internal_sftp);
        let (command, internal_sftp) = if is_subsystem {
            let name = requested.clone().unwrap_or_default();
            let Some((_, cmd)) = s.subsystem.iter().find(|(n, _)| *n == name) else {
                tracing::info!(
                    "subsystem request for {name} by user {} failed, subsystem not found",
                    login.user.name
                );
                return false;
            };
            tracing::info!("subsystem request for {name} by user {}", login.user.name);
            let line = forced.as_ref().unwrap_or(cmd);
            if forced_sftp || (forced.is_none() && cmd.split(' ').next() == Some(INTERNAL_SFTP)) {
                match crate::config::split_args(line) {
                    Ok(args) => (None, Some(InternalSftp::Serve(args))),
                    Err(e) => {
                        tracing::error!("internal error: can't split internal-sftp arguments: {e}");
                        return false;
                    }
                }
            } else {
                (Some(line.clone()), None)
            }
        } else if forced_sftp {
            tracing::error!(
                "Connection from user {} {}: refusing non-sftp session",
                login.user.name,
                crate::log::peer(&self.ctx.peer)
            );
            (None, Some(InternalSftp::Refuse))
        } else {
            (forced.clone().or_else(|| requested.clone()), None)
        };
        // Each origin separately: `ExecPlan` merges them in sshd's order, so the
        // client's variables can never replace the server's (PATH, SSH_*).
        let env = SessionEnv {
            client: chan.env.clone(),
            auth_sock: self.forwards.agent_socket(),
            user: user_env,
            admin: s.set_env.clone(),
            connection: self.connection_env(),
            original_command: forced.as_ref().and(requested.clone()),
        };
        let is_shell = command.is_none() && internal_sftp.is_none();
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
            user_rc: s.permit_user_rc
                && !login.key_options.no_user_rc
                && !is_subsystem
                && s.force_command.is_none(),
            pam: s.use_pam.then(|| PamSession {
                service: s.pam_service_name.clone(),
                rhost: self.ctx.remote_host(),
            }),
            chroot: s
                .chroot_directory
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            internal_sftp,
        };
        let Some(fds) = self.session_fds(&login, req.pty.is_some()) else {
            return false;
        };
        let (pam, pam_messages) = match &req.pam {
            Some(p) => match self.pam_login(&login, p).await {
                Ok(opened) => opened,
                Err(e) => {
                    tracing::error!("session for {} could not start: {e}", login.user.name);
                    return false;
                }
            },
            None => (None, Vec::new()),
        };
        let process = match host::spawn(req, pam.as_deref()).await {
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
        let motd = self
            .login_messages(&login, process.tty_name(), is_shell, pam_messages)
            .await;
        let login_record = process.tty_name().map(|tty| LoginRecord {
            tty: tty.to_path_buf(),
            user: login.user.name.clone(),
            host: self.ctx.remote_host(),
            addr: self.ctx.peer.ip(),
            pid,
        });
        if let Some(chan) = self.channels.get_mut(&channel) {
            chan.fds = Some(fds);
            // As sshd: a client may not signal a forced command or a subsystem.
            chan.signals_refused = match (forced.is_some(), is_subsystem) {
                (true, _) => Some("forced-command"),
                (false, true) => Some("subsystem"),
                (false, false) => None,
            };
            self.shared.sessions.track(&chan.end);
            chan.start(process, handle, motd, login_record, s.session_cleanup);
        }
        true
    }

    /// The connection's PAM session for `login`, opened by its first session; and
    /// what PAM's session modules showed, for that first session only (as sshd
    /// clears its `loginmsg` after starting a session). `None` if it could not be
    /// opened: sessions then end at once with status 254, as sshd's.
    async fn pam_login(
        &self,
        login: &Login,
        pam: &PamSession,
    ) -> Result<(Option<Arc<host::pam::PamLogin>>, Vec<String>), host::HostError> {
        use crate::connection::shared::PamState;
        let state = |s: &Self| match &*s.shared.pam.lock().unwrap_or_else(|p| p.into_inner()) {
            PamState::NotOpened => None,
            PamState::Open(l) => Some(Some(Arc::clone(l))),
            PamState::Failed => Some(None),
        };
        // The handler serves one request at a time: nobody else opens it meanwhile.
        if let Some(known) = state(self) {
            return Ok((known, Vec::new()));
        }
        let opened =
            host::pam::PamLogin::open(pam, &login.user.name, login.settings.session_cleanup)
                .await?;
        let (new, messages) = match opened {
            host::pam::Opened::Open(l, m) => (PamState::Open(Arc::new(l)), m),
            host::pam::Opened::Failed(m) => (PamState::Failed, m),
        };
        *self.shared.pam.lock().unwrap_or_else(|p| p.into_inner()) = new;
        Ok((state(self).flatten(), messages))
    }

    /// What an interactive login shows before the shell starts, in sshd's order
    /// (`do_login`, `display_loginmsg`, `do_motd`): PAM's session messages, the
    /// previous login (PrintLastLog), then /etc/motd (PrintMotd). Only for a
    /// shell (no command) and without `~/.hushlogin`; the last login and the motd
    /// only with a terminal, where the text goes through the terminal's
    /// newline translation as sshd's does. Every terminal session's login is
    /// recorded in lastlog, after the previous one was read.
    async fn login_messages(
        &self,
        login: &Login,
        tty: Option<&std::path::Path>,
        is_shell: bool,
        pam_messages: Vec<String>,
    ) -> Option<Bytes> {
        let s = &login.settings;
        let uid = login.user.uid;
        let shown = is_shell && !host::hush_login(&login.user).await;
        let mut text = Vec::new();
        if shown {
            for m in &pam_messages {
                text.extend_from_slice(m.as_bytes());
                text.push(b'\n');
            }
        }
        if let Some(tty) = tty {
            if shown
                && s.print_last_log
                && let Some(last) = host::last_login(uid)
            {
                text.extend_from_slice(last.message().as_bytes());
                text.extend_from_slice(b"\r\n");
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
            if shown
                && s.print_motd
                && let Ok(m) = std::fs::read("/etc/motd")
            {
                text.extend_from_slice(&m);
            }
        }
        (!text.is_empty()).then(|| Bytes::from(crlf_if(tty.is_some(), text)))
    }
}

const INTERNAL_SFTP: &str = "internal-sftp";

/// sshd's `IS_INTERNAL_SFTP`: the command is `internal-sftp`, alone or followed
/// by arguments.
fn is_internal_sftp(command: &str) -> bool {
    command
        .strip_prefix(INTERNAL_SFTP)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
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
