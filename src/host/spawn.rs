//! Starting a user's shell or command the way sshd's `do_child` does: its own
//! session, the PTY as controlling terminal, the user's groups, gid and uid, home
//! and login environment, nothing inherited from the daemon.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest};

use super::child::Child;
use super::launch::{Identity, Launch};
use super::process::ProcessKiller;
use super::pty::{self, Master, PtyParams, PtyResizer};
use super::{HostError, UserInfo, user_rc};

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

/// The process's I/O, taken once by whoever pumps it.
pub struct ProcessIo {
    pub input: Box<dyn AsyncWrite + Send + Unpin>,
    pub output: Box<dyn AsyncRead + Send + Unpin>,
    /// `None` with a PTY, where stderr goes to the terminal.
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
}

/// How a session's process ended, as the SSH exit-status/exit-signal requests say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitOutcome {
    Code(i32),
    Signal { name: String, core_dumped: bool },
}

/// A running session process.
pub struct SessionProcess {
    /// Until [`SessionProcess::finish`] reaps it.
    child: Option<Child>,
    pid: u32,
    killer: ProcessKiller,
    /// With a PAM helper: where it reports how the user's program ended.
    helper: Option<AsyncFd<UnixStream>>,
    tty: Option<PathBuf>,
    io: Option<ProcessIo>,
    master: Option<Master>,
}

impl SessionProcess {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn tty_name(&self) -> Option<&Path> {
        self.tty.as_deref()
    }

    /// Take the I/O handles; a second call returns inert ones.
    pub fn take_io(&mut self) -> ProcessIo {
        self.io.take().unwrap_or_else(|| ProcessIo {
            input: Box::new(tokio::io::sink()),
            output: Box::new(tokio::io::empty()),
            stderr: None,
        })
    }

    pub fn resizer(&self) -> Option<PtyResizer> {
        self.master.clone().map(PtyResizer::new)
    }

    pub fn killer(&self) -> ProcessKiller {
        self.killer.clone()
    }

    /// Wait for the user's program to end. Its session leader stays unreaped
    /// until [`SessionProcess::finish`], so the hang-ups and signals sent until
    /// then by the leader's number cannot reach anyone else.
    pub async fn wait(&mut self) -> Result<ExitOutcome, HostError> {
        let Some(child) = self.child.as_mut() else {
            return Err(HostError::NotPermitted("session already finished".into()));
        };
        let reported = match &self.helper {
            Some(h) => read_report(h).await,
            None => None,
        };
        let outcome = match reported {
            Some(o) => Ok(o),
            None => child.exited().await,
        };
        self.killer.exited();
        outcome
    }

    /// End the session once the program has ended: hang up what is left of it
    /// (background jobs), then reap the leader.
    pub async fn finish(mut self) {
        if let Some(child) = self.child.take() {
            let ending = Ending {
                child,
                killer: self.killer.clone(),
                helper: self.helper.is_some(),
            };
            ending.run().await;
        }
    }
}

impl Drop for SessionProcess {
    /// A session nobody finished still ends the same way, off this thread.
    fn drop(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        let ending = Ending {
            child,
            killer: self.killer.clone(),
            helper: self.helper.is_some(),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(ending.run());
            }
            // No runtime: nothing can be signalling; the child reaps itself.
            Err(_) => ending.killer.begin_reap_now(),
        }
    }
}

/// The end of a session: its leader's last hang-up and reap, in that order.
struct Ending {
    child: Child,
    killer: ProcessKiller,
    helper: bool,
}

impl Ending {
    async fn run(mut self) {
        if self.helper {
            // The helper hangs up its program's session, closes the PAM session
            // and exits; it is not signalled.
            self.killer.end_helper();
            let _ = self.child.exited().await;
            self.killer.exited();
        } else {
            let _ = self.child.exited().await;
            self.killer.exited();
            self.killer.hang_up(super::process::HANGUP_GRACE).await;
        }
        self.killer.begin_reap().await;
        let _ = self.child.reap();
    }
}

/// The PAM helper's report of how the program ended (see `pam::helper`);
/// `None` if it closed the socket without one.
async fn read_report(socket: &AsyncFd<UnixStream>) -> Option<ExitOutcome> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64];
    while !buf.contains(&b'\n') && buf.len() < 256 {
        let mut ready = socket.readable().await.ok()?;
        match ready.try_io(|s| s.get_ref().read(&mut chunk)) {
            Ok(Ok(0)) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(_)) => return None,
            Err(_would_block) => {}
        }
    }
    super::pam::parse_report(&String::from_utf8_lossy(&buf))
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
}

impl ExecPlan {
    /// The plan for `req`; `tty` is the PTY's device when there is one.
    pub fn for_request(req: &SpawnRequest, tty: Option<&Path>) -> ExecPlan {
        let root = nix::unistd::geteuid().is_root();
        let me = nix::unistd::geteuid().as_raw();
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
        let home_ok = user.home.is_dir();
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

/// Start the process described by `req`.
pub fn spawn(req: SpawnRequest) -> Result<SessionProcess, HostError> {
    let root = nix::unistd::geteuid().is_root();
    let me = nix::unistd::geteuid().as_raw();
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
    let plan = ExecPlan::for_request(&req, pty.as_ref().map(|p| p.name.as_path()));
    // With PAM: the control socket's two ends (ours, the helper's).
    let mut control = None;
    let launch = match &req.pam {
        None => plan.launch()?,
        Some(pam) => {
            // The PAM session lives in a helper (rsshd itself) that stays root,
            // opens the session, runs the plan as the user in a session of its
            // own, signals it on our request, and closes the PAM session after
            // it. The helper is in no session of the user's, so neither the
            // user nor a hang-up can signal it.
            let (ours, theirs) = UnixStream::pair()?;
            let helper = super::pam::HelperRequest {
                pam: pam.clone(),
                user: user.name.clone(),
                tty: pty.as_ref().map(|p| p.name.clone()),
                plan,
                control: true,
            };
            let l = Launch::new(
                Path::new("/proc/self/exe"),
                &["rsshd".to_string(), super::pam::HELPER_ARG.to_string()],
                &[(super::pam::HELPER_ENV.to_string(), helper.encode()?)],
            )?
            .pass(theirs.as_raw_fd())
            .new_group();
            control = Some((ours, theirs));
            l
        }
    };
    let direct = control.is_none();
    // The helper starts the program as a session leader itself.
    let start = |l: Launch, tty: bool| match (direct, tty) {
        (true, true) => l.controlling_tty().start(),
        (true, false) => l.new_session().start(),
        (false, _) => l.start(),
    };
    let control_of = |pid: i32| -> Result<(ProcessKiller, Option<AsyncFd<UnixStream>>), HostError> {
        Ok(match control {
            None => (ProcessKiller::session(pid), None),
            Some((ours, theirs)) => {
                drop(theirs);
                ours.set_nonblocking(true)?;
                // SAFETY: the AsyncFd owns this duplicate outright and
                // deregisters it before closing it.
                let reader = unsafe {
                    AsyncFd::register_with_interest(ours.try_clone()?, Interest::READABLE)
                }
                .map_err(|e| HostError::Io(std::io::Error::other(e.to_string())))?;
                (ProcessKiller::helper(pid, ours), Some(reader))
            }
        })
    };
    match pty {
        Some(p) => {
            let fd = p.slave.as_raw_fd();
            let child = start(launch.stdio([fd; 3]), true)?;
            // The child has its own copies; ours must go so EOF/EIO can happen.
            drop(p.slave);
            let m = Master::new(p.master)?;
            let io = ProcessIo {
                input: Box::new(m.clone()),
                output: Box::new(m.clone()),
                stderr: None,
            };
            let (killer, helper) = control_of(child.pid() as i32)?;
            Ok(SessionProcess {
                pid: child.pid(),
                child: Some(child),
                killer,
                helper,
                tty: Some(p.name),
                io: Some(io),
                master: Some(m),
            })
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
            let stdio = [in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
            let child = start(launch.stdio(stdio), false)?;
            drop((in_r, out_w, err_w));
            use tokio::net::unix::pipe;
            let io = ProcessIo {
                input: Box::new(pipe::Sender::from_owned_fd(in_w)?),
                output: Box::new(pipe::Receiver::from_owned_fd(out_r)?),
                stderr: Some(Box::new(pipe::Receiver::from_owned_fd(err_r)?)),
            };
            let (killer, helper) = control_of(child.pid() as i32)?;
            Ok(SessionProcess {
                pid: child.pid(),
                child: Some(child),
                killer,
                helper,
                tty: None,
                io: Some(io),
                master: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn get<'a>(env: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        env.iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn request(pam: bool) -> SpawnRequest {
        SpawnRequest {
            user: super::super::UserInfo {
                name: "alice".into(),
                uid: 1000,
                gid: 1000,
                home: "/home/alice".into(),
                shell: "/bin/bash".into(),
                group_names: vec![],
                gids: vec![],
            },
            command: Some("true".into()),
            user_rc: false,
            pty: Some(PtyParams {
                term: "xterm".into(),
                cols: 80,
                rows: 24,
                pix_width: 0,
                pix_height: 0,
                modes: vec![],
            }),
            env: SessionEnv {
                client: kv(&[
                    ("PATH", "/evil"),
                    ("SSH_ORIGINAL_COMMAND", "evil"),
                    ("SSH_TTY", "/dev/evil"),
                    ("USER", "root"),
                    ("LANG", "C.UTF-8"),
                    ("TERM", "evil"),
                ]),
                auth_sock: Some("/tmp/agent".into()),
                user: kv(&[("FROM_KEY", "1"), ("SSH_CONNECTION", "user")]),
                admin: kv(&[("SET", "admin"), ("FROM_KEY", "admin")]),
                connection: kv(&[("SSH_CONNECTION", "1.2.3.4 5 6.7.8.9 22")]),
                original_command: Some("ls".into()),
            },
            pam: pam.then(|| PamSession {
                service: "sshd".into(),
                rhost: "h".into(),
            }),
        }
    }

    #[test]
    fn the_client_never_overrides_the_servers_variables() {
        let plan = ExecPlan::for_request(&request(false), Some(Path::new("/dev/pts/7")));
        let env = plan.final_env();
        for (name, want) in [
            ("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/games"),
            ("SSH_ORIGINAL_COMMAND", "ls"),
            ("SSH_TTY", "/dev/pts/7"),
            ("USER", "alice"),
            ("TERM", "xterm"),
            ("LANG", "C.UTF-8"),
            ("MAIL", "/var/mail/alice"),
            ("SSH_AUTH_SOCK", "/tmp/agent"),
            ("SET", "admin"),
            // SetEnv is later than the key's environment=, as in sshd.
            ("FROM_KEY", "admin"),
            ("SSH_CONNECTION", "1.2.3.4 5 6.7.8.9 22"),
        ] {
            assert_eq!(get(&env, name), vec![want], "{name} in {env:?}");
        }
        // The client's variables come first, as sshd lists them.
        assert_eq!(env[0].0, "PATH");
    }

    #[test]
    fn pam_goes_between_the_users_variables_and_setenv() {
        let plan = ExecPlan::for_request(&request(true), None).with_env_under(kv(&[
            ("FROM_KEY", "pam"),
            ("LANG", "pam"),
            ("SET", "pam"),
            ("SSH_CONNECTION", "pam"),
            ("SSH_AUTH_INFO_0", "pam"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ]));
        let env = plan.final_env();
        assert_eq!(get(&env, "LANG"), vec!["pam"]);
        assert_eq!(get(&env, "XDG_RUNTIME_DIR"), vec!["/run/user/1000"]);
        assert_eq!(get(&env, "SET"), vec!["admin"]);
        assert_eq!(get(&env, "SSH_CONNECTION"), vec!["1.2.3.4 5 6.7.8.9 22"]);
        assert!(get(&env, "SSH_AUTH_INFO_0").is_empty());
        // No terminal: the server sets no TERM and no SSH_TTY, so what the
        // client sent (and AcceptEnv admitted) stays, as with sshd.
        assert_eq!(get(&env, "SSH_TTY"), vec!["/dev/evil"]);
        assert_eq!(get(&env, "TERM"), vec!["evil"]);
        // With PAM, MAIL is pam_mail's business.
        assert!(get(&env, "MAIL").is_empty());
    }
}
