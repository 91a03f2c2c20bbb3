//! Starting a user's shell or command the way sshd's `do_child` does: its own
//! session, the PTY as controlling terminal, the user's groups, gid and uid, home
//! and login environment, nothing inherited from the daemon.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::child::Child;
use super::launch::{Identity, Launch};
use super::pam::PamLogin;
use super::process::ProcessKiller;
use super::pty::{self, PtyParams};
use super::sftp::InternalSftp;
use super::{HostError, UserInfo, chroot, user_rc};

/// What to start, for whom, on what terminal.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    pub user: UserInfo,
    /// `None` starts the login shell.
    pub command: Option<String>,
    pub pty: Option<PtyParams>,
    /// Variables from outside the account database, by origin.
    pub env: SessionEnv,
    /// Run the session inside a PAM session (`UsePAM yes`).
    pub pam: Option<PamSession>,
    /// `ChrootDirectory` as configured (tokens not expanded); `None` for none.
    pub chroot: Option<String>,
    /// `internal-sftp` instead of a program (see `sftp`).
    pub internal_sftp: Option<InternalSftp>,
    /// Whether `~/.ssh/rc` may run first (`PermitUserRC`, no `no-user-rc` key
    /// option, no subsystem, no `ForceCommand`); `/etc/ssh/sshrc` runs otherwise.
    pub user_rc: bool,
}

/// The variables a session gets besides the login ones, by origin. [`ExecPlan`]
/// merges them in sshd's `do_setup_env` order, each later step replacing an
/// earlier value of the same name: the client's (`AcceptEnv`) first, so that
/// nothing the server sets can be overridden by the client; then USER, LOGNAME,
/// HOME, PATH, MAIL (without PAM), SHELL, TZ, TERM, SSH_AUTH_SOCK; then the user's
/// own (key `environment=`, `~/.ssh/environment`) under PermitUserEnvironment;
/// then PAM's; then SetEnv; then SSH_CLIENT, SSH_CONNECTION, SSH_TTY and
/// SSH_ORIGINAL_COMMAND.
#[derive(Debug, Clone, Default)]
pub struct SessionEnv {
    /// Accepted `env` requests, in the order they came.
    pub client: Vec<(String, String)>,
    /// The forwarded agent's socket.
    pub auth_sock: Option<String>,
    /// Key `environment=` options, then `~/.ssh/environment`, already filtered by
    /// PermitUserEnvironment.
    pub user: Vec<(String, String)>,
    /// `SetEnv`.
    pub admin: Vec<(String, String)>,
    /// SSH_CLIENT and SSH_CONNECTION.
    pub connection: Vec<(String, String)>,
    /// The command the client asked for when a forced command replaced it.
    pub original_command: Option<String>,
}

/// Set `name` as sshd's `child_set_env` does: an existing entry is replaced where
/// it stands, a new one goes at the end. execve passes duplicates through and
/// programs disagree on which one counts (getenv takes the first, shells the
/// last), so the list must never hold two.
fn set_var(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value.to_string(),
        None => env.push((name.to_string(), value.to_string())),
    }
}

fn set_all(env: &mut Vec<(String, String)>, vars: &[(String, String)]) {
    for (k, v) in vars {
        set_var(env, k, v);
    }
}

/// What PAM modules may not set (sshd's `PAM_ENV_DENYLIST`).
fn pam_may_set(name: &str) -> bool {
    !name.starts_with("SSH_AUTH_INFO") && !name.starts_with("SSH_CONNECTION")
}

/// How a session's process ended, as the SSH exit-status/exit-signal requests say it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitOutcome {
    Code(i32),
    Signal { name: String, core_dumped: bool },
}

/// Who started the program, so who sees its end and reaps it.
enum Leader {
    /// Our child, until [`SessionProcess::finish`] reaps it.
    Direct(Option<Child>),
    /// The connection's PAM helper's child: its end comes as the helper's report.
    Helper {
        exited: tokio::sync::oneshot::Receiver<ExitOutcome>,
        outcome: Option<ExitOutcome>,
        finished: bool,
    },
    /// Nothing runs: the PAM session could not be opened, and sshd's session then
    /// exits with 254 at once.
    NotRun,
}

/// A running session process, as the host keeps it (its I/O descriptors went
/// to the caller of [`spawn`]).
pub(crate) struct SessionProcess {
    leader: Leader,
    pid: u32,
    killer: ProcessKiller,
    tty: Option<PathBuf>,
}

impl SessionProcess {
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn tty_name(&self) -> Option<&Path> {
        self.tty.as_deref()
    }

    pub(crate) fn killer(&self) -> ProcessKiller {
        self.killer.clone()
    }

    /// Wait for the user's program to end (again and again: the outcome is
    /// kept, and a wait given up midway can be taken up again). Its session
    /// leader stays unreaped until [`SessionProcess::finish`], so the hang-ups
    /// and signals sent until then by the leader's number cannot reach anyone
    /// else.
    pub(crate) async fn wait(&mut self) -> Result<ExitOutcome, HostError> {
        let outcome = match &mut self.leader {
            Leader::Direct(Some(child)) => child.exited().await,
            Leader::Direct(None) => Err(HostError::NotPermitted("session already finished".into())),
            Leader::Helper {
                exited, outcome, ..
            } => {
                if outcome.is_none() {
                    // A helper that went away without a word took its program's
                    // fate with it.
                    *outcome = Some(exited.await.unwrap_or(ExitOutcome::Code(255)));
                }
                Ok(outcome.clone().unwrap_or(ExitOutcome::Code(255)))
            }
            Leader::NotRun => Ok(ExitOutcome::Code(254)),
        };
        self.killer.exited();
        outcome
    }

    /// The program has ended and its session's end is dealt with: reap the
    /// leader once the hang-ups in progress are done (a PAM helper's program is
    /// released to the helper, which reaps it).
    pub(crate) async fn finish(mut self) {
        self.killer.begin_reap().await;
        match &mut self.leader {
            Leader::Direct(child) => {
                if let Some(mut child) = child.take() {
                    let _ = child.reap();
                }
            }
            Leader::Helper { finished, .. } => *finished = true,
            Leader::NotRun => {}
        }
    }
}

impl Drop for SessionProcess {
    /// A session nobody finished (its task went away) is hung up as under
    /// `SessionCleanup kill`, then reaped, off this thread.
    fn drop(&mut self) {
        let killer = self.killer.clone();
        match &mut self.leader {
            Leader::Direct(child) => {
                let Some(mut child) = child.take() else {
                    return;
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn(async move {
                            let _ = child.exited().await;
                            killer.exited();
                            killer.hang_up(super::process::HANGUP_GRACE).await;
                            killer.begin_reap().await;
                            let _ = child.reap();
                        });
                    }
                    // No runtime: nothing can be signalling; the child reaps itself.
                    Err(_) => killer.begin_reap_now(),
                }
            }
            Leader::Helper { finished, .. } => {
                if !*finished {
                    // Counted by the helper before the release that follows.
                    drop(killer.hang_up(super::process::HANGUP_GRACE));
                    killer.begin_reap_now();
                }
            }
            Leader::NotRun => {}
        }
    }
}

/// The `tty` group's gid, which owns users' terminals so `write`/`wall` work.
fn tty_gid(fallback: u32) -> u32 {
    nix::unistd::Group::from_name("tty")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
        .unwrap_or(fallback)
}

/// PATH as Debian's sshd sets it.
fn default_path(uid: u32) -> &'static str {
    if uid == 0 {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    } else {
        "/usr/local/bin:/usr/bin:/bin:/usr/games"
    }
}

/// The RLIMIT_NOFILE sessions start with: the daemon raises its own, and users'
/// programs should not inherit that.
static SESSION_NOFILE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// Record the file-descriptor limit (soft, hard) to give sessions.
pub fn set_session_nofile(soft: u64, hard: u64) {
    let _ = SESSION_NOFILE.set((soft, hard));
}

/// Everything needed to exec the user's program, decided up front so that the
/// direct path and the PAM session helper run the very same thing.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExecPlan {
    pub program: PathBuf,
    pub argv0: String,
    pub args: Vec<String>,
    /// Variables up to where PAM's go (see [`SessionEnv`]).
    pub env: Vec<(String, String)>,
    /// Variables that override PAM's: SetEnv and the connection's own.
    pub env_over_pam: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
    /// Whether to switch identity (rsshd is root and the user is someone else).
    pub switch: bool,
    /// The jail to enter (`ChrootDirectory`, expanded), checked by whoever
    /// launches the plan; `cwd` is then inside it.
    #[serde(default)]
    pub chroot: Option<PathBuf>,
}

impl ExecPlan {
    /// The plan for `req`; `tty` is the PTY's device when there is one.
    pub fn for_request(req: &SpawnRequest, tty: Option<&Path>) -> ExecPlan {
        let privilege = super::Privilege::current();
        let (root, me) = (privilege.is_root(), privilege.uid());
        let user = &req.user;
        let shell = if user.shell.as_os_str().is_empty() {
            PathBuf::from("/bin/sh")
        } else {
            user.shell.clone()
        };
        let base = shell
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sh".into());
        let (argv0, args) = match &req.command {
            Some(c) => (base, vec!["-c".to_string(), c.clone()]),
            None => (format!("-{base}"), Vec::new()),
        };
        // In a jail the home directory is looked up inside it, at launch.
        let home_ok = req.chroot.is_some() || user.home.is_dir();
        if !home_ok {
            tracing::info!(
                "Could not chdir to home directory {}: no such directory",
                user.home.display()
            );
        }
        let e = &req.env;
        let shell_text = shell.to_string_lossy().into_owned();
        let mut env = Vec::new();
        set_all(&mut env, &e.client);
        set_var(&mut env, "USER", &user.name);
        set_var(&mut env, "LOGNAME", &user.name);
        set_var(&mut env, "HOME", &user.home.to_string_lossy());
        set_var(&mut env, "PATH", default_path(user.uid));
        if req.pam.is_none() {
            // With PAM, pam_mail decides (Debian's sshd stack: noenv).
            set_var(&mut env, "MAIL", &format!("/var/mail/{}", user.name));
        }
        set_var(&mut env, "SHELL", &shell_text);
        if let Ok(tz) = std::env::var("TZ") {
            set_var(&mut env, "TZ", &tz);
        }
        if let (Some(_), Some(params)) = (tty, &req.pty) {
            set_var(&mut env, "TERM", &params.term);
        }
        if let Some(sock) = &e.auth_sock {
            set_var(&mut env, "SSH_AUTH_SOCK", sock);
        }
        set_all(&mut env, &e.user);
        let mut over = Vec::new();
        set_all(&mut over, &e.admin);
        set_all(&mut over, &e.connection);
        if let (Some(t), Some(_)) = (tty, &req.pty) {
            set_var(&mut over, "SSH_TTY", &t.to_string_lossy());
        }
        if let Some(orig) = &e.original_command {
            set_var(&mut over, "SSH_ORIGINAL_COMMAND", orig);
        }
        // The rc files run in the session's process, as the user, before the
        // program (see `user_rc`); only when one may be there.
        let (program, argv0, args) = if user_rc::may_run(req.user_rc, &user.home) {
            let mut argv = user_rc::wrap(req.user_rc, &user.home, &shell, &shell, &argv0, &args);
            let own = argv.remove(0);
            (PathBuf::from("/proc/self/exe"), own, argv)
        } else {
            (shell, argv0, args)
        };
        ExecPlan {
            program,
            argv0,
            args,
            env,
            env_over_pam: over,
            cwd: if home_ok {
                user.home.clone()
            } else {
                PathBuf::from("/")
            },
            uid: user.uid,
            gid: user.gid,
            gids: user.gids.clone(),
            switch: root && user.uid != me,
            chroot: None,
        }
    }

    /// Add PAM's variables where sshd puts them: over the client's, the login
    /// ones and the user's own, under SetEnv and the connection's (SSH_*), and
    /// never SSH_AUTH_INFO* or SSH_CONNECTION*.
    pub fn with_env_under(mut self, pam: Vec<(String, String)>) -> ExecPlan {
        for (k, v) in pam.iter().filter(|(k, _)| pam_may_set(k)) {
            set_var(&mut self.env, k, v);
        }
        self
    }

    /// The environment the program gets.
    pub fn final_env(&self) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        set_all(&mut env, &self.env_over_pam);
        env
    }

    /// How to start the plan (see `launch`): no copy of the daemon, and the same
    /// identity switch for the daemon's children and the PAM helper's.
    pub fn launch(&self) -> Result<Launch, HostError> {
        let mut argv = vec![self.argv0.clone()];
        argv.extend(self.args.iter().cloned());
        let mut l = Launch::new(&self.program, &argv, &self.final_env())?
            .cwd(&self.cwd)?
            .nofile(SESSION_NOFILE.get().copied());
        if let Some(jail) = &self.chroot {
            chroot::check(jail)?;
            l = l.chroot(jail)?;
        }
        if self.switch {
            l = l.identity(Identity {
                uid: self.uid,
                gid: self.gid,
                gids: self.gids.clone(),
            });
        }
        Ok(l)
    }
}

/// With `UsePAM yes`: the PAM service and remote host for the session helper.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PamSession {
    pub service: String,
    pub rhost: String,
}

/// Bytes a session's stdin and stdout pipes hold (Linux default: 64 KiB).
const PIPE_SIZE: i32 = 256 * 1024;

/// Start the process described by `req`. With `UsePAM yes` (`req.pam`) it runs
/// in the connection's PAM session, `pam`; without one (`pam_open_session`
/// failed) nothing runs and the session ends with status 254, as sshd's.
/// Returns the process and the descriptors its I/O goes through, for whoever
/// pumps it: the terminal's master (the host keeps a copy, which the session's
/// end closes), or the write end of stdin and the read ends of stdout and
/// stderr, in that order. All non-blocking, close-on-exec.
pub(crate) async fn spawn(
    req: SpawnRequest,
    pam: Option<&PamLogin>,
) -> Result<(SessionProcess, Vec<OwnedFd>), HostError> {
    let privilege = super::Privilege::current();
    let (root, me) = (privilege.is_root(), privilege.uid());
    if !root && req.user.uid != me {
        return Err(HostError::NotPermitted(format!(
            "rsshd is not root and cannot start a process as {}",
            req.user.name
        )));
    }
    let user = &req.user;
    let pty = match &req.pty {
        Some(p) => Some(pty::open(p)?),
        None => None,
    };
    if let (Some(p), true) = (&pty, root) {
        let gid = tty_gid(user.gid);
        nix::unistd::chown(&p.name, Some(user.uid.into()), Some(gid.into())).map_err(|e| {
            HostError::Os {
                what: format!("chown {}", p.name.display()),
                source: e,
            }
        })?;
        nix::sys::stat::fchmod(&p.slave, nix::sys::stat::Mode::from_bits_truncate(0o620)).map_err(
            |e| HostError::Os {
                what: "fchmod tty".into(),
                source: e,
            },
        )?;
    }
    // The jail is checked here too, so that a bad one refuses the session with
    // sshd's words in the daemon's log (the launcher checks it again).
    let jail = match &req.chroot {
        Some(_) if !root => return Err(HostError::SessionFatal(chroot::NO_PRIVILEGE.into())),
        Some(pattern) => {
            let jail = chroot::resolve(pattern, user)?;
            chroot::check(&jail)?;
            Some(jail)
        }
        None => None,
    };
    let plan = match &req.internal_sftp {
        Some(what) => super::sftp::plan(&req, what, jail)?,
        None => ExecPlan {
            chroot: jail,
            ..ExecPlan::for_request(&req, pty.as_ref().map(|p| p.name.as_path()))
        },
    };
    let nonblocking = |fd: &OwnedFd| -> Result<(), HostError> {
        let os = |source| HostError::Os {
            what: "fcntl".into(),
            source,
        };
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).map_err(os)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(os)?;
        Ok(())
    };
    // The program's ends of its terminal or pipes, and ours.
    let (theirs, io, master, tty): (Vec<OwnedFd>, Vec<OwnedFd>, _, _) = match pty {
        Some(p) => {
            nonblocking(&p.master)?;
            // The host's copy: the terminal stays open until the session's end
            // closes it, whatever the caller does with its own.
            let kept = p.master.try_clone()?;
            (vec![p.slave], vec![p.master], Some(kept), Some(p.name))
        }
        None => {
            let pipe = || {
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| HostError::Os {
                    what: "pipe".into(),
                    source: e,
                })
            };
            let (in_r, in_w) = pipe()?;
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            // A pipe that holds more lets a fast writer run longer between
            // wake-ups; pages are only taken while data sits in it.
            let _ = nix::fcntl::fcntl(&in_w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
            let _ = nix::fcntl::fcntl(&out_r, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
            for fd in [&in_w, &out_r, &err_r] {
                nonblocking(fd)?;
            }
            (
                vec![in_r, out_w, err_w],
                vec![in_w, out_r, err_r],
                None,
                None,
            )
        }
    };
    let has_tty = tty.is_some();
    let (leader, pid, killer) = match (&req.pam, pam) {
        (None, _) => {
            let l = plan.launch()?;
            let child = if has_tty {
                l.stdio([theirs[0].as_raw_fd(); 3])
                    .controlling_tty()
                    .start()?
            } else {
                l.stdio([
                    theirs[0].as_raw_fd(),
                    theirs[1].as_raw_fd(),
                    theirs[2].as_raw_fd(),
                ])
                .new_session()
                .start()?
            };
            // The child has its own copies; ours must go so EOF/EIO can happen.
            drop(theirs);
            let pid = child.pid();
            (
                Leader::Direct(Some(child)),
                pid,
                ProcessKiller::session(pid as i32),
            )
        }
        (Some(_), Some(login)) => {
            // The helper starts the program as a session leader itself, and
            // lets go of the descriptors once it has.
            let link = login.link();
            let (id, pid, exited) = link.start(plan, has_tty, theirs).await?;
            (
                Leader::Helper {
                    exited,
                    outcome: None,
                    finished: false,
                },
                pid,
                ProcessKiller::helper(pid as i32, Arc::clone(link), id),
            )
        }
        (Some(_), None) => {
            drop(theirs);
            (Leader::NotRun, 0, ProcessKiller::session(0))
        }
    };
    if let Some(m) = master {
        killer.set_terminal(m);
    }
    Ok((
        SessionProcess {
            leader,
            pid,
            killer,
            tty,
        },
        io,
    ))
}

#[cfg(test)]
#[path = "spawn_tests.rs"]
mod tests;
