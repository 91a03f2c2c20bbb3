//! The privileged boundary: every operation that needs root or reads a user's
//! files sits behind this narrow API of plain data, so it can later move into a
//! separate privileged process while the network side drops root.

mod access;
pub(crate) mod api;
#[cfg(test)]
mod api_tests;
pub(crate) mod as_user;
mod auth_info;
mod auth_state;
mod authn;
mod authorized_keys;
mod cert_options;
mod certs;
#[allow(unsafe_code)]
mod child;
mod chroot;
mod client;
mod commands;
mod dns;
#[allow(unsafe_code)]
pub mod fds;
mod host_key_agent;
pub mod host_keys;
mod hushlogin;
mod kex_sign;
#[allow(unsafe_code)]
mod key_command;
#[allow(unsafe_code)]
mod key_options;
mod keyverify;
#[cfg(test)]
pub(crate) mod keyverify_tests;
mod lastlog;
#[allow(unsafe_code)]
mod launch;
mod lifecycle;
#[cfg(test)]
mod lifecycle_tests;
#[allow(unsafe_code)]
mod listen_fds;
#[allow(unsafe_code)]
pub(crate) mod local_time;
#[allow(unsafe_code)]
pub mod memory;
mod methods;
#[allow(unsafe_code)]
pub(crate) mod netproc;
pub mod pam;
#[allow(unsafe_code)]
mod process;
#[allow(unsafe_code)]
mod pty;
mod revoked_keys;
pub mod sandbox;
mod service;
mod session_start;
pub mod sftp;
mod sk;
pub mod spawn;
mod strict_modes;
#[allow(unsafe_code)]
pub mod syslog;
#[allow(unsafe_code)]
mod ttymodes;
mod user_env;
mod user_files;
pub mod user_rc;
#[allow(unsafe_code)]
mod user_socket;
mod users;
#[allow(unsafe_code)]
mod utmp;
#[doc(hidden)]
pub mod wire;

pub use crate::privilege::Privilege;
pub use auth_info::{LoginCert, LoginKey};
pub(crate) use authn::key_type_name;
/// The line and option parsers on their own, for the fuzz targets (fuzz/).
#[doc(hidden)]
pub use authorized_keys::parse_line;
pub use authorized_keys::{
    AuthorizedKey, KeyCommands, KeyLookup, KeyQuery, expand_path, find_authorized_key,
};
pub use certs::{CertPolicy, describe as describe_cert};
pub(crate) use client::Grant;
pub use client::HostKeyOffer;
pub(crate) use dns::remote_hostname;
pub(crate) use hushlogin::hush_login;
pub use key_command::KeyCommand;
pub use key_options::KeyOptions;
#[doc(hidden)]
pub use key_options::parse_options;
pub(crate) use lastlog::{last_login, record_lastlog};
pub use listen_fds::take_listen_fds;
pub use pty::PtyParams;
/// I/O and window size on a terminal master the network side holds (no
/// privilege: the descriptor is its own).
pub(crate) use pty::{Master, PtyResizer};
pub use revoked_keys::{Revocable, RevocationError, revoked};
pub use service::Host;
pub(crate) use session_start::plan;
pub use sftp::InternalSftp;
pub(crate) use spawn::spawn;
pub use spawn::{ExecPlan, ExitOutcome, PamSession, SessionEnv, SpawnRequest};
pub(crate) use user_env::user_environment;
pub(crate) use user_socket::WatchedListener;
pub use users::{UserInfo, current_user, lookup_user};
pub use utmp::{
    DEFAULT_HOST_LEN as DEFAULT_UTMP_HOST_LEN, accounting_off_reason,
    set_host_len as set_utmp_host_len,
};
pub(crate) use utmp::{LoginRecord, record_login, record_logout};

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
    /// What sshd's session child would die of (`fatal()`), in sshd's words: a bad
    /// `ChrootDirectory`, for instance. The session does not start.
    #[error("{0}")]
    SessionFatal(String),
    /// The link to the monitor process is gone (it closed it, or spoke out of
    /// protocol): no call through it can be answered any more.
    #[error("monitor link: {0}")]
    Link(String),
}
