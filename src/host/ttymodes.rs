//! The client's terminal modes (RFC 4254 section 8) applied to a new PTY with
//! sshd's semantics, so that a program sees the same terminal under rsshd as
//! under sshd for the same client terminal:
//! - a control character sent as 255 is disabled (`_POSIX_VDISABLE`, which is 0
//!   on Linux); written as the byte 0xFF it would make a typed 0xFF end a line
//!   (VEOL/VEOL2) or interrupt the program;
//! - a flag opcode sets the flag's bits when its value is non-zero and clears
//!   them otherwise, CS7 and CS8 included (they are bit masks within CSIZE, so a
//!   client on a CS8 terminal sends both as 1 and the result is CS8);
//! - the speeds are applied as the nearest standard rate sshd knows, 9600 for
//!   one it does not;
//! - opcodes are applied in the client's order; unknown ones are skipped.

use std::os::fd::{AsRawFd, OwnedFd};

use libc::{cc_t, speed_t, tcflag_t, termios};

/// The value a client sends for a disabled control character.
const DISABLED: u32 = 255;

/// What an opcode changes.
enum Op {
    Char(usize),
    Iflag(tcflag_t),
    Lflag(tcflag_t),
    Oflag(tcflag_t),
    Cflag(tcflag_t),
    Ispeed,
    Ospeed,
}

/// One row per opcode Linux has (VDSUSP, VFLUSH, VSWTCH and VSTATUS do not exist
/// there, so sshd skips them too).
fn op(code: u8) -> Option<Op> {
    use Op::*;
    Some(match code {
        1 => Char(libc::VINTR),
        2 => Char(libc::VQUIT),
        3 => Char(libc::VERASE),
        4 => Char(libc::VKILL),
        5 => Char(libc::VEOF),
        6 => Char(libc::VEOL),
        7 => Char(libc::VEOL2),
        8 => Char(libc::VSTART),
        9 => Char(libc::VSTOP),
        10 => Char(libc::VSUSP),
        12 => Char(libc::VREPRINT),
        13 => Char(libc::VWERASE),
        14 => Char(libc::VLNEXT),
        18 => Char(libc::VDISCARD),
        30 => Iflag(libc::IGNPAR),
        31 => Iflag(libc::PARMRK),
        32 => Iflag(libc::INPCK),
        33 => Iflag(libc::ISTRIP),
        34 => Iflag(libc::INLCR),
        35 => Iflag(libc::IGNCR),
        36 => Iflag(libc::ICRNL),
        37 => Iflag(libc::IUCLC),
        38 => Iflag(libc::IXON),
        39 => Iflag(libc::IXANY),
        40 => Iflag(libc::IXOFF),
        41 => Iflag(libc::IMAXBEL),
        42 => Iflag(libc::IUTF8),
        50 => Lflag(libc::ISIG),
        51 => Lflag(libc::ICANON),
        52 => Lflag(libc::XCASE),
        53 => Lflag(libc::ECHO),
        54 => Lflag(libc::ECHOE),
        55 => Lflag(libc::ECHOK),
        56 => Lflag(libc::ECHONL),
        57 => Lflag(libc::NOFLSH),
        58 => Lflag(libc::TOSTOP),
        59 => Lflag(libc::IEXTEN),
        60 => Lflag(libc::ECHOCTL),
        61 => Lflag(libc::ECHOKE),
        62 => Lflag(libc::PENDIN),
        70 => Oflag(libc::OPOST),
        71 => Oflag(libc::OLCUC),
        72 => Oflag(libc::ONLCR),
        73 => Oflag(libc::OCRNL),
        74 => Oflag(libc::ONOCR),
        75 => Oflag(libc::ONLRET),
        90 => Cflag(libc::CS7),
        91 => Cflag(libc::CS8),
        92 => Cflag(libc::PARENB),
        93 => Cflag(libc::PARODD),
        128 => Ispeed,
        129 => Ospeed,
        _ => return None,
    })
}

/// A rate in bits per second as a termios speed; 9600 for a rate without one,
/// as sshd.
fn speed(baud: u32) -> speed_t {
    match baud {
        0 => libc::B0,
        50 => libc::B50,
        75 => libc::B75,
        110 => libc::B110,
        134 => libc::B134,
        150 => libc::B150,
        200 => libc::B200,
        300 => libc::B300,
        600 => libc::B600,
        1200 => libc::B1200,
        1800 => libc::B1800,
        2400 => libc::B2400,
        4800 => libc::B4800,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        _ => libc::B9600,
    }
}

fn set(flags: &mut tcflag_t, bits: tcflag_t, on: bool) {
    if on {
        *flags |= bits;
    } else {
        *flags &= !bits;
    }
}

/// Apply `modes` to `t` in order.
fn apply_to(t: &mut termios, modes: &[(u8, u32)]) {
    for &(code, v) in modes {
        let on = v != 0;
        match op(code) {
            Some(Op::Char(i)) => {
                // Values above a byte are truncated, as by sshd's assignment.
                t.c_cc[i] = if v == DISABLED { 0 } else { v as cc_t };
            }
            Some(Op::Iflag(b)) => set(&mut t.c_iflag, b, on),
            Some(Op::Lflag(b)) => set(&mut t.c_lflag, b, on),
            Some(Op::Oflag(b)) => set(&mut t.c_oflag, b, on),
            Some(Op::Cflag(b)) => set(&mut t.c_cflag, b, on),
            Some(Op::Ispeed) => {
                // SAFETY: t is a valid termios and the speed one of the B constants.
                unsafe { libc::cfsetispeed(t, speed(v)) };
            }
            Some(Op::Ospeed) => {
                // SAFETY: t is a valid termios and the speed one of the B constants.
                unsafe { libc::cfsetospeed(t, speed(v)) };
            }
            None => {}
        }
    }
}

/// Apply the client's terminal modes to the PTY's slave end.
pub(super) fn apply(slave: &OwnedFd, modes: &[(u8, u32)]) {
    let fd = slave.as_raw_fd();
    // SAFETY: termios is plain data, all-zero is a valid value; tcgetattr fills it
    // from a valid descriptor.
    let mut t: termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes a termios through a valid pointer.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return;
    }
    apply_to(&mut t, modes);
    // SAFETY: t came from tcgetattr on the same descriptor.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> termios {
        // SAFETY: plain data.
        let mut t: termios = unsafe { std::mem::zeroed() };
        t.c_cflag = libc::CS8;
        t.c_cc[libc::VEOL] = 7;
        t
    }

    #[test]
    fn two_five_five_disables_every_control_character() {
        let mut t = base();
        let all: Vec<(u8, u32)> = (1..=18).map(|c| (c, DISABLED)).collect();
        apply_to(&mut t, &all);
        for (code, _) in all {
            if let Some(Op::Char(i)) = op(code) {
                assert_eq!(t.c_cc[i], 0, "opcode {code}");
            }
        }
        apply_to(&mut t, &[(1, 3), (6, 0xff00 | 0x41)]);
        assert_eq!(t.c_cc[libc::VINTR], 3);
        assert_eq!(t.c_cc[libc::VEOL], 0x41, "truncated to a byte, as sshd");
    }

    #[test]
    fn size_bits_are_set_and_cleared_like_sshd() {
        let mut t = base();
        // A CS8 client sends CS7=1 and CS8=1.
        apply_to(&mut t, &[(90, 1), (91, 1)]);
        assert_eq!(t.c_cflag & libc::CSIZE, libc::CS8);
        // A CS5 client sends both as 0, which clears the size.
        apply_to(&mut t, &[(90, 0), (91, 0)]);
        assert_eq!(t.c_cflag & libc::CSIZE, libc::CS5);
        apply_to(&mut t, &[(53, 1), (53, 0), (72, 5)]);
        assert_eq!(t.c_lflag & libc::ECHO, 0, "the last one wins");
        assert_ne!(t.c_oflag & libc::ONLCR, 0);
    }

    #[test]
    fn speeds_map_to_standard_rates() {
        // glibc keeps one speed for both directions in c_cflag, so each is
        // checked on its own (sshd calls the same functions).
        for (op, baud, want) in [
            (128, 38400, libc::B38400),
            (129, 115200, libc::B115200),
            (129, 12345, libc::B9600),
        ] {
            let mut t = base();
            apply_to(&mut t, &[(op, baud)]);
            // SAFETY: cfget*speed only read a valid termios.
            let got = unsafe {
                if op == 128 {
                    libc::cfgetispeed(&t)
                } else {
                    libc::cfgetospeed(&t)
                }
            };
            assert_eq!(got, want, "opcode {op} with {baud}");
        }
    }
}
