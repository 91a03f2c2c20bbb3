//! The listening sockets a service manager passes for socket activation
//! (sd_listen_fds(3): `LISTEN_PID`, `LISTEN_FDS`, descriptors from 3 on).
//!
//! Taking them needs two unsafe steps that belong at this boundary: claiming raw
//! descriptor numbers as owned, and removing environment variables.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::HostError;

/// The sockets are claimed at most once per process.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The sockets passed to this process, each close-on-exec, in the order the unit
/// lists them; empty when none were passed (or they were meant for another
/// process: `LISTEN_PID` names the one they are for). `LISTEN_PID`, `LISTEN_FDS`
/// and `LISTEN_FDNAMES` are removed, so no child believes they are its own.
///
/// Call before any other thread starts; the variables stay set otherwise (they are
/// harmless to children, whose PID differs from `LISTEN_PID`).
pub fn take_listen_fds() -> Result<Vec<OwnedFd>, HostError> {
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    // Checks LISTEN_PID against our PID, parses LISTEN_FDS and sets FD_CLOEXEC on
    // each descriptor (failing on one that is not open).
    let fds = sd_notify::listen_fds().map_err(HostError::Io);
    if single_threaded() {
        // SAFETY: `set_var`/`remove_var` are unsound only when another thread
        // reads or writes the environment at the same time. This process has one
        // thread (checked just above, and only this thread could start another),
        // so nothing can.
        unsafe {
            std::env::remove_var("LISTEN_PID");
            std::env::remove_var("LISTEN_FDS");
            std::env::remove_var("LISTEN_FDNAMES");
        }
    }
    let fds = fds?;
    Ok(fds
        .map(|fd| {
            // SAFETY: `fd` is one of the descriptors the service manager passed to
            // this very process (LISTEN_PID matched) and it is open (listen_fds
            // set FD_CLOEXEC on it). Nothing else in the process owns it: it was
            // open since exec, so no open() of ours can have been given its number,
            // and TAKEN makes this the only claim.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect())
}

/// Whether this process runs a single thread (`Threads:` in /proc/self/status).
fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .map(|n| n.trim() == "1")
        })
        .unwrap_or(false)
}
