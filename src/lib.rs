//! rsshd: an OpenSSH-compatible SSH server that ends idle sessions on time.
//!
//! Data flows one way: socket -> [`daemon`] -> connection -> channels -> the user's
//! process, and every privileged operation goes through [`host`].
//!
//! Unsafe code is denied here and allowed module by module in `host` only, where
//! rsshd talks to the C library and the kernel; each `unsafe` says why it holds.

#![deny(unsafe_code)]

pub mod admin;
pub mod config;
pub(crate) mod connection;
pub mod daemon;
pub mod host;
pub mod krl;
pub(crate) mod lifetime;
pub mod log;
pub mod paths;
pub mod pattern;
pub mod percent;
pub mod privilege;
#[cfg(test)]
mod testing;
