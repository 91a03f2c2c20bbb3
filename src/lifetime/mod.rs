//! Session lifetime: liveness and idleness kept apart, decided by
//! a pure [`Engine`] from a [`Policy`].

mod driver;
mod engine;
mod policy;

pub use driver::{ChannelStamps, Driver, Events, Stamp};
pub use engine::{Action, Ending, Engine, Event, Snapshot};
pub use policy::Policy;
