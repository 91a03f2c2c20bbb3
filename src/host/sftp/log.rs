//! internal-sftp's log, as sftp-server's: syslog with the `-f` facility and
//! ident `internal-sftp`, at the `-l` level (default ERROR, so only errors),
//! or the session's stderr with `-e`.
//!
//! sftp-server reconnects to `/dev/log` for every line, so inside a jail it logs
//! nothing unless the admin put a log socket in the jail. The helper instead
//! connects once, before entering the jail (`openlog` with `LOG_NDELAY`), and
//! keeps that socket: lines from jailed sessions reach syslog/journald with no
//! socket in the jail. If the syslog daemon restarts meanwhile, a jailed
//! session's later lines are lost (reconnecting would need `/dev/log`).

use std::io::Write;

use super::options::Level;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Log {
    level: Level,
    stderr: bool,
}

impl Log {
    /// Set up logging; call before entering the jail.
    pub(crate) fn open(level: Level, facility: libc::c_int, stderr: bool) -> Log {
        if !stderr && level > Level::Quiet {
            crate::host::syslog::open(c"internal-sftp", facility);
        }
        Log { level, stderr }
    }

    pub(crate) fn enabled(&self, level: Level) -> bool {
        level <= self.level && self.level > Level::Quiet
    }

    pub(crate) fn fatal(&self, msg: &str) {
        self.at(Level::Fatal, msg);
    }
    pub(crate) fn error(&self, msg: &str) {
        self.at(Level::Error, msg);
    }
    pub(crate) fn info(&self, msg: &str) {
        self.at(Level::Info, msg);
    }
    pub(crate) fn verbose(&self, msg: &str) {
        self.at(Level::Verbose, msg);
    }

    /// One line in `log.c`'s shape: on syslog `error: `/`fatal: `/`debugN: ` in
    /// front, on stderr only the debug words and a CR LF after.
    pub(crate) fn at(&self, level: Level, msg: &str) {
        if !self.enabled(level) {
            return;
        }
        let word = match level {
            Level::Fatal if !self.stderr => "fatal: ",
            Level::Error if !self.stderr => "error: ",
            Level::Debug1 => "debug1: ",
            Level::Debug2 => "debug2: ",
            Level::Debug3 => "debug3: ",
            _ => "",
        };
        let text = vis(&format!("{word}{msg}"));
        if self.stderr {
            let _ = std::io::stderr().write_all(format!("{text}\r\n").as_bytes());
            return;
        }
        let priority = match level {
            Level::Fatal => libc::LOG_CRIT,
            Level::Error => libc::LOG_ERR,
            Level::Info | Level::Verbose => libc::LOG_INFO,
            _ => libc::LOG_DEBUG,
        };
        // sftp-server's lines are at most 500 bytes.
        let mut end = text.len().min(500);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        crate::host::syslog::write(priority, &text[..end]);
    }
}

/// Control characters as octal escapes (and the backslash doubled), as sshd's
/// `strnvis` does, so a file name cannot forge a log line.
fn vis(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\{:03o}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_filter() {
        let l = Log {
            level: Level::Info,
            stderr: true,
        };
        assert!(l.enabled(Level::Error) && l.enabled(Level::Info));
        assert!(!l.enabled(Level::Verbose));
        let q = Log {
            level: Level::Quiet,
            stderr: true,
        };
        assert!(!q.enabled(Level::Fatal));
    }

    #[test]
    fn names_cannot_break_lines() {
        assert_eq!(vis("open \"/a\nb\\c\""), "open \"/a\\012b\\\\c\"");
    }
}
