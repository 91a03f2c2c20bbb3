//! `rsshd sessions` and `rsshd kill`: a small client of the control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::protocol::{Command, Request, Response, SessionInfo, VERSION};

/// Why the client could not get an answer, worded for the admin at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no rsshd is listening on {0} (is the daemon running? see ControlSocket)")]
    NotRunning(String),
    #[error("access to {0} denied: only root and the daemon's user may use it")]
    Denied(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the daemon answered: {0}")]
    Daemon(String),
    #[error("unreadable answer from the daemon: {0}")]
    Protocol(String),
}

/// Send one request and read the answer.
pub fn request(socket: &Path, command: Command) -> Result<Response, ClientError> {
    let name = socket.display().to_string();
    let io = |source: std::io::Error| ClientError::Io {
        path: name.clone(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning(name.clone())
        }
        std::io::ErrorKind::PermissionDenied => ClientError::Denied(name.clone()),
        _ => io(e),
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(io)?;
    let req = Request {
        version: VERSION,
        command,
    };
    let mut text = serde_json::to_string(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    text.push('\n');
    // A daemon that refuses us may close before reading everything; its answer
    // still says why, so read it whatever the write did.
    let written = stream.write_all(text.as_bytes());
    let mut line = String::new();
    let read = BufReader::new(&stream).read_line(&mut line);
    if line.is_empty() {
        written.map_err(io)?;
        read.map_err(io)?;
    }
    let resp: Response =
        serde_json::from_str(&line).map_err(|e| ClientError::Protocol(e.to_string()))?;
    if !resp.ok {
        let err = resp.error.unwrap_or_default();
        if err.starts_with("permission denied") {
            return Err(ClientError::Denied(name));
        }
        return Err(ClientError::Daemon(err));
    }
    Ok(resp)
}

/// `w`'s IDLE format: `4.00s` under a minute, `MM:SS` under an hour, `HH:MMm`
/// under a day, then `Ndays`.
pub fn w_duration(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 60.0 {
        format!("{s:.2}s")
    } else if s < 3600.0 {
        let t = s as u64;
        format!("{}:{:02}", t / 60, t % 60)
    } else if s < 86400.0 {
        let t = s as u64;
        format!("{}:{:02}m", t / 3600, (t % 3600) / 60)
    } else {
        format!("{}days", (s / 86400.0) as u64)
    }
}

/// `LOGIN@` as `w` shows it: `HH:MM` for today, `DDMonYY` before.
fn login_at(unix: u64) -> String {
    use crate::host::local_time::format;
    let t = i64::try_from(unix).unwrap_or(i64::MAX);
    let now = i64::try_from(super::server::unix_now()).unwrap_or(i64::MAX);
    if format(t, c"%Y%j") == format(now, c"%Y%j") {
        format(t, c"%H:%M")
    } else {
        format(t, c"%d%b%y")
    }
}

/// The `w`-like table.
pub fn table(rows: &[SessionInfo]) -> String {
    let mut out = format!(
        "{:<5} {:<12} {:<8} {:<20} {:<8} {:>8} {:>8}  {}\n",
        "ID", "USER", "TTY", "FROM", "LOGIN@", "IDLE", "LIMIT", "WHAT"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<5} {:<12} {:<8} {:<20} {:<8} {:>8} {:>8}  {}\n",
            r.id,
            r.user.as_deref().unwrap_or("(auth)"),
            r.tty.as_deref().unwrap_or("-"),
            r.from,
            login_at(r.login),
            w_duration(r.idle_seconds),
            r.limit_seconds
                .map(w_duration)
                .unwrap_or_else(|| "-".into()),
            r.what.as_deref().unwrap_or("-"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_reads_like_w() {
        assert_eq!(w_duration(4.0), "4.00s");
        assert_eq!(w_duration(299.0), "4:59");
        assert_eq!(w_duration(3600.0 + 120.0), "1:02m");
        assert_eq!(w_duration(3.0 * 86400.0), "3days");
    }
}
