//! A started child process: its end seen without reaping it, and its reap.

use std::ffi::c_int;

use tokio::io::unix::AsyncFd;

use super::HostError;
use super::spawn::ExitOutcome;

/// A started child. Its end is observed without reaping it ([`Child::exited`]);
/// only [`Child::reap`] reaps it. Until then its pid, which is also the session
/// and process group id of a child that leads them, cannot be taken by another
/// process, so a signal sent by that number reaches only the child's own
/// processes: callers that signal by number reap only after their last signal.
pub struct Child {
    pid: i32,
    outcome: Option<ExitOutcome>,
    reaped: bool,
}

impl Child {
    pub(super) fn new(pid: i32) -> Child {
        Child {
            pid,
            outcome: None,
            reaped: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Wait for the child to end, leaving it unreaped. Readiness comes from a
    /// pidfd, so no SIGCHLD handling is needed.
    pub async fn exited(&mut self) -> Result<ExitOutcome, HostError> {
        if let Some(o) = &self.outcome {
            return Ok(o.clone());
        }
        let outcome = match super::process::pidfd_open(self.pid).ok() {
            Some(fd) => {
                // SAFETY: the AsyncFd owns the pidfd and deregisters it before
                // closing it.
                let fd = unsafe { AsyncFd::register(fd) }
                    .map_err(|e| HostError::Io(std::io::Error::other(e.to_string())))?;
                loop {
                    let mut ready = fd.readable().await.map_err(HostError::Io)?;
                    match peek(self.pid, true)? {
                        Some(o) => break o,
                        None => ready.clear_ready(),
                    }
                }
            }
            None => {
                let pid = self.pid;
                tokio::task::spawn_blocking(move || peek(pid, false))
                    .await
                    .map_err(|e| HostError::Io(std::io::Error::other(e)))??
                    .unwrap_or(ExitOutcome::Code(255))
            }
        };
        self.outcome = Some(outcome.clone());
        Ok(outcome)
    }

    /// How the child ended, if it has (without waiting or reaping).
    pub fn try_exited(&mut self) -> Result<Option<ExitOutcome>, HostError> {
        if self.outcome.is_none() {
            self.outcome = peek(self.pid, true)?;
        }
        Ok(self.outcome.clone())
    }

    /// Reap the child, waiting for it to end if it has not.
    pub fn reap(&mut self) -> Result<ExitOutcome, HostError> {
        if self.reaped {
            return Ok(self.outcome.clone().unwrap_or(ExitOutcome::Code(255)));
        }
        let outcome = reap(self.pid, false)?.unwrap_or(ExitOutcome::Code(255));
        self.reaped = true;
        self.outcome = Some(outcome.clone());
        Ok(outcome)
    }

    /// Wait for the child to end and reap it, for callers that never signal it
    /// by number.
    pub async fn wait(&mut self) -> Result<ExitOutcome, HostError> {
        self.exited().await?;
        self.reap()
    }
}

impl Drop for Child {
    /// A child nobody reaped is still reaped, so it leaves no zombie.
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let pid = self.pid;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = Child::new(pid).wait().await;
                });
            }
            Err(_) => {
                std::thread::spawn(move || reap(pid, false));
            }
        }
    }
}

/// How a killed or exited child ended, from the status wait(2) reports.
fn outcome(code: c_int, status: c_int) -> Option<ExitOutcome> {
    match code {
        libc::CLD_EXITED => Some(ExitOutcome::Code(status)),
        libc::CLD_KILLED | libc::CLD_DUMPED => {
            let name = nix::sys::signal::Signal::try_from(status)
                .map(|s| s.as_str().trim_start_matches("SIG").to_string())
                .unwrap_or_else(|_| status.to_string());
            Some(ExitOutcome::Signal {
                name,
                core_dumped: code == libc::CLD_DUMPED,
            })
        }
        _ => None,
    }
}

/// waitid(WNOWAIT) for `pid`: how it ended, leaving it a zombie; `None` if it is
/// still running (only with `nohang`).
fn peek(pid: i32, nohang: bool) -> Result<Option<ExitOutcome>, HostError> {
    let mut flags = libc::WEXITED | libc::WNOWAIT;
    if nohang {
        flags |= libc::WNOHANG;
    }
    loop {
        // SAFETY: siginfo_t is plain data that waitid fills in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid siginfo_t to fill.
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if r != 0 {
            let e = nix::Error::last();
            if e == nix::Error::EINTR {
                continue;
            }
            return Err(HostError::Os {
                what: format!("waitid {pid}"),
                source: e,
            });
        }
        // SAFETY: waitid filled `info` for a child (si_pid 0: none ended yet).
        let (who, status) = unsafe { (info.si_pid(), info.si_status()) };
        if who == 0 {
            return Ok(None);
        }
        return Ok(outcome(info.si_code, status));
    }
}

/// waitpid for `pid`; `None` if it is still running (only with `nohang`).
fn reap(pid: i32, nohang: bool) -> Result<Option<ExitOutcome>, HostError> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let flags = nohang.then_some(WaitPidFlag::WNOHANG);
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), flags) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(ExitOutcome::Code(code))),
            Ok(WaitStatus::Signaled(_, sig, core_dumped)) => {
                return Ok(Some(ExitOutcome::Signal {
                    name: sig.as_str().trim_start_matches("SIG").to_string(),
                    core_dumped,
                }));
            }
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                return Err(HostError::Os {
                    what: format!("waitpid {pid}"),
                    source: e,
                });
            }
        }
    }
}
