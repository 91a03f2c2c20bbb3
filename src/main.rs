//! The binary's edge: sshd's command line (see `cli`) to daemon, inetd mode, `-t`,
//! `-T`/`-G`, or the admin commands.

#![deny(unsafe_code)]

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything opens a descriptor: 0-2 open, and everything inherited
    // from 3 up close-on-exec (kept open for systemd socket activation).
    rsshd::host::fds::sanitize_at_start();
    // The PAM session helper is this same binary; it must not parse our flags.
    let helper = std::env::args_os().nth(1);
    if helper
        .as_ref()
        .is_some_and(|a| a == rsshd::host::pam::HELPER_ARG)
    {
        std::process::exit(rsshd::host::pam::helper_main());
    }
    // So is internal-sftp's (see host::sftp).
    if helper
        .as_ref()
        .is_some_and(|a| a == rsshd::host::sftp::HELPER_ARG)
    {
        std::process::exit(rsshd::host::sftp::helper_main());
    }
    // So is the runner of `~/.ssh/rc`, already the user.
    if helper
        .as_ref()
        .is_some_and(|a| a == rsshd::host::user_rc::RC_ARG)
    {
        std::process::exit(rsshd::host::user_rc::rc_main());
    }
    // And the network process's confinement, on its own for the tests (sandbox).
    if helper
        .as_ref()
        .is_some_and(|a| a == rsshd::host::sandbox::check::CHECK_ARG)
    {
        std::process::exit(rsshd::host::sandbox::check::check_main());
    }
    // The network process of a split daemon, started by the monitor.
    if helper
        .as_ref()
        .is_some_and(|a| a == rsshd::daemon::split::NET_ARG)
    {
        std::process::exit(rsshd::daemon::split::net::net_main());
    }
    cli::main()
}
