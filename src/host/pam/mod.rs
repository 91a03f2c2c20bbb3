//! PAM: authentication on a blocking thread in the daemon, and each
//! connection's one session in a helper process. libpam is loaded at run time.

mod auth;
#[allow(unsafe_code)]
mod decoy;
#[allow(unsafe_code)]
mod ffi;
#[allow(unsafe_code)]
mod handle;
#[allow(unsafe_code)]
mod helper;
mod link;
#[allow(unsafe_code)]
mod wire;

pub use auth::{
    AuthOutcome, AuthParams, KbdAuth, KbdEvent, PasswordConversation, account, authenticate,
};
pub use handle::{Conversation, Prompt};
pub use helper::{HELPER_ARG, HELPER_ENV, HelperRequest, helper_main};
pub(crate) use link::{Link, ToHelper};
pub use link::{Opened, PamLogin};

/// Whether libpam can be loaded here.
pub fn available() -> Result<(), String> {
    ffi::lib().map(|_| ())
}
