//! The per-login PAM session helper: rsshd re-executed as `rsshd __pam-session`.
//!
//! Session modules act on the calling process (pam_systemd registers it with
//! logind, pam_limits sets its limits, pam_loginuid writes its loginuid), so they
//! must not run inside the daemon. The helper opens the PAM session, starts the
//! user's program with PAM's environment, waits for it, and closes the session
//! however the program ended (exit, signal, idle disconnect).

use std::path::PathBuf;

use super::ffi;
use super::handle::{Conversation, Pam, Prompt};
use crate::host::HostError;
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
    // The helper outlives the user's hang-up so it can close the session; the
    // user's program gets default dispositions back before exec.
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
    // The program stays in the helper's session (and on its terminal), so the
    // daemon's hang-up of that session reaches it.
    let status = plan
        .launch()
        .and_then(|l| l.stdio([0, 1, 2]).start())
        .and_then(|mut child| child.wait_blocking());
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
