//! The privileged boundary: every operation that needs root or reads a user's
//! files sits behind this narrow API of plain data, so it can later move into a
//! separate privileged process while the network side drops root.

pub mod as_user;
mod authorized_keys;
mod child;
pub mod fds;
mod lastlog;
mod launch;
pub mod pam;
mod process;
mod pty;
pub mod spawn;
mod strict_modes;
mod user_socket;
mod users;
mod utmp;

pub use authorized_keys::{AuthorizedKey, KeyLookup, KeyOptions, expand_path, find_authorized_key};
pub use lastlog::{LastLogin, last_login, record_lastlog};
pub use process::{HANGUP_GRACE, ProcessKiller, session_members};
pub use pty::{PtyParams, PtyResizer};
pub use spawn::{
    ExecPlan, ExitOutcome, PamSession, ProcessIo, SessionProcess, SpawnRequest, spawn,
};
pub use user_socket::{UserSocket, user_socket};
pub use users::{UserInfo, current_user, lookup_user, running_as_root};
pub use utmp::{LoginRecord, record_login, record_logout};

/// What went wrong at the boundary.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{what}: {source}")]
    Os { what: String, source: nix::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no such user {0}")]
    NoSuchUser(String),
    #[error("{0}")]
    NotPermitted(String),
    /// A per-user or global cap on concurrent work was reached; try later.
    #[error("{0}")]
    Busy(String),
    /// Work done with a user's identity did not finish in time.
    #[error("timed out after {0:?}")]
    TimedOut(std::time::Duration),
}
