//! Where log lines go, and the OpenSSH wording of the ones tooling depends on.
//!
//! fail2ban, logwatch and people grep sshd's exact sentences, so every line that
//! OpenSSH also logs is produced here, word for word, and nowhere else.

mod russh_lines;

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, OnceLock};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::Context;
use tracing_subscriber::prelude::*;

use crate::config::LogLevel;

/// Where to send log lines: stderr for `-D`/`-e`/`-d` and for the embedded-defaults
/// quick start, a file for `-E` (appended, in stderr's format), syslog (and so
/// journald) for a daemon.
#[derive(Debug)]
pub enum Sink {
    Stderr,
    File(std::fs::File),
    /// The C library's syslog client, handed in by the caller (`host::syslog`
    /// holds it: this module stays below `host`, which logs through it).
    Syslog(Syslog),
    /// The network process of a split daemon: every line goes to the monitor over
    /// this link (one end of [`monitor_link`]), and the monitor writes it where
    /// its own lines go ([`forward_from`]). As sshd's privilege-separated child
    /// does: a confined process cannot reconnect to syslog after its socket
    /// breaks (a restarted syslog daemon), and needs no log file of its own.
    Monitor(OwnedFd),
}

/// The two calls of a syslog client: connect now with an ident and facility,
/// and send one line at a priority.
#[derive(Debug, Clone, Copy)]
pub struct Syslog {
    pub open: fn(&'static std::ffi::CStr, libc::c_int),
    pub write: fn(libc::c_int, &str),
}

/// Longest line the network process forwards, in bytes (a longer one is cut).
const FORWARD_MAX: usize = 8 * 1024;

/// Open `-E`'s file as sshd does: append, create with mode 0600.
pub fn open_log_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// The installed output: the subscriber's, and the monitor's forwarding thread's.
static OUTPUT: OnceLock<Output> = OnceLock::new();

/// Install the global subscriber once. `level` is sshd's LogLevel (from `-d`/`-q`
/// or the config); `facility` is SyslogFacility, used by the syslog sink.
pub fn init(sink: Sink, level: LogLevel, facility: &str) {
    let mut installed = false;
    let out = OUTPUT.get_or_init(|| {
        installed = true;
        match sink {
            Sink::Stderr => Output::Stderr,
            Sink::File(f) => Output::File(Mutex::new(f)),
            Sink::Monitor(link) => Output::Monitor(link),
            Sink::Syslog(client) => {
                (client.open)(c"rsshd", facility_code(facility));
                Output::Syslog(client)
            }
        }
    });
    if installed {
        let filter = Targets::new()
            .with_target("rsshd", own_level(level))
            .with_default(library_level(level));
        let _ = tracing_subscriber::registry()
            .with(LineLayer { out }.with_filter(filter))
            .try_init();
    }
}

/// The link between a split daemon's monitor and its network process for log
/// lines: a blocking SOCK_SEQPACKET pair (one line per message; a network process
/// that logs faster than the monitor writes waits, as it would on syslog's
/// socket), both ends close-on-exec.
pub fn monitor_link() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// The monitor's side of [`Sink::Monitor`]: a thread that writes each line the
/// network process sends on `link` where this process's own lines go, until the
/// network process is gone. The lines are not trusted: control characters are
/// replaced, so a compromised network process cannot make one message read as
/// several lines of a log file (what it can write is still any single line).
pub fn forward_from(link: OwnedFd) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("rsshd-netlog".into())
        .spawn(move || {
            let mut buf = vec![0u8; FORWARD_MAX + 1];
            loop {
                match recv(link.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                    Ok(0) => break,
                    Ok(n) => {
                        let (level, text) = decode_forwarded(&buf[..n]);
                        if let Some(out) = OUTPUT.get() {
                            out.write(level, &text);
                        }
                    }
                    Err(Errno::EINTR) => continue,
                    Err(_) => break,
                }
            }
        })?;
    Ok(())
}

/// One forwarded line: its level as one byte, then the text.
fn encode_forwarded(level: Level, msg: &str) -> Vec<u8> {
    let code = match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    };
    let mut end = msg.len().min(FORWARD_MAX - 1);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(end + 1);
    out.push(code);
    out.extend_from_slice(&msg.as_bytes()[..end]);
    out
}

fn decode_forwarded(bytes: &[u8]) -> (Level, String) {
    let level = match bytes.first() {
        Some(1) => Level::ERROR,
        Some(2) => Level::WARN,
        Some(3) => Level::INFO,
        Some(5) => Level::TRACE,
        _ => Level::DEBUG,
    };
    let text = String::from_utf8_lossy(bytes.get(1..).unwrap_or_default())
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect();
    (level, text)
}

/// rsshd's own lines: LogLevel as sshd reads it. VERBOSE has no level of its own
/// here (rsshd logs what sshd logs at VERBOSE at INFO).
fn own_level(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Quiet => LevelFilter::OFF,
        LogLevel::Fatal | LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Info | LogLevel::Verbose => LevelFilter::INFO,
        LogLevel::Debug1 | LogLevel::Debug2 | LogLevel::Debug3 => LevelFilter::DEBUG,
    }
}

/// Libraries (russh) speak only for warnings, unless debugging: then their debug
/// lines reach [`russh_lines`], which keeps the ones sshd's `-d` also shows.
fn library_level(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Quiet => LevelFilter::OFF,
        LogLevel::Fatal | LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Info | LogLevel::Verbose => LevelFilter::WARN,
        LogLevel::Debug1 | LogLevel::Debug2 | LogLevel::Debug3 => LevelFilter::DEBUG,
    }
}

/// syslog(3)'s facility for a SyslogFacility name (the config accepted only these).
fn facility_code(name: &str) -> libc::c_int {
    match name.to_ascii_uppercase().as_str() {
        "DAEMON" => libc::LOG_DAEMON,
        "USER" => libc::LOG_USER,
        "AUTHPRIV" => libc::LOG_AUTHPRIV,
        "LOCAL0" => libc::LOG_LOCAL0,
        "LOCAL1" => libc::LOG_LOCAL1,
        "LOCAL2" => libc::LOG_LOCAL2,
        "LOCAL3" => libc::LOG_LOCAL3,
        "LOCAL4" => libc::LOG_LOCAL4,
        "LOCAL5" => libc::LOG_LOCAL5,
        "LOCAL6" => libc::LOG_LOCAL6,
        "LOCAL7" => libc::LOG_LOCAL7,
        _ => libc::LOG_AUTH,
    }
}

enum Output {
    Stderr,
    File(Mutex<std::fs::File>),
    Syslog(Syslog),
    Monitor(OwnedFd),
}

/// Writes each event's message as one line, with sshd's level word in front where
/// sshd has one (`error: `, `debug1: `).
struct LineLayer {
    out: &'static Output,
}

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

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut text = MessageText(String::new());
        event.record(&mut text);
        let level = *event.metadata().level();
        let lines = if event.metadata().target().starts_with("rsshd") || level <= Level::INFO {
            vec![text.0]
        } else {
            // A library's debug line: only the few sshd's -d also shows, reworded;
            // the rest (per-packet traces, key material in Debug form) stays out.
            russh_lines::rewrite(&text.0)
        };
        for line in lines {
            self.out.write(level, &line);
        }
    }
}

impl Output {
    fn write(&self, level: Level, msg: &str) {
        let word = match level {
            Level::ERROR => "error: ",
            Level::DEBUG | Level::TRACE => "debug1: ",
            _ => "",
        };
        let prefix = if msg.starts_with(word) || matches!(self, Output::Monitor(_)) {
            ""
        } else {
            word
        };
        match self {
            Output::Monitor(link) => {
                // The monitor adds the level word, as for its own lines. Lost if
                // the monitor is gone (this process is then about to end).
                let line = encode_forwarded(level, msg);
                while let Err(Errno::EINTR) = send(link.as_raw_fd(), &line, MsgFlags::MSG_NOSIGNAL)
                {
                }
            }
            Output::Stderr => {
                let _ = writeln!(std::io::stderr().lock(), "{prefix}{msg}");
            }
            Output::File(f) => {
                // One write per line, so concurrent lines never interleave in an
                // O_APPEND file.
                let line = format!("{prefix}{msg}\n");
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            Output::Syslog(client) => {
                let priority = match level {
                    Level::ERROR => libc::LOG_ERR,
                    Level::WARN => libc::LOG_WARNING,
                    Level::INFO => libc::LOG_INFO,
                    _ => libc::LOG_DEBUG,
                };
                (client.write)(priority, &format!("{prefix}{msg}"));
            }
        }
    }
}

/// `ADDR port PORT`, the way sshd names a peer (IPv4-mapped IPv6 shown as IPv4).
pub fn peer(addr: &SocketAddr) -> String {
    format!("{} port {}", display_ip(addr), addr.port())
}

/// An address as sshd prints it. The unspecified address stands for sshd's
/// `UNKNOWN` (a connection on pipes; see `connection::ConnContext`).
pub fn display_ip(addr: &SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        return "UNKNOWN".into();
    }
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
        let unknown: SocketAddr = "0.0.0.0:65535".parse().unwrap();
        assert_eq!(peer(&unknown), "UNKNOWN port 65535");
    }

    #[test]
    fn forwarded_lines_keep_their_level_and_cannot_forge_lines() {
        let (level, text) = decode_forwarded(&encode_forwarded(Level::WARN, "a\tb"));
        assert_eq!((level, text.as_str()), (Level::WARN, "a\tb"));
        // A second line (or a terminal escape) inside one message stays on its line.
        let (_, text) = decode_forwarded(&encode_forwarded(Level::INFO, "x\nFake line\x1b[2J"));
        assert_eq!(text, "x?Fake line?[2J");
        // Cut at the limit, on a character boundary.
        let long = "é".repeat(FORWARD_MAX);
        let bytes = encode_forwarded(Level::ERROR, &long);
        assert!(bytes.len() <= FORWARD_MAX);
        let (level, text) = decode_forwarded(&bytes);
        assert_eq!(level, Level::ERROR);
        assert!(text.chars().all(|c| c == 'é'), "cut inside a character");
        // Garbage from a compromised sender is still one line, at debug level.
        assert_eq!(decode_forwarded(&[9, 0xff]).0, Level::DEBUG);
        assert_eq!(decode_forwarded(&[]).1, "");
    }

    #[test]
    fn levels_follow_sshd_log_level() {
        assert_eq!(own_level(LogLevel::Quiet), LevelFilter::OFF);
        assert_eq!(own_level(LogLevel::Info), LevelFilter::INFO);
        assert_eq!(own_level(LogLevel::Debug3), LevelFilter::DEBUG);
        assert_eq!(library_level(LogLevel::Info), LevelFilter::WARN);
        assert_eq!(library_level(LogLevel::Quiet), LevelFilter::OFF);
        assert_eq!(facility_code("local3"), libc::LOG_LOCAL3);
        assert_eq!(facility_code("AUTH"), libc::LOG_AUTH);
    }
}
