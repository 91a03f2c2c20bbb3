//! The network process's descriptors: the monitor starts it with each one at a
//! known number (everything else stays close-on-exec), and the network process
//! claims them by those numbers. The rest of the split is in `daemon::split`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;

/// The first descriptor number handed over; 0-2 are stdin, stdout and stderr.
pub(crate) const FIRST_FD: RawFd = 3;

/// Start `program` with `args`, `fds[i]` at descriptor `FIRST_FD + i` (open
/// across the exec), stdin on /dev/null, stdout and stderr inherited. Every other
/// descriptor of this process is close-on-exec from birth and so is not
/// inherited. The parent's copies of `fds` are closed when this returns.
pub(crate) fn spawn(
    program: &Path,
    args: &[&str],
    fds: Vec<OwnedFd>,
) -> io::Result<tokio::process::Child> {
    let sources: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let count = RawFd::try_from(sources.len()).map_err(io::Error::other)?;
    // Moved out of the way first, above every target number, so that placing one
    // never overwrites another that is still to be placed.
    let spare = FIRST_FD + count;
    let mut c = tokio::process::Command::new(program);
    // `ps` shows the monitor's name, not /proc/self/exe.
    if let Some(name) = std::env::args_os().next() {
        c.arg0(name);
    }
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(false);
    // SAFETY: runs in the forked child before exec. It makes only fcntl(2) and
    // dup2(2) calls (async-signal-safe) on descriptor numbers that are open in
    // the child (`fds` is alive in the parent until spawn returns, and fork copied
    // them), and reads the `sources` vector moved into it without allocating.
    // The temporary copies are close-on-exec (F_DUPFD_CLOEXEC); dup2 gives the
    // targets a clear close-on-exec flag, so exactly the targets survive exec.
    unsafe {
        c.pre_exec(move || {
            let mut moved = [0 as RawFd; 64];
            if sources.len() > moved.len() {
                return Err(io::Error::from_raw_os_error(libc::EMFILE));
            }
            for (i, &fd) in sources.iter().enumerate() {
                let m = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, spare);
                if m < 0 {
                    return Err(io::Error::last_os_error());
                }
                moved[i] = m;
            }
            for (i, &m) in moved.iter().take(sources.len()).enumerate() {
                if libc::dup2(m, FIRST_FD + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = c.spawn();
    drop(fds);
    child
}

/// Claim descriptor `fd`, inherited across exec, and make it close-on-exec.
/// Refuses 0-2 and numbers that are not open.
pub(crate) fn claim(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < FIRST_FD {
        return Err(io::Error::other(format!(
            "descriptor {fd} is not a handed-over one"
        )));
    }
    // SAFETY: F_GETFD only reads the flags of a descriptor number; a closed one
    // fails with EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::other(format!("descriptor {fd} is not open")));
    }
    // SAFETY: `fd` is open (checked above) and was placed there by the monitor for
    // this process alone: nothing else in this process owns it, and each number
    // is claimed once (the caller claims the layout the monitor sent, and the
    // numbers in it are distinct; see `daemon::split`).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(io::Error::from)?;
    Ok(owned)
}

/// Read the time zone now, while /etc/localtime can still be opened (after the
/// chroot glibc would fall back to UTC in syslog's time stamps).
pub(crate) fn load_time_zone() {
    super::local_time::load_zone();
}

/// The monitor's side of the host: the in-process service, served to the
/// network process over the link (`wire`).
#[derive(Clone)]
pub(crate) struct Monitor {
    service: super::service::Service,
}

impl Monitor {
    pub(crate) fn new(
        privilege: super::Privilege,
        config: std::sync::Arc<crate::config::Config>,
    ) -> Monitor {
        Monitor {
            service: super::service::Service::new(privilege, config),
        }
    }

    /// A reloaded config: connections opened from now on are judged by it.
    pub(crate) fn set_config(&self, config: std::sync::Arc<crate::config::Config>) {
        self.service.set_config(config);
    }

    /// The host keys the monitor signs key exchanges with (at start and on
    /// reload); the network process only ever sees their public halves.
    pub(crate) fn set_host_keys(&self, keys: super::host_keys::HostKeySet) {
        self.service.set_host_keys(keys);
    }

    /// Serve the request table on `fd` (the monitor's end of the link); the
    /// future ends with the link. The notifier sends the monitor's notices.
    pub(crate) fn serve(
        &self,
        fd: OwnedFd,
    ) -> io::Result<(
        impl std::future::Future<Output = super::wire::ServeEnd> + Send + 'static,
        super::wire::Notifier,
    )> {
        super::wire::serve(self.service.clone(), fd, Default::default())
    }

    /// The network process is gone, and with it every connection: end what the
    /// host keeps for them (session programs, PAM sessions, utmp entries).
    pub(crate) async fn network_lost(&self) {
        self.service.network_lost().await;
    }
}
