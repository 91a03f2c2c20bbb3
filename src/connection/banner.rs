//! The client's identification line, watched on its way to russh for one case
//! russh does not answer as sshd does: an SSH-1 client (`SSH-1.5-...`). sshd
//! replies "Protocol major versions differ." in clear text and closes, and logs
//! why; russh only drops the connection. `SSH-1.99-` means "1 and 2" and is
//! accepted, as by sshd. Lines russh refuses for other reasons are left to it.

/// How long an identification line may be (RFC 4253 section 4.2).
const MAX_LINE: usize = 255;

/// What sshd writes to a client whose protocol major version it does not speak.
pub(crate) const REPLY: &[u8] = b"Protocol major versions differ.\r\n";

/// The first line's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not a whole line yet.
    Reading,
    /// Passed on to russh (a version it speaks, or something it judges itself).
    Pass,
    /// An identification with this major version, which we do not speak.
    Refuse(u32),
}

/// Watches the bytes of the first line as they are read.
#[derive(Default)]
pub(crate) struct Watch {
    line: Vec<u8>,
}

impl Watch {
    /// Feed newly read bytes; decides once the first line is complete.
    pub(crate) fn feed(&mut self, new: &[u8]) -> Verdict {
        let room = MAX_LINE.saturating_sub(self.line.len());
        let end = new.iter().position(|&b| b == b'\n');
        let take = end.map_or(new.len(), |e| e + 1).min(room);
        self.line.extend_from_slice(&new[..take]);
        if end.is_none_or(|e| e >= take) {
            // An overlong line is russh's to refuse.
            return if self.line.len() >= MAX_LINE {
                Verdict::Pass
            } else {
                Verdict::Reading
            };
        }
        judge(&self.line)
    }
}

/// sshd's reading of `SSH-<major>.<minor>-<version>`: a major version other than
/// 2 is refused, except 1.99.
fn judge(line: &[u8]) -> Verdict {
    let Some(rest) = line.strip_prefix(b"SSH-") else {
        return Verdict::Pass;
    };
    let number = |s: &[u8]| -> Option<(u32, usize)> {
        let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
        let v = std::str::from_utf8(&s[..n]).ok()?.parse().ok()?;
        Some((v, n))
    };
    let Some((major, n)) = number(rest) else {
        return Verdict::Pass;
    };
    let Some(rest) = rest[n..].strip_prefix(b".") else {
        return Verdict::Pass;
    };
    let Some((minor, n)) = number(rest) else {
        return Verdict::Pass;
    };
    let version = rest[n..].strip_prefix(b"-").unwrap_or_default();
    // sshd also wants some software version after the dash.
    if version.is_empty() || matches!(version, [b'\r', b'\n'] | [b'\n']) {
        return Verdict::Pass;
    }
    match (major, minor) {
        (2, _) | (1, 99) => Verdict::Pass,
        (m, _) => Verdict::Refuse(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(line: &[u8]) -> Verdict {
        Watch::default().feed(line)
    }

    #[test]
    fn only_protocol_one_is_refused() {
        assert_eq!(whole(b"SSH-1.5-Test\r\n"), Verdict::Refuse(1));
        assert_eq!(whole(b"SSH-1.0-x\n"), Verdict::Refuse(1));
        assert_eq!(whole(b"SSH-3.0-x\r\n"), Verdict::Refuse(3));
        assert_eq!(whole(b"SSH-2.0-OpenSSH_9.2\r\n"), Verdict::Pass);
        assert_eq!(whole(b"SSH-1.99-old\r\n"), Verdict::Pass);
        // Malformed lines are russh's to refuse.
        assert_eq!(whole(b"SSH-1.5\r\n"), Verdict::Pass);
        assert_eq!(whole(b"SSH-x.5-y\r\n"), Verdict::Pass);
        assert_eq!(whole(b"GET / HTTP/1.0\r\n"), Verdict::Pass);
    }

    #[test]
    fn decides_when_the_line_is_whole() {
        let mut w = Watch::default();
        assert_eq!(w.feed(b"SSH-1."), Verdict::Reading);
        assert_eq!(w.feed(b"5-Te"), Verdict::Reading);
        assert_eq!(w.feed(b"st\r\nmore"), Verdict::Refuse(1));
        let mut w = Watch::default();
        assert_eq!(w.feed(&[b'a'; 300]), Verdict::Pass, "overlong");
    }
}
