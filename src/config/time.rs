//! sshd_config(5) TIME FORMATS, shared by every time-valued keyword so that `5m` means
//! the same thing in `LoginGraceTime`, `IdleTimeout` and `ChannelTimeout`.

use std::time::Duration;

/// Parse `300`, `300s`, `5m`, `1h30m`, `2d`, `1w` (qualifiers case-insensitive, may be
/// combined). Like OpenSSH's `convtime`, the total must fit in a signed 32-bit number of
/// seconds, so a value sshd rejects is rejected here too.
pub fn parse_time(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let mult = match rest.bytes().next() {
            None => 1,
            Some(c) => {
                let mult = match c.to_ascii_lowercase() {
                    b's' => 1,
                    b'm' => 60,
                    b'h' => 3600,
                    b'd' => 86_400,
                    b'w' => 604_800,
                    _ => return None,
                };
                // Only now is `c` known to be one ASCII byte: slicing past a
                // multi-byte character would panic (found by fuzz/ on `6\u{e9}`).
                rest = &rest[1..];
                mult
            }
        };
        total = total.checked_add(n.checked_mul(mult)?)?;
        if total > i64::from(i32::MAX) {
            return None;
        }
    }
    u64::try_from(total).ok().map(Duration::from_secs)
}

/// The shortest spelling `parse_time` reads back to the same value (`300` -> `5m`,
/// `5400` -> `1h30m`), so `-T` shows `ChannelTimeout` rules the way admins write them.
pub fn format_time(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, name) in [
        (604_800, 'w'),
        (86_400, 'd'),
        (3600, 'h'),
        (60, 'm'),
        (1, 's'),
    ] {
        if secs >= unit {
            out.push_str(&(secs / unit).to_string());
            out.push(name);
            secs %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> Option<u64> {
        parse_time(s).map(|d| d.as_secs())
    }

    #[test]
    fn formats() {
        assert_eq!(secs("300"), Some(300));
        assert_eq!(secs("300s"), Some(300));
        assert_eq!(secs("5m"), Some(300));
        assert_eq!(secs("5M"), Some(300));
        assert_eq!(secs("1h30m"), Some(5400));
        assert_eq!(secs("1H30M"), Some(5400));
        assert_eq!(secs("2d"), Some(172_800));
        assert_eq!(secs("1w"), Some(604_800));
        assert_eq!(secs("0"), Some(0));
        assert_eq!(secs("1m1"), Some(61));
    }

    #[test]
    fn invalid() {
        for bad in [
            "",
            "banana",
            "5x",
            "m",
            "-5",
            "5 m",
            "1.5h",
            "99999999999",
            "4000w",
        ] {
            assert_eq!(secs(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn round_trip() {
        for s in [1, 59, 60, 300, 5400, 86_400, 90_061, 604_800] {
            let d = Duration::from_secs(s);
            assert_eq!(parse_time(&format_time(d)), Some(d));
        }
        assert_eq!(format_time(Duration::from_secs(5400)), "1h30m");
    }
}
