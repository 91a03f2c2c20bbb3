//! Pseudo-terminals: allocation with the client's size and modes, async I/O on the
//! master, and resizing.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::HostError;

/// What the client asked for in `pty-req`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtyParams {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
    pub pix_width: u32,
    pub pix_height: u32,
    /// RFC 4254 section 8 opcodes and values.
    pub modes: Vec<(u8, u32)>,
}

/// A freshly opened PTY: the master stays with us, the slave goes to the child.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub name: PathBuf,
}

fn winsize(cols: u32, rows: u32, pw: u32, ph: u32) -> nix::pty::Winsize {
    let clamp = |v: u32| v.min(u16::MAX as u32) as u16;
    nix::pty::Winsize {
        ws_row: clamp(rows),
        ws_col: clamp(cols),
        ws_xpixel: clamp(pw),
        ws_ypixel: clamp(ph),
    }
}

/// Open a PTY with the requested size and terminal modes.
pub fn open(params: &PtyParams) -> Result<Pty, HostError> {
    let ws = winsize(
        params.cols,
        params.rows,
        params.pix_width,
        params.pix_height,
    );
    let pty = nix::pty::openpty(Some(&ws), None).map_err(|e| HostError::Os {
        what: "openpty".into(),
        source: e,
    })?;
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| HostError::Os {
            what: "fcntl".into(),
            source: e,
        })?;
    }
    let name = nix::unistd::ttyname(&pty.slave).map_err(|e| HostError::Os {
        what: "ttyname".into(),
        source: e,
    })?;
    apply_modes(&pty.slave, &params.modes);
    Ok(Pty {
        master: pty.master,
        slave: pty.slave,
        name,
    })
}

/// Apply the client's terminal modes; unknown opcodes are ignored, as in sshd.
fn apply_modes(slave: &OwnedFd, modes: &[(u8, u32)]) {
    let fd = slave.as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it from a valid fd.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return;
    }
    let set = |flags: &mut libc::tcflag_t, bit: libc::tcflag_t, on: bool| {
        if on {
            *flags |= bit;
        } else {
            *flags &= !bit;
        }
    };
    for &(op, v) in modes {
        let on = v != 0;
        let cc = |i: usize, t: &mut libc::termios| t.c_cc[i] = v as libc::cc_t;
        match op {
            1 => cc(libc::VINTR, &mut t),
            2 => cc(libc::VQUIT, &mut t),
            3 => cc(libc::VERASE, &mut t),
            4 => cc(libc::VKILL, &mut t),
            5 => cc(libc::VEOF, &mut t),
            6 => cc(libc::VEOL, &mut t),
            7 => cc(libc::VEOL2, &mut t),
            8 => cc(libc::VSTART, &mut t),
            9 => cc(libc::VSTOP, &mut t),
            10 => cc(libc::VSUSP, &mut t),
            12 => cc(libc::VREPRINT, &mut t),
            13 => cc(libc::VWERASE, &mut t),
            14 => cc(libc::VLNEXT, &mut t),
            18 => cc(libc::VDISCARD, &mut t),
            30 => set(&mut t.c_iflag, libc::IGNPAR, on),
            31 => set(&mut t.c_iflag, libc::PARMRK, on),
            32 => set(&mut t.c_iflag, libc::INPCK, on),
            33 => set(&mut t.c_iflag, libc::ISTRIP, on),
            34 => set(&mut t.c_iflag, libc::INLCR, on),
            35 => set(&mut t.c_iflag, libc::IGNCR, on),
            36 => set(&mut t.c_iflag, libc::ICRNL, on),
            37 => set(&mut t.c_iflag, libc::IUCLC, on),
            38 => set(&mut t.c_iflag, libc::IXON, on),
            39 => set(&mut t.c_iflag, libc::IXANY, on),
            40 => set(&mut t.c_iflag, libc::IXOFF, on),
            41 => set(&mut t.c_iflag, libc::IMAXBEL, on),
            42 => set(&mut t.c_iflag, libc::IUTF8, on),
            50 => set(&mut t.c_lflag, libc::ISIG, on),
            51 => set(&mut t.c_lflag, libc::ICANON, on),
            52 => set(&mut t.c_lflag, libc::XCASE, on),
            53 => set(&mut t.c_lflag, libc::ECHO, on),
            54 => set(&mut t.c_lflag, libc::ECHOE, on),
            55 => set(&mut t.c_lflag, libc::ECHOK, on),
            56 => set(&mut t.c_lflag, libc::ECHONL, on),
            57 => set(&mut t.c_lflag, libc::NOFLSH, on),
            58 => set(&mut t.c_lflag, libc::TOSTOP, on),
            59 => set(&mut t.c_lflag, libc::IEXTEN, on),
            60 => set(&mut t.c_lflag, libc::ECHOCTL, on),
            61 => set(&mut t.c_lflag, libc::ECHOKE, on),
            62 => set(&mut t.c_lflag, libc::PENDIN, on),
            70 => set(&mut t.c_oflag, libc::OPOST, on),
            71 => set(&mut t.c_oflag, libc::OLCUC, on),
            72 => set(&mut t.c_oflag, libc::ONLCR, on),
            73 => set(&mut t.c_oflag, libc::OCRNL, on),
            74 => set(&mut t.c_oflag, libc::ONOCR, on),
            75 => set(&mut t.c_oflag, libc::ONLRET, on),
            90 if on => {
                t.c_cflag = (t.c_cflag & !libc::CSIZE) | libc::CS7;
            }
            91 if on => {
                t.c_cflag = (t.c_cflag & !libc::CSIZE) | libc::CS8;
            }
            92 => set(&mut t.c_cflag, libc::PARENB, on),
            93 => set(&mut t.c_cflag, libc::PARODD, on),
            _ => {}
        }
    }
    // SAFETY: t came from tcgetattr on the same fd.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) };
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
#[derive(Clone)]
pub struct PtyResizer(Master);

impl PtyResizer {
    pub fn new(m: Master) -> Self {
        PtyResizer(m)
    }

    pub fn resize(&self, cols: u32, rows: u32, pw: u32, ph: u32) -> Result<(), HostError> {
        let ws = winsize(cols, rows, pw, ph);
        // SAFETY: TIOCSWINSZ reads a winsize through a valid pointer.
        let r = unsafe { libc::ioctl(self.0.0.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
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
