//! The daemon's own descriptors at start.
//!
//! Every descriptor rsshd creates is close-on-exec from the call that creates
//! it, and every program it starts gets exactly 0, 1 and 2 (`launch` closes the
//! rest in the child). What is left is what rsshd was started with.

use std::os::fd::AsRawFd;

/// Run first thing in `main`, before any thread or descriptor exists.
///
/// - 0, 1 and 2 are opened on /dev/null where closed, as sshd's
///   `sanitise_stdfd`: otherwise the first socket or pipe would get one of
///   those numbers, and a stray write to stderr would land in it (and a
///   descriptor handed to a child as its 0-2 could not be told apart).
/// - Every descriptor from 3 up is marked close-on-exec rather than closed:
///   systemd socket activation (LISTEN_FDS) hands listening sockets over from
///   3 up, and those must stay open for the daemon; what the daemon does not
///   use then stays idle, and no program rsshd starts inherits any of them.
pub fn sanitize_at_start() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only reads the flags of a descriptor number.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            // open(2) returns the lowest free number, so this fills the gap;
            // the descriptor is deliberately left open and inheritable.
            if let Ok(null) = nix::fcntl::open(
                "/dev/null",
                nix::fcntl::OFlag::O_RDWR,
                nix::sys::stat::Mode::empty(),
            ) {
                if null.as_raw_fd() == fd {
                    std::mem::forget(null);
                } else {
                    drop(null);
                }
            }
        }
    }
    mark_cloexec_from(3);
}

/// Set close-on-exec on every descriptor from `first` up: one close_range(2)
/// call on Linux 5.11 and later, else each descriptor /proc lists.
fn mark_cloexec_from(first: i32) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        mark_listed_from(first);
    }
}

/// The fallback of [`mark_cloexec_from`]: each descriptor /proc/self/fd lists.
fn mark_listed_from(first: i32) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    // Collected first: the listing's own descriptor is among those listed.
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: flag changes on descriptor numbers; a number that is no
        // longer open fails with EBADF and is skipped.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    fn cloexec(fd: &OwnedFd) -> bool {
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn inherited_descriptors_become_close_on_exec_and_stay_open() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        // dup(2) makes a descriptor without close-on-exec, as an inherited one.
        let plain = nix::unistd::dup(&file).unwrap();
        assert!(!cloexec(&plain));
        mark_cloexec_from(plain.as_raw_fd());
        assert!(cloexec(&plain));
        assert!(nix::sys::stat::fstat(&plain).is_ok(), "still open");
        let other = nix::unistd::dup(&file).unwrap();
        assert!(!cloexec(&other));
        mark_listed_from(other.as_raw_fd());
        assert!(cloexec(&other));
        assert!(nix::sys::stat::fstat(&other).is_ok(), "still open");
    }
}
