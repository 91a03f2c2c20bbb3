//! PAM: authentication on a blocking thread in the daemon, and the
//! session in a per-login helper process. libpam is loaded at run time.

mod auth;
mod decoy;
mod ffi;
mod handle;
mod helper;

pub use auth::{
    AuthOutcome, AuthParams, KbdAuth, KbdEvent, PasswordConversation, account, authenticate,
};
pub use handle::{Conversation, Prompt};
pub(crate) use helper::parse_report;
pub use helper::{HELPER_ARG, HELPER_ENV, HelperRequest, helper_main};

/// Whether libpam can be loaded here.
pub fn available() -> Result<(), String> {
    ffi::lib().map(|_| ())
}
