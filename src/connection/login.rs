//! The account a connection logged in as: what authentication produces and every
//! later part of the connection (sessions, forwarding, lifetime policy) reads.

use std::sync::Arc;

use crate::config::Settings;
use crate::host::{KeyOptions, UserInfo};

/// The account a connection logged in as, with everything its sessions need.
pub(crate) struct Login {
    pub(crate) user: UserInfo,
    pub(crate) settings: Arc<Settings>,
    pub(crate) key_options: KeyOptions,
    /// The host's login token for this connection: sessions and the user's
    /// sockets are asked for with it.
    pub(crate) grant: crate::host::Grant,
}
