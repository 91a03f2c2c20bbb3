//! The fuzz targets. Each takes arbitrary bytes, feeds them to one parser the way the
//! daemon does, and checks an oracle that a wrong answer would break: a round trip
//! through the parser's own output, agreement with an independent reference, or a
//! relation that must hold between two calls. Time per input is bounded by the engine
//! (libFuzzer's `-timeout`, the harness's per-input limit).

mod authorized_keys;
mod config;
mod control;
mod krl;
mod monitor_request;
mod pattern;

pub use authorized_keys::authorized_keys;
pub use config::config;
pub use control::control;
pub use krl::krl;
pub use monitor_request::monitor_request;
pub use pattern::pattern;

/// A target: arbitrary bytes in, a panic when an oracle fails.
pub type Target = fn(&[u8]);

/// Every target by name; the name is also its corpus and dictionary file name.
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config),
    ("authorized_keys", authorized_keys),
    ("pattern", pattern),
    ("control", control),
    ("krl", krl),
    ("monitor_request", monitor_request),
];
