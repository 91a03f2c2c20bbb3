//! The admin view (`rsshd sessions`, `rsshd kill`): the registry of live connections, the
//! control socket, and the `rsshd sessions` / `rsshd kill` client.

pub mod client;
pub mod protocol;
pub mod registry;
pub mod server;

pub use registry::{Control, Facts, Registration, Registry};
