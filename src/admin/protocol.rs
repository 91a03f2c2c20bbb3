//! The control socket's wire format: one JSON request line, one JSON response line.
//! Versioned so that a newer `rsshd sessions` can talk to an older daemon or say
//! clearly why not.

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Command {
    List,
    Kill { id: u64, reason: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub command: Command,
}

/// One row of `rsshd sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: u64,
    pub user: Option<String>,
    pub uid: Option<u32>,
    pub tty: Option<String>,
    pub from: String,
    pub port: u16,
    /// Unix time of login (of connection, before authentication).
    pub login: u64,
    pub authenticated: bool,
    /// Seconds since the last input.
    pub idle_seconds: f64,
    /// Seconds left before an idle disconnect, if one applies.
    pub limit_seconds: Option<f64>,
    /// Seconds left before the idle warning, if one is still to come.
    pub warning_in_seconds: Option<f64>,
    /// Seconds left before the next liveness probe.
    #[serde(default)]
    pub probe_in_seconds: Option<f64>,
    /// Seconds left before an UnusedConnectionTimeout disconnect.
    #[serde(default)]
    pub unused_limit_seconds: Option<f64>,
    /// Seconds left to authenticate (LoginGraceTime), before login.
    #[serde(default)]
    pub login_limit_seconds: Option<f64>,
    /// The foreground command of the session's terminal (or its command).
    pub what: Option<String>,
    /// The lifetime policy in force, as `keyword value` pairs like `rsshd -T`.
    pub policy: Vec<(String, String)>,
    /// The keys or certificates the login used (publickey), in order: their
    /// type and fingerprint, and a certificate's key ID, serial and CA.
    #[serde(default)]
    pub keys: Vec<crate::host::LoginKey>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<SessionInfo>,
}

impl Response {
    pub fn error(text: impl Into<String>) -> Self {
        Response {
            version: VERSION,
            ok: false,
            error: Some(text.into()),
            sessions: Vec::new(),
        }
    }

    pub fn ok(sessions: Vec<SessionInfo>) -> Self {
        Response {
            version: VERSION,
            ok: true,
            error: None,
            sessions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let r = Request {
            version: 1,
            command: Command::Kill {
                id: 7,
                reason: Some("bye".into()),
            },
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"version":1,"command":"kill","id":7,"reason":"bye"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        let l: Request = serde_json::from_str(r#"{"version":1,"command":"list"}"#).unwrap();
        assert_eq!(l.command, Command::List);
    }
}
