//! The monitor protocol on the wire: how [`Request`]s travel from the network
//! process to the root monitor and their answers back (privilege separation,
//! step 2).
//!
//! One message per datagram of a `SOCK_SEQPACKET` socketpair (the kernel keeps
//! message boundaries, so a frame needs no length prefix and a reader never sees
//! half of one). Each datagram is one [`Frame`] in JSON (serde_json: debuggable,
//! and a test can play the network process from Python), at most [`FRAME_CAP`]
//! bytes. Descriptors travel beside it as `SCM_RIGHTS`, at most [`MAX_FDS`] per
//! frame, and the frame says how many it carries so a receiver can tell a lost
//! or smuggled descriptor. Calls carry a `u64` id the caller chose; the monitor
//! serves them concurrently and answers each with the same id. Errors cross as
//! plain data ([`WireError`]: a kind and a message) and become the same
//! [`HostError`] on the caller's side.
//!
//! The network process's side is [`Client`] (behind [`super::Host`]); the
//! monitor's is [`serve`], with [`Notifier`] for the monitor's own notices.
//! Anything a peer sends that is not a well-formed frame for its side (too
//! long, not JSON, a wrong kind, descriptors that do not match) is a protocol
//! error: the monitor logs it and drops the link.

// The process split (the monitor's main loop, the network process's start)
// is what uses the link; until it lands only the tests and the fuzz target do.
#![allow(dead_code)]

mod client;
mod fuzz;
mod server;
#[allow(unsafe_code)]
mod socket;
#[cfg(test)]
pub(crate) mod tests;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::HostError;
use super::api::{Request, Response};

pub(crate) use client::{Client, Notices};
#[doc(hidden)]
pub use fuzz::monitor_request as fuzz_monitor_request;
// The monitor's side is for the process split (the monitor's main loop).
#[allow(unused_imports)]
pub(crate) use server::{Notifier, ServeEnd, ServeOptions, serve};
#[allow(unused_imports)]
pub(crate) use socket::pair;

/// The most bytes one frame may have. Every request is bounded far below it
/// (passwords, keys, certificates and the client's environment are capped by the
/// SSH layer); an answer that would not fit is sent as an error instead.
pub(crate) const FRAME_CAP: usize = 64 * 1024;

/// The most descriptors a call may carry (`Accept`'s listener is the only one
/// today).
pub(crate) const MAX_CALL_FDS: usize = 4;

/// The most descriptors an answer may carry: an `Accept`'s batch (the host
/// accepts at most 64 connections per call).
pub(crate) const MAX_ANSWER_FDS: usize = 64;

/// One datagram.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) enum Frame {
    /// Network process -> monitor: serve `request` (with `fds` descriptors).
    Call {
        id: u64,
        fds: usize,
        request: Request,
    },
    /// Monitor -> network process: the answer to call `id` (with `fds` descriptors).
    Answer {
        id: u64,
        fds: usize,
        answer: Result<Response, WireError>,
    },
    /// Monitor -> network process, unasked.
    Notice(Notice),
}

/// What the monitor tells the network process without being asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Notice {
    /// The configuration was reloaded; the monitor's copy of it, as data (its
    /// schema belongs to the process split), is the attached descriptor, so
    /// that no frame cap bounds a configuration's size.
    Reload,
    /// Stop accepting, close the connections, exit.
    Shutdown,
}

impl Notice {
    /// How many descriptors it carries.
    fn fds(&self) -> usize {
        match self {
            Notice::Reload => 1,
            Notice::Shutdown => 0,
        }
    }
}

/// A [`HostError`] as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

/// Which [`HostError`] a [`WireError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ErrorKind {
    Os { errno: i32 },
    Io { errno: Option<i32> },
    NoSuchUser,
    NotPermitted,
    Busy,
    TimedOut { millis: u64 },
    SessionFatal,
    Link,
}

impl From<&HostError> for WireError {
    fn from(e: &HostError) -> WireError {
        let (kind, message) = match e {
            HostError::Os { what, source } => (
                ErrorKind::Os {
                    errno: *source as i32,
                },
                what.clone(),
            ),
            HostError::Io(io) => (
                ErrorKind::Io {
                    errno: io.raw_os_error(),
                },
                io.to_string(),
            ),
            HostError::NoSuchUser(name) => (ErrorKind::NoSuchUser, name.clone()),
            HostError::NotPermitted(m) => (ErrorKind::NotPermitted, m.clone()),
            HostError::Busy(m) => (ErrorKind::Busy, m.clone()),
            HostError::TimedOut(d) => (
                ErrorKind::TimedOut {
                    millis: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                },
                String::new(),
            ),
            HostError::SessionFatal(m) => (ErrorKind::SessionFatal, m.clone()),
            HostError::Link(m) => (ErrorKind::Link, m.clone()),
        };
        WireError { kind, message }
    }
}

impl From<WireError> for HostError {
    fn from(e: WireError) -> HostError {
        let WireError { kind, message } = e;
        match kind {
            ErrorKind::Os { errno } => HostError::Os {
                what: message,
                source: nix::Error::from_raw(errno),
            },
            ErrorKind::Io { errno } => {
                let kind = errno.map_or(std::io::ErrorKind::Other, |n| {
                    std::io::Error::from_raw_os_error(n).kind()
                });
                HostError::Io(std::io::Error::new(kind, message))
            }
            ErrorKind::NoSuchUser => HostError::NoSuchUser(message),
            ErrorKind::NotPermitted => HostError::NotPermitted(message),
            ErrorKind::Busy => HostError::Busy(message),
            ErrorKind::TimedOut { millis } => HostError::TimedOut(Duration::from_millis(millis)),
            ErrorKind::SessionFatal => HostError::SessionFatal(message),
            ErrorKind::Link => HostError::Link(message),
        }
    }
}

/// Why a datagram is not a frame the receiver takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProtocolError {
    #[error("frame longer than {FRAME_CAP} bytes")]
    Oversize,
    #[error("frame is not JSON of the protocol: {0}")]
    Garbage(String),
    #[error("{got} descriptors in one frame (at most {max})")]
    TooManyFds { got: usize, max: usize },
    #[error("frame says {said} descriptors, {got} came")]
    FdCount { said: usize, got: usize },
    #[error("a {0} frame is not for this side")]
    WrongKind(&'static str),
    #[error("descriptors were cut off")]
    FdsTruncated,
}

impl Frame {
    /// Its name, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Frame::Call { .. } => "Call",
            Frame::Answer { .. } => "Answer",
            Frame::Notice(_) => "Notice",
        }
    }

    /// How many descriptors it says it carries.
    fn fds(&self) -> usize {
        match self {
            Frame::Call { fds, .. } | Frame::Answer { fds, .. } => *fds,
            Frame::Notice(n) => n.fds(),
        }
    }

    /// The most descriptors a frame of its kind may carry.
    fn max_fds(&self) -> usize {
        match self {
            Frame::Call { .. } => MAX_CALL_FDS,
            Frame::Answer { .. } => MAX_ANSWER_FDS,
            Frame::Notice(_) => 1,
        }
    }

    fn check_fds(&self) -> Result<(), ProtocolError> {
        if self.fds() > self.max_fds() {
            return Err(ProtocolError::TooManyFds {
                got: self.fds(),
                max: self.max_fds(),
            });
        }
        Ok(())
    }
}

/// The bytes of `frame` (one datagram), checked against the cap.
pub(crate) fn encode(frame: &Frame) -> Result<Vec<u8>, ProtocolError> {
    let bytes = serde_json::to_vec(frame).map_err(|e| garbage(&e))?;
    if bytes.len() > FRAME_CAP {
        return Err(ProtocolError::Oversize);
    }
    frame.check_fds()?;
    Ok(bytes)
}

/// serde_json's own messages quote the input ("invalid type: string \"...\""),
/// which may be a password: the log gets the class and the place only.
fn garbage(e: &serde_json::Error) -> ProtocolError {
    ProtocolError::Garbage(format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    ))
}

/// The frame in one datagram of `bytes` that came with `fds` descriptors.
pub(crate) fn decode(bytes: &[u8], fds: usize) -> Result<Frame, ProtocolError> {
    if bytes.len() > FRAME_CAP {
        return Err(ProtocolError::Oversize);
    }
    if fds > MAX_ANSWER_FDS {
        return Err(ProtocolError::TooManyFds {
            got: fds,
            max: MAX_ANSWER_FDS,
        });
    }
    let frame: Frame = serde_json::from_slice(bytes).map_err(|e| garbage(&e))?;
    frame.check_fds()?;
    if frame.fds() != fds {
        return Err(ProtocolError::FdCount {
            said: frame.fds(),
            got: fds,
        });
    }
    Ok(frame)
}
