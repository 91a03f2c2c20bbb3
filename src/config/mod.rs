//! sshd_config -> typed, validated [`Settings`].
//!
//! (Being written: lexer, keyword table, Match evaluation, `-T` output.)

mod settings;
pub use settings::*;
