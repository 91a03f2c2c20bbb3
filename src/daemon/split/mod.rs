//! Privilege separation, the process half: a root daemon runs as two processes.
//!
//! - The **monitor** (`monitor`): the process the admin or systemd started, root.
//!   It loads the config, binds the listeners and the control socket, writes the
//!   PID file, talks to systemd, holds the host keys, serves the host's request
//!   table to the network process, and owns session programs, PAM helpers and
//!   utmp. It never parses SSH.
//! - The **network process** (`net`): a fresh exec of this binary as
//!   `rsshd __net`, given the link (a SOCK_SEQPACKET socketpair), the listeners,
//!   the control socket's listener and a second link for its log lines, which the
//!   monitor writes where its own go (`log::Sink::Monitor`); it gets the config from the
//!   monitor as data (a recorded load it replays: `config::Recorded`), confines
//!   itself (`host::sandbox`) and runs the accept loop, russh, the lifetime engine,
//!   the registry and the control socket's service.
//!
//! Used when rsshd runs as root as a daemon (`-D`, `-d`, `-e` too). Without root,
//! and for `-i`, `-t`, `-T` and `-G`, rsshd stays one process (the host in-process):
//! an unprivileged rsshd has nothing to separate, and inetd mode serves one
//! connection in a process of its own already.

mod link;
pub mod monitor;
pub mod net;

use std::os::fd::RawFd;

use serde::{Deserialize, Serialize};

use crate::config::{LogLevel, Recorded};

/// The hidden first argument that makes this binary the network process.
pub const NET_ARG: &str = "__net";

/// Test-only: the program the monitor starts as the
/// network process instead of this binary, given the same arguments and
/// descriptors, so that a test can play a compromised network process against a
/// real monitor. Not documented for users. It gives nothing away: only root can
/// start a monitor (an unprivileged rsshd never splits), and root can run any
/// program anyway; the program gets only what the real network process gets.
pub(crate) const TEST_NET_PROGRAM_ENV: &str = "RSSHD_TEST_NET_PROGRAM";

/// `RSSHD_PRIVSEP=off` keeps a root daemon in one process (for comparing the
/// two, and as the way back while the split is new); `split` asks for it.
pub(crate) const PRIVSEP_ENV: &str = "RSSHD_PRIVSEP";

/// Whether this daemon splits: root, and not turned off.
pub fn wanted() -> bool {
    if !crate::host::Privilege::current().is_root() {
        return false;
    }
    match std::env::var(PRIVSEP_ENV).as_deref() {
        Ok("split") => true,
        Ok(_) => false,
        Err(_) => DEFAULT_ON,
    }
}

/// Whether a root daemon splits when `RSSHD_PRIVSEP` is not set: it does
/// (`RSSHD_PRIVSEP=off` keeps one process, for diagnosis).
const DEFAULT_ON: bool = true;

/// What the monitor hands the network process at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// The descriptor of a memfd holding the [`Setup`] (see `link::to_memfd`).
    pub setup: RawFd,
    pub level: LogLevel,
    /// The network process's end of its log link (`log::monitor_link`).
    pub log: RawFd,
    pub layout: Layout,
    /// Debug mode: serve one connection, then exit.
    pub once: bool,
}

/// Where the handed-over descriptors are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Layout {
    pub control: Option<RawFd>,
    pub listeners: Vec<RawFd>,
}

/// A configuration as the network process needs it: the recorded load. The host
/// keys stay in the monitor, which signs key exchanges (`SignKex`); the network
/// process asks for their public halves (`HostKeys`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Setup {
    pub config: Recorded,
}
