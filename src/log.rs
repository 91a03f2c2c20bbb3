//! Where log lines go, and the OpenSSH wording of the ones tooling depends on.
//!
//! fail2ban, logwatch and people grep sshd's exact sentences, so every line that
//! OpenSSH also logs is produced here, word for word, and nowhere else.

use std::ffi::CString;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Once;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::prelude::*;

/// Where to send log lines: stderr for `-D`/`-e`/`-d` and for the embedded-defaults
/// quick start, syslog (and so journald) for a daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Stderr,
    Syslog,
}

static INIT: Once = Once::new();

/// Install the global subscriber once; `debug` lowers the level as `sshd -d` does.
pub fn init(sink: Sink, debug: bool) {
    INIT.call_once(|| {
        let level = if debug { Level::DEBUG } else { Level::INFO };
        let filter = tracing_subscriber::filter::Targets::new()
            .with_target("rsshd", level)
            .with_default(if debug { Level::INFO } else { Level::WARN });
        match sink {
            Sink::Stderr => {
                let layer = tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .with_level(false)
                    .without_time()
                    .with_filter(filter);
                let _ = tracing_subscriber::registry().with(layer).try_init();
            }
            Sink::Syslog => {
                let ident = c"rsshd";
                // SAFETY: `ident` is a 'static C string, as openlog requires.
                unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_AUTH) };
                let _ = tracing_subscriber::registry()
                    .with(SyslogLayer.with_filter(filter))
                    .try_init();
            }
        }
    });
}

/// Sends each event's message to syslog(3) with a priority from its level.
struct SyslogLayer;

struct MessageText(String);

impl Visit for MessageText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }
}

impl<S: Subscriber> Layer<S> for SyslogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut text = MessageText(String::new());
        event.record(&mut text);
        let priority = match *event.metadata().level() {
            Level::ERROR => libc::LOG_ERR,
            Level::WARN => libc::LOG_WARNING,
            Level::INFO => libc::LOG_INFO,
            _ => libc::LOG_DEBUG,
        };
        let Ok(msg) = CString::new(text.0.replace('\0', "")) else {
            return;
        };
        // SAFETY: both pointers are valid NUL-terminated strings; "%s" keeps the
        // message from being read as a format.
        unsafe { libc::syslog(priority, c"%s".as_ptr(), msg.as_ptr()) };
    }
}

/// `ADDR port PORT`, the way sshd names a peer (IPv4-mapped IPv6 shown as IPv4).
pub fn peer(addr: &SocketAddr) -> String {
    format!("{} port {}", display_ip(addr), addr.port())
}

/// An address as sshd prints it.
pub fn display_ip(addr: &SocketAddr) -> String {
    match addr.ip() {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        v4 => v4.to_string(),
    }
}

/// Human form of a duration for log lines and user messages: `5m`, `1h30m`, `45s`.
pub fn human_duration(d: std::time::Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            let _ = write!(out, "{}{}", secs / len, unit);
            secs %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_read_like_config() {
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human_duration(Duration::from_secs(3)), "3s");
        assert_eq!(human_duration(Duration::from_secs(0)), "0s");
    }

    #[test]
    fn peers_read_like_sshd() {
        let a: SocketAddr = "[::ffff:127.0.0.1]:51234".parse().unwrap();
        assert_eq!(peer(&a), "127.0.0.1 port 51234");
    }
}
