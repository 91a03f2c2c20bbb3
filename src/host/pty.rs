//! Pseudo-terminals: allocation with the client's size and modes, async I/O on the
//! master, and resizing.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::HostError;

/// What the client asked for in `pty-req`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PtyParams {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
    pub pix_width: u32,
    pub pix_height: u32,
    /// RFC 4254 section 8 opcodes and values.
    pub modes: Vec<(u8, u32)>,
}

#[cfg(test)]
impl PtyParams {
    /// What the tests ask for: an 80x24 xterm, no modes.
    pub(crate) fn xterm() -> PtyParams {
        PtyParams {
            term: "xterm".into(),
            cols: 80,
            rows: 24,
            pix_width: 0,
            pix_height: 0,
            modes: vec![],
        }
    }
}

/// A freshly opened PTY: the master stays with us, the slave goes to the child.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub name: PathBuf,
}

fn winsize(cols: u32, rows: u32, pw: u32, ph: u32) -> libc::winsize {
    let clamp = |v: u32| v.min(u16::MAX as u32) as u16;
    libc::winsize {
        ws_row: clamp(rows),
        ws_col: clamp(cols),
        ws_xpixel: clamp(pw),
        ws_ypixel: clamp(ph),
    }
}

/// Open a PTY with the requested size and terminal modes.
///
/// Both ends are close-on-exec from the system call that creates them: the
/// daemon starts other users' programs on other threads at any moment, and a
/// descriptor that is inheritable even briefly (openpty(3), then fcntl) reached
/// one in three programs started meanwhile in a test of that window.
pub fn open(params: &PtyParams) -> Result<Pty, HostError> {
    use nix::fcntl::OFlag;
    let os = |what: &str| {
        let what = what.to_string();
        move |source| HostError::Os { what, source }
    };
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::fcntl::open("/dev/ptmx", flags, nix::sys::stat::Mode::empty())
        .map_err(os("open /dev/ptmx"))?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int through a valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(os("unlockpt")(nix::Error::last()));
    }
    let slave = open_peer(&master, flags)?;
    let name = nix::unistd::ttyname(&slave).map_err(os("ttyname"))?;
    let ws = winsize(
        params.cols,
        params.rows,
        params.pix_width,
        params.pix_height,
    );
    // SAFETY: TIOCSWINSZ reads a winsize through a valid pointer.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(os("TIOCSWINSZ")(nix::Error::last()));
    }
    super::ttymodes::apply(&slave, &params.modes);
    Ok(Pty {
        master,
        slave,
        name,
    })
}

/// The slave end of `master`, opened with `flags`: through the master itself
/// (TIOCGPTPEER, Linux 4.13), which also finds the right device in a container
/// with its own devpts, else by the name the master reports.
fn open_peer(master: &OwnedFd, flags: nix::fcntl::OFlag) -> Result<OwnedFd, HostError> {
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags.bits()) };
    if fd >= 0 {
        // SAFETY: a fresh descriptor that nothing else owns.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let err = nix::Error::last();
    if !matches!(err, nix::Error::EINVAL | nix::Error::ENOTTY) {
        return Err(HostError::Os {
            what: "TIOCGPTPEER".into(),
            source: err,
        });
    }
    open_by_name(master, flags)
}

/// The slave end of `master` opened by its device name (kernels before 4.13).
fn open_by_name(master: &OwnedFd, flags: nix::fcntl::OFlag) -> Result<OwnedFd, HostError> {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int through a valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } != 0 {
        return Err(HostError::Os {
            what: "ptsname".into(),
            source: nix::Error::last(),
        });
    }
    let path = format!("/dev/pts/{n}");
    nix::fcntl::open(path.as_str(), flags, nix::sys::stat::Mode::empty()).map_err(|source| {
        HostError::Os {
            what: format!("open {path}"),
            source,
        }
    })
}

/// The master side, shared by the reader, the writer and the resizer.
#[derive(Clone)]
pub struct Master(Arc<AsyncFd<OwnedFd>>);

impl Master {
    pub fn new(fd: OwnedFd) -> Result<Self, HostError> {
        let flags =
            nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| HostError::Os {
                what: "fcntl".into(),
                source: e,
            })?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(|e| {
            HostError::Os {
                what: "fcntl".into(),
                source: e,
            }
        })?;
        // SAFETY: we own `fd` outright and nothing else registers or closes it.
        let fd = unsafe { AsyncFd::register(fd) }
            .map_err(|e| HostError::Io(io::Error::other(e.to_string())))?;
        Ok(Master(Arc::new(fd)))
    }
}

/// Resizes a session's terminal; the kernel then sends SIGWINCH to its foreground job.
/// It does not keep the terminal open: the session's end closes it (see
/// `ProcessKiller::close_terminal`), whoever still holds a resizer.
#[derive(Clone)]
pub struct PtyResizer(std::sync::Weak<AsyncFd<OwnedFd>>);

impl PtyResizer {
    pub fn new(m: Master) -> Self {
        PtyResizer(Arc::downgrade(&m.0))
    }

    pub fn resize(&self, cols: u32, rows: u32, pw: u32, ph: u32) -> Result<(), HostError> {
        let Some(fd) = self.0.upgrade() else {
            return Ok(());
        };
        let ws = winsize(cols, rows, pw, ph);
        // SAFETY: TIOCSWINSZ reads a winsize through a valid pointer.
        let r = unsafe { libc::ioctl(fd.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if r != 0 {
            return Err(HostError::Io(io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl AsyncRead for Master {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let fd = guard.get_inner().as_raw_fd();
            // SAFETY: reading into an initialized buffer of the given length.
            let n = unsafe { libc::read(fd, unfilled.as_mut_ptr().cast(), unfilled.len()) };
            if n >= 0 {
                buf.advance(n as usize);
                return Poll::Ready(Ok(()));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => guard.clear_ready(),
                // Every slave descriptor is closed: the terminal's end of file.
                Some(libc::EIO) => return Poll::Ready(Ok(())),
                Some(libc::EINTR) => {}
                _ => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for Master {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            let fd = guard.get_inner().as_raw_fd();
            // SAFETY: writing from a valid buffer of the given length.
            let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
            if n >= 0 {
                return Poll::Ready(Ok(n as usize));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => guard.clear_ready(),
                Some(libc::EINTR) => {}
                _ => return Poll::Ready(Err(err)),
            }
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> PtyParams {
        PtyParams::xterm()
    }

    fn cloexec(fd: &OwnedFd) -> bool {
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn both_ends_are_close_on_exec() {
        let pty = open(&params()).unwrap();
        assert!(cloexec(&pty.master));
        assert!(cloexec(&pty.slave));
        assert!(pty.name.starts_with("/dev/pts/"), "{}", pty.name.display());
    }

    #[test]
    fn the_slave_opened_by_name_is_the_same_terminal() {
        let pty = open(&params()).unwrap();
        let flags =
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC;
        let by_name = open_by_name(&pty.master, flags).unwrap();
        assert!(cloexec(&by_name));
        assert_eq!(nix::unistd::ttyname(&by_name).unwrap(), pty.name);
    }

    /// A program started on another thread at any moment must not get a PTY: the
    /// descriptors have to be close-on-exec from the system call that made them,
    /// not from a fcntl after it. One thread opens PTYs in a loop while this one
    /// starts shells that list what they inherited (with the flag set afterwards,
    /// about one shell in three caught a PTY).
    #[test]
    fn no_program_started_meanwhile_inherits_a_pty() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let opener = {
            let (stop, opened) = (Arc::clone(&stop), Arc::clone(&opened));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    drop(open(&params()).unwrap());
                    opened.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let mut caught = Vec::new();
        for _ in 0..300 {
            let out = std::process::Command::new("/bin/sh")
                .args(["-c", "ls -l /proc/$$/fd; :"])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains("/dev/ptmx") || text.contains("/dev/pts/") {
                caught.push(text);
            }
        }
        stop.store(true, Ordering::Relaxed);
        opener.join().unwrap();
        assert!(
            opened.load(Ordering::Relaxed) > 300,
            "the opener hardly ran"
        );
        assert!(
            caught.is_empty(),
            "{} of 300 programs inherited a PTY:\n{}",
            caught.len(),
            caught.join("\n--\n")
        );
    }
}
