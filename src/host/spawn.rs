//! Starting a user's shell or command the way sshd's `do_child` does: its own
//! session, the PTY as controlling terminal, the user's groups, gid and uid, home
//! and login environment, nothing inherited from the daemon.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};

use super::launch::{Child, Identity, Launch};
use super::process::ProcessKiller;
use super::pty::{self, Master, PtyParams, PtyResizer};
use super::{HostError, UserInfo};

/// What to start, for whom, on what terminal.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    pub user: UserInfo,
    /// `None` starts the login shell.
    pub command: Option<String>,
    pub pty: Option<PtyParams>,
    /// Extra variables (SSH_CONNECTION, accepted client variables, SetEnv, ...);
    /// later entries win.
    pub env: Vec<(String, String)>,
    /// Run the session inside a PAM session (`UsePAM yes`).
    pub pam: Option<PamSession>,
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
    child: Child,
    pid: u32,
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
        ProcessKiller::new(self.pid as i32)
    }

    /// Wait for the process to end (reaping it).
    pub async fn wait(&mut self) -> Result<ExitOutcome, HostError> {
        self.child.wait().await
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
    pub env: Vec<(String, String)>,
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
        let mut env = vec![
            ("USER".to_string(), user.name.clone()),
            ("LOGNAME".to_string(), user.name.clone()),
            ("HOME".to_string(), user.home.to_string_lossy().into_owned()),
            ("SHELL".to_string(), shell.to_string_lossy().into_owned()),
            ("PATH".to_string(), default_path(user.uid).to_string()),
            ("MAIL".to_string(), format!("/var/mail/{}", user.name)),
        ];
        if let (Some(t), Some(params)) = (tty, &req.pty) {
            env.push(("TERM".to_string(), params.term.clone()));
            env.push(("SSH_TTY".to_string(), t.to_string_lossy().into_owned()));
        }
        env.extend(req.env.iter().cloned());
        ExecPlan {
            program: shell,
            argv0,
            args,
            env,
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

    /// Put `extra` variables (PAM's) under the plan's own: later entries win, and
    /// the SSH_* and login variables rsshd sets must not be overridden by modules.
    pub fn with_env_under(mut self, extra: Vec<(String, String)>) -> ExecPlan {
        let mut env = extra;
        env.append(&mut self.env);
        self.env = env;
        self
    }

    /// How to start the plan (see `launch`): no copy of the daemon, and the same
    /// identity switch for the daemon's children and the PAM helper's.
    pub fn launch(&self) -> Result<Launch, HostError> {
        let mut argv = vec![self.argv0.clone()];
        argv.extend(self.args.iter().cloned());
        let mut l = Launch::new(&self.program, &argv, &self.env)?
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
    let launch = match &req.pam {
        None => plan.launch()?,
        Some(pam) => {
            // The PAM session lives in a helper (rsshd itself) that stays root,
            // opens the session, runs the plan as the user, and closes the session
            // when it ends.
            let helper = super::pam::HelperRequest {
                pam: pam.clone(),
                user: user.name.clone(),
                tty: pty.as_ref().map(|p| p.name.clone()),
                plan,
            };
            Launch::new(
                Path::new("/proc/self/exe"),
                &["rsshd".to_string(), super::pam::HELPER_ARG.to_string()],
                &[(super::pam::HELPER_ENV.to_string(), helper.encode()?)],
            )?
        }
    };
    match pty {
        Some(p) => {
            let fd = p.slave.as_raw_fd();
            let child = launch.stdio([fd; 3]).controlling_tty().start()?;
            // The child has its own copies; ours must go so EOF/EIO can happen.
            drop(p.slave);
            let m = Master::new(p.master)?;
            let io = ProcessIo {
                input: Box::new(m.clone()),
                output: Box::new(m.clone()),
                stderr: None,
            };
            Ok(SessionProcess {
                pid: child.pid(),
                child,
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
            let child = launch
                .stdio([in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()])
                .new_session()
                .start()?;
            drop((in_r, out_w, err_w));
            use tokio::net::unix::pipe;
            let io = ProcessIo {
                input: Box::new(pipe::Sender::from_owned_fd(in_w)?),
                output: Box::new(pipe::Receiver::from_owned_fd(out_r)?),
                stderr: Some(Box::new(pipe::Receiver::from_owned_fd(err_r)?)),
            };
            Ok(SessionProcess {
                pid: child.pid(),
                child,
                tty: None,
                io: Some(io),
                master: None,
            })
        }
    }
}
