//! Starting the process of a session channel: forced commands, subsystems, the
//! environment, PAM, and the preamble an interactive login shows.

use super::*;
use crate::host::SessionEnv;

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

    pub(super) fn try_start(
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
            user_rc: s.permit_user_rc
                && !login.key_options.no_user_rc
                && !is_subsystem
                && s.force_command.is_none(),
            pam: s.use_pam.then(|| PamSession {
                service: s.pam_service_name.clone(),
                rhost: self.ctx.remote_host(),
            }),
        };
        let Some(fds) = self.session_fds(&login, req.pty.is_some()) else {
            return false;
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
            chan.fds = Some(fds);
            // As sshd: a client may not signal a forced command or a subsystem.
            chan.signals_refused = match (forced.is_some(), is_subsystem) {
                (true, _) => Some("forced-command"),
                (false, true) => Some("subsystem"),
                (false, false) => None,
            };
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
