//! `Spawn`: the program of a session channel, for a login the host recorded. What
//! runs is decided here from the host's own settings and the token's login
//! (ForceCommand, the key's `command=`, ChrootDirectory, PAM, `~/.ssh/rc`,
//! PermitUserEnvironment, AcceptEnv), never from values the caller sends; the
//! connection's PAM session, the login messages and lastlog are the host's too.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use super::api::{SpawnAsk, Spawned, SpawnedIo};
use super::auth_state::{ConnState, HostLogin, PamState};
use super::sftp::InternalSftp;
use super::spawn::{PamSession, SessionEnv, SessionProcess, SpawnRequest};
use super::{HostError, KeyOptions, LoginRecord};
use crate::config::Settings;

const INTERNAL_SFTP: &str = "internal-sftp";

/// What `Spawn` made: the answer, the process the host keeps, the descriptors
/// the caller gets, and a terminal session's utmp/wtmp record.
pub(super) type Started = (Spawned, SessionProcess, Vec<OwnedFd>, Option<LoginRecord>);

/// sshd's `IS_INTERNAL_SFTP`: the command is `internal-sftp`, alone or followed
/// by arguments.
fn is_internal_sftp(command: &str) -> bool {
    command
        .strip_prefix(INTERNAL_SFTP)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

/// What a session request runs, after forced commands (sshd's `do_exec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The command line; `None` with `internal_sftp` or for the login shell.
    pub(crate) command: Option<String>,
    pub(crate) internal_sftp: Option<InternalSftp>,
    /// The forced command (ForceCommand, else the key's `command=`), if any.
    pub(crate) forced: Option<String>,
    pub(crate) is_shell: bool,
}

/// The plan for a request of `user` from `peer`; `None` if it is refused. With
/// `log`, sshd's lines for it (the network side logs as it asks; the host, which
/// decides again from its own settings, does not repeat them).
pub(crate) fn plan(
    s: &Settings,
    key: &KeyOptions,
    user: &str,
    peer: &str,
    requested: Option<&str>,
    is_subsystem: bool,
    log: bool,
) -> Option<Plan> {
    let forced = s.force_command.clone().or_else(|| key.command.clone());
    // As sshd's do_exec: a forced internal-sftp serves SFTP to a subsystem
    // request and refuses anything else; a subsystem whose program is
    // internal-sftp is served in-process too (see host::sftp).
    let forced_sftp = forced.as_deref().is_some_and(is_internal_sftp);
    let (command, internal_sftp) = if is_subsystem {
        let name = requested.unwrap_or_default();
        let Some((_, cmd)) = s.subsystem.iter().find(|(n, _)| *n == name) else {
            if log {
                tracing::info!(
                    "subsystem request for {name} by user {user} failed, subsystem not found"
                );
            }
            return None;
        };
        if log {
            tracing::info!("subsystem request for {name} by user {user}");
        }
        let line = forced.as_ref().unwrap_or(cmd);
        if forced_sftp || (forced.is_none() && cmd.split(' ').next() == Some(INTERNAL_SFTP)) {
            match crate::config::split_args(line) {
                Ok(args) => (None, Some(InternalSftp::Serve(args))),
                Err(e) => {
                    if log {
                        tracing::error!("internal error: can't split internal-sftp arguments: {e}");
                    }
                    return None;
                }
            }
        } else {
            (Some(line.clone()), None)
        }
    } else if forced_sftp {
        if log {
            tracing::error!("Connection from user {user} {peer}: refusing non-sftp session");
        }
        (None, Some(InternalSftp::Refuse))
    } else {
        (
            forced.clone().or_else(|| requested.map(str::to_string)),
            None,
        )
    };
    let is_shell = command.is_none() && internal_sftp.is_none();
    Some(Plan {
        command,
        internal_sftp,
        forced,
        is_shell,
    })
}

impl ConnState {
    /// Environment every process of this connection gets from the connection itself.
    fn connection_env(&self) -> Vec<(String, String)> {
        let rip = crate::log::display_ip(&self.peer);
        let lip = crate::log::display_ip(&self.local);
        vec![
            (
                "SSH_CLIENT".into(),
                format!("{rip} {} {}", self.peer.port(), self.local.port()),
            ),
            (
                "SSH_CONNECTION".into(),
                format!("{rip} {} {lip} {}", self.peer.port(), self.local.port()),
            ),
        ]
    }

    /// Under PermitUserEnvironment: the key's `environment=` options, then
    /// `~/.ssh/environment` (read with the user's identity), names filtered by
    /// the allow-list. An error (logged as sshd does) when the session must not
    /// start (a file over sshd's line limit).
    async fn user_env(login: &HostLogin) -> Result<Vec<(String, String)>, HostError> {
        let allow = &login.settings.permit_user_environment;
        if allow.is_empty() {
            return Ok(Vec::new());
        }
        let list = allow.join(",");
        let mut env: Vec<(String, String)> = login
            .key_options
            .environment
            .iter()
            .filter(|(k, _)| crate::pattern::match_pattern_list(k, &list, false).is_positive())
            .cloned()
            .collect();
        match super::user_environment(&login.user, allow).await {
            Ok(file) => env.extend(file),
            Err(e) => return Err(HostError::SessionFatal(e.to_string())),
        }
        Ok(env)
    }

    /// `Spawn`, for this connection's login: what to answer, the process, the
    /// descriptors to attach and, for a terminal session, its utmp/wtmp record.
    pub(super) async fn spawn(&mut self, ask: SpawnAsk) -> Result<Started, HostError> {
        let Some(login) = self.login.clone() else {
            return Err(HostError::NotPermitted(
                "no login on this connection".into(),
            ));
        };
        let user_env = Self::user_env(&login).await?;
        let s = &login.settings;
        let peer = crate::log::peer(&self.peer);
        let Some(plan) = plan(
            s,
            &login.key_options,
            &login.user.name,
            &peer,
            ask.requested.as_deref(),
            ask.is_subsystem,
            false,
        ) else {
            return Err(HostError::NotPermitted("session request refused".into()));
        };
        // AcceptEnv again, with the host's settings.
        let client = ask
            .client_env
            .into_iter()
            .filter(|(name, _)| {
                s.accept_env
                    .iter()
                    .any(|p| crate::pattern::match_pattern(name, p))
            })
            .collect();
        // Each origin separately: `ExecPlan` merges them in sshd's order, so the
        // client's variables can never replace the server's (PATH, SSH_*).
        let env = SessionEnv {
            client,
            auth_sock: ask.auth_sock,
            user: user_env,
            admin: s.set_env.clone(),
            connection: self.connection_env(),
            original_command: plan.forced.as_ref().and(ask.requested.clone()),
        };
        let req = SpawnRequest {
            user: login.user.clone(),
            command: plan.command.clone(),
            pty: if s.permit_tty && !login.key_options.no_pty {
                ask.pty
            } else {
                None
            },
            env,
            user_rc: s.permit_user_rc
                && !login.key_options.no_user_rc
                && !ask.is_subsystem
                && s.force_command.is_none(),
            pam: s.use_pam.then(|| PamSession {
                service: s.pam_service_name.clone(),
                rhost: self.remote_host(),
            }),
            chroot: s
                .chroot_directory
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            internal_sftp: plan.internal_sftp.clone(),
        };
        let (pam, pam_messages) = match &req.pam {
            Some(p) => self.pam_login(&login, p).await?,
            None => (None, Vec::new()),
        };
        let (process, fds) = super::spawn(req, pam.as_deref()).await?;
        let motd = self
            .login_messages(&login, process.tty_name(), plan.is_shell, pam_messages)
            .await;
        let record = process.tty_name().map(|tty| LoginRecord {
            tty: tty.to_path_buf(),
            user: login.user.name.clone(),
            host: self.remote_host(),
            addr: self.peer.ip(),
            pid: process.pid() as i32,
        });
        let spawned = Spawned {
            process: 0,
            pid: process.pid() as i32,
            tty: process.tty_name().map(|t| t.to_string_lossy().into_owned()),
            forced: plan.forced.is_some(),
            is_shell: plan.is_shell,
            motd,
            io: if process.tty_name().is_some() {
                SpawnedIo::Pty
            } else {
                SpawnedIo::Pipes
            },
        };
        Ok((spawned, process, fds, record))
    }

    /// The connection's PAM session for `login`, opened by its first session; and
    /// what PAM's session modules showed, for that first session only (as sshd
    /// clears its `loginmsg` after starting a session). `None` if it could not be
    /// opened: sessions then end at once with status 254, as sshd's.
    async fn pam_login(
        &mut self,
        login: &HostLogin,
        pam: &PamSession,
    ) -> Result<(Option<Arc<super::pam::PamLogin>>, Vec<String>), HostError> {
        match &self.pam {
            PamState::Open(l) => return Ok((Some(Arc::clone(l)), Vec::new())),
            PamState::Failed => return Ok((None, Vec::new())),
            PamState::NotOpened => {}
        }
        let opened =
            super::pam::PamLogin::open(pam, &login.user.name, login.settings.session_cleanup)
                .await?;
        let (current, messages) = match opened {
            super::pam::Opened::Open(l, m) => {
                let l = Arc::new(l);
                self.pam = PamState::Open(Arc::clone(&l));
                (Some(l), m)
            }
            super::pam::Opened::Failed(m) => {
                self.pam = PamState::Failed;
                (None, m)
            }
        };
        Ok((current, messages))
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
        login: &HostLogin,
        tty: Option<&Path>,
        is_shell: bool,
        pam_messages: Vec<String>,
    ) -> Option<Vec<u8>> {
        let s = &login.settings;
        let uid = login.user.uid;
        let shown = is_shell && !super::hush_login(&login.user).await;
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
                && let Some(last) = super::last_login(uid)
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
            if let Err(e) = super::record_lastlog(uid, &line, &self.remote_host(), now) {
                tracing::debug!("lastlog: {e}");
            }
            if shown
                && s.print_motd
                && let Ok(m) = std::fs::read("/etc/motd")
            {
                text.extend_from_slice(&m);
            }
        }
        (!text.is_empty()).then(|| crlf_if(tty.is_some(), text))
    }
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
