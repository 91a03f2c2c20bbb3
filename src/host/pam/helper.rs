//! The per-login PAM session helper: rsshd re-executed as `rsshd __pam-session`.
//!
//! Session modules act on the calling process (pam_systemd registers it with
//! logind, pam_limits sets its limits, pam_loginuid writes its loginuid), so they
//! must not run inside the daemon. The helper opens the PAM session, starts the
//! user's program with PAM's environment, and closes the session however the
//! program ended (exit, signal, idle disconnect).
//!
//! The program leads a session of its own (with the terminal, if any, as its
//! controlling terminal); the helper is in none of the user's sessions or
//! process groups, so no signal of the user's, of a client's or of a hang-up
//! can end it before it has closed the PAM session. The helper is the program's
//! parent and the only one to reap it, so it also delivers the daemon's signals
//! and hang-ups to it (see `process`: signalling by number is safe until the
//! reap). Over the control socket, its descriptor 3:
//!
//! - daemon to helper, one byte per command: a signal number, sent to the
//!   program's process group while the program runs (a client's `signal`
//!   request), or [`HELPER_HANG_UP`]: hang up the program's session, then
//!   close the PAM session and exit. The socket's end means the same.
//! - helper to daemon, one line when the program ends: how it ended
//!   ([`report`]), after which the helper waits for the hang-up, so that
//!   background jobs are hung up when the daemon has their output, as without
//!   PAM.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use super::ffi;
use super::handle::{Conversation, Pam, Prompt};
use crate::host::HostError;
use crate::host::child::Child;
use crate::host::process::{self, HANGUP_GRACE, HELPER_HANG_UP};
use crate::host::spawn::{ExecPlan, ExitOutcome, PamSession};

/// The hidden first argument that selects the helper.
pub const HELPER_ARG: &str = "__pam-session";
/// The environment variable that carries the request (the helper's environment is
/// otherwise empty).
pub const HELPER_ENV: &str = "RSSHD_PAM_SESSION";

/// What the daemon asks of a helper.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HelperRequest {
    pub pam: PamSession,
    pub user: String,
    pub tty: Option<PathBuf>,
    pub plan: ExecPlan,
    /// Descriptor 3 is the control socket.
    #[serde(default)]
    pub control: bool,
}

impl HelperRequest {
    pub fn encode(&self) -> Result<String, HostError> {
        serde_json::to_string(self).map_err(|e| HostError::Io(std::io::Error::other(e)))
    }
}

/// Session modules may show text (pam_motd, pam_lastlog); it goes to the terminal
/// of interactive sessions only, never into an exec's output.
struct SessionConversation {
    show: bool,
}

impl Conversation for SessionConversation {
    fn converse(&mut self, prompts: &[Prompt]) -> Option<Vec<String>> {
        for p in prompts {
            match p {
                Prompt::Info(t) | Prompt::Error(t) => {
                    if self.show {
                        eprint!("{}\r\n", t.replace('\n', "\r\n"));
                    }
                }
                // Nobody can answer questions at this stage.
                Prompt::Secret(_) | Prompt::Visible(_) => return None,
            }
        }
        Some(Vec::new())
    }
}

/// Entry point; returns the exit code (or does not return, re-raising a signal).
pub fn helper_main() -> i32 {
    let Ok(text) = std::env::var(HELPER_ENV) else {
        eprintln!("rsshd: {HELPER_ARG} is internal to rsshd");
        return 2;
    };
    let req: HelperRequest = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rsshd: bad helper request: {e}");
            return 2;
        }
    };
    // Claimed before PAM's modules run, so none of them mistakes it for its own.
    let control = if req.control { control_socket() } else { None };
    let conv = Box::new(SessionConversation {
        show: req.tty.is_some(),
    });
    let mut pam = match Pam::start(&req.pam.service, &req.user, conv) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rsshd: PAM: {e}");
            return 254;
        }
    };
    let _ = pam.set_item(ffi::PAM_RHOST, &req.pam.rhost);
    let tty = req
        .tty
        .as_ref()
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ssh".into());
    let _ = pam.set_item(ffi::PAM_TTY, &tty);
    if let Err(e) = pam.open_session() {
        eprintln!("rsshd: PAM: {e}");
        return 254;
    }
    if let Err(e) = pam.setcred(ffi::PAM_ESTABLISH_CRED) {
        eprintln!("rsshd: PAM: {e}");
    }
    let env = pam.env();
    let plan = req.plan.with_env_under(env);
    // Nothing meant for the user's program or the daemon's terminal may end the
    // helper before it has closed the PAM session; the program gets default
    // dispositions back before exec.
    // SAFETY: setting dispositions to SIG_IGN is always sound.
    unsafe {
        for sig in [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTERM,
            libc::SIGPIPE,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    let status = plan
        .launch()
        .and_then(|l| {
            let l = l.stdio([0, 1, 2]);
            if req.tty.is_some() {
                l.controlling_tty().start()
            } else {
                l.new_session().start()
            }
        })
        .and_then(|child| {
            // The program has its own copies of the terminal or pipes; the
            // helper lets go of them, so their end is the program's alone.
            release_stdio();
            supervise(child, control)
        });
    let _ = pam.close_session();
    let _ = pam.setcred(ffi::PAM_DELETE_CRED);
    drop(pam);
    match status {
        Ok(ExitOutcome::Code(c)) => c,
        Ok(ExitOutcome::Signal { name, .. }) => {
            let sig = format!("SIG{name}")
                .parse::<nix::sys::signal::Signal>()
                .map(|s| s as i32)
                .unwrap_or(libc::SIGTERM);
            // Die of the same signal so the daemon reports exit-signal.
            // SAFETY: restoring the default and raising a signal on ourselves.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
            }
            128 + sig
        }
        Err(e) => {
            eprintln!("rsshd: cannot start {}: {e}", plan.program.display());
            254
        }
    }
}

/// Descriptor 3, if it is the control socket the daemon passed.
fn control_socket() -> Option<UnixStream> {
    // SAFETY: fstat fills a plain struct for a descriptor number (or fails).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(3, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    // SAFETY: descriptor 3 was passed to us for this and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(3) };
    let _ = nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(UnixStream::from(fd))
}

/// Point 0, 1 and 2 at /dev/null.
fn release_stdio() {
    if let Ok(null) = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        for target in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this process, which
            // Rust's std only uses through these numbers.
            unsafe { libc::dup2(null.as_raw_fd(), target) };
        }
    }
}

/// The line the helper sends when the program ends.
pub(crate) fn report(outcome: &ExitOutcome) -> String {
    match outcome {
        ExitOutcome::Code(c) => format!("exit {c}\n"),
        ExitOutcome::Signal { name, core_dumped } => {
            format!("signal {name} {}\n", u8::from(*core_dumped))
        }
    }
}

/// The daemon's reading of [`report`]'s line.
pub(crate) fn parse_report(line: &str) -> Option<ExitOutcome> {
    let mut words = line.lines().next()?.split(' ');
    match (words.next()?, words.next()?, words.next()) {
        ("exit", code, None) => code.parse().ok().map(ExitOutcome::Code),
        ("signal", name, Some(core)) if !name.is_empty() && name.len() <= 16 => {
            Some(ExitOutcome::Signal {
                name: name.to_string(),
                core_dumped: core == "1",
            })
        }
        _ => None,
    }
}

/// Run the control protocol (module comment) until the session is over; the
/// program is reaped last, after the final hang-up of its session.
fn supervise(mut child: Child, mut control: Option<UnixStream>) -> Result<ExitOutcome, HostError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let leader = child.pid() as i32;
    let pidfd = process::pidfd_open(leader).ok();
    let mut reported = false;
    let mut ending = false;
    loop {
        if !reported && let Some(outcome) = child.try_exited()? {
            if let Some(c) = control.as_mut() {
                let _ = c.write_all(report(&outcome).as_bytes());
            }
            reported = true;
        }
        if reported && (ending || control.is_none()) {
            break;
        }
        let mut fds = Vec::with_capacity(2);
        let watch_child = !reported && pidfd.is_some();
        if let (true, Some(p)) = (watch_child, &pidfd) {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        if let Some(c) = &control {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
        }
        // Without pidfds (kernels before 5.3), look at the child ten times a second.
        let timeout = if !reported && pidfd.is_none() {
            PollTimeout::from(100u8)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => {
                return Err(HostError::Os {
                    what: "poll".into(),
                    source: e,
                });
            }
        }
        let control_ready = control.is_some()
            && fds
                .last()
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty());
        drop(fds);
        if !control_ready {
            continue;
        }
        let mut commands = [0u8; 64];
        let n = match control.as_mut().map(|c| c.read(&mut commands)) {
            Some(Ok(n)) => n,
            Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => 0,
        };
        if n == 0 {
            // The daemon is gone: the session ends with it.
            control = None;
            if !ending {
                process::hang_up_blocking(leader, HANGUP_GRACE);
                ending = true;
            }
            continue;
        }
        for &command in &commands[..n] {
            if command == HELPER_HANG_UP {
                if !ending {
                    process::hang_up_blocking(leader, HANGUP_GRACE);
                    ending = true;
                }
            } else if child.try_exited()?.is_none()
                && let Ok(sig) = nix::sys::signal::Signal::try_from(i32::from(command))
            {
                // Unreaped, so the number is still the program's group.
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(leader), sig);
            }
        }
    }
    // The program is gone but not reaped: its session id still names only its
    // processes. Hang up what is left there (background jobs), then reap.
    process::hang_up_blocking(leader, HANGUP_GRACE);
    child.reap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_back() {
        for o in [
            ExitOutcome::Code(0),
            ExitOutcome::Code(255),
            ExitOutcome::Signal {
                name: "KILL".into(),
                core_dumped: false,
            },
            ExitOutcome::Signal {
                name: "SEGV".into(),
                core_dumped: true,
            },
        ] {
            assert_eq!(parse_report(&report(&o)), Some(o));
        }
        assert_eq!(parse_report(""), None);
        assert_eq!(parse_report("exit x\n"), None);
        assert_eq!(parse_report("signal\n"), None);
    }
}
