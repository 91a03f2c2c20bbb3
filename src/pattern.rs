//! OpenSSH's pattern language (`match.c`), shared by `Match`, `AllowUsers`/`DenyUsers`,
//! and the `from=` option of authorized_keys, so that one list means the same thing
//! everywhere an admin writes it.

use std::net::IpAddr;

/// Outcome of testing a comma-separated pattern list, as OpenSSH's `match_pattern_list`:
/// a negated entry that matches overrides every positive one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMatch {
    /// No entry matched.
    None,
    /// A positive entry matched and no negated one did.
    Positive,
    /// A negated (`!pattern`) entry matched: the caller must deny.
    Negated,
}

impl ListMatch {
    /// True only for a positive match, which is what every caller grants on.
    pub fn is_positive(self) -> bool {
        self == ListMatch::Positive
    }
}

/// Glob match with `*` (any run) and `?` (any one character), iterative so that a
/// hostile pattern cannot make it recurse deeply.
pub fn match_pattern(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut si, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        // `*` first: a `*` in the subject must not match the pattern's `*` as a
        // literal (found by fuzz/: "*" did not match "**").
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            si += 1;
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Match `s` against a comma-separated list of glob patterns, each optionally negated
/// with `!`. `lowercase` folds `s` (hostnames are case-insensitive, user names are not).
pub fn match_pattern_list(s: &str, list: &str, lowercase: bool) -> ListMatch {
    let s = if lowercase {
        s.to_ascii_lowercase()
    } else {
        s.to_string()
    };
    let mut got = ListMatch::None;
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (negated, pat) = match entry.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        let pat = if lowercase {
            pat.to_ascii_lowercase()
        } else {
            pat.to_string()
        };
        if match_pattern(&s, &pat) {
            if negated {
                return ListMatch::Negated;
            }
            got = ListMatch::Positive;
        }
    }
    got
}

/// Parse `addr/len` (or a bare address, as a host route) into a network.
pub fn parse_cidr(entry: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match entry.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (entry, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max)?,
        None => max,
    };
    Some((ip, len))
}

/// Whether `ip` lies in the network `net/len`; families never mix, except that an
/// IPv4-mapped IPv6 address is compared as the IPv4 address it carries.
pub fn cidr_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            (u32::from(n) & mask) == (u32::from(a) & mask)
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            (u128::from(n) & mask) == (u128::from(a) & mask)
        }
        _ => false,
    }
}

/// One entry of an address list as OpenSSH's `addr_pton_cidr` reads it: a network
/// (`Ok(Some)`) when the part before any `/` is an address; `Ok(None)` when it is
/// not an address at all (then it is a glob against the textual address);
/// `Err` when it is an address with an impossible prefix length or with bits set
/// beyond the prefix (`10.0.0.0/99`, `10.0.0.1/8`): a malformed entry.
fn address_entry(entry: &str) -> Result<Option<(IpAddr, u8)>, String> {
    let bad = || format!("invalid network \"{entry}\"");
    let (addr, len) = match entry.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (entry, None),
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return Ok(None);
    };
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        // sshd reads the length with strtonum; a non-number makes the entry a glob.
        Some(l) => match l.parse::<i32>() {
            Ok(n) if n >= 0 => u8::try_from(n).ok().filter(|n| *n <= max).ok_or_else(bad)?,
            _ => return Ok(None),
        },
    };
    let host_bits_clear = match ip {
        IpAddr::V4(a) => len == 32 || u32::from(a) & (u32::MAX >> len) == 0,
        IpAddr::V6(a) => len == 128 || u128::from(a) & (u128::MAX >> len) == 0,
    };
    if !host_bits_clear {
        return Err(bad());
    }
    Ok(Some((ip, len)))
}

/// OpenSSH's `addr_match_list`: entries are CIDR networks when they parse as such and
/// glob patterns against the textual address otherwise. `Err` means the list itself is
/// malformed (an empty entry, or a network that cannot be: see `address_entry`);
/// every caller must then deny, as sshd does, and never read it as "no match".
pub fn match_address_list(ip: IpAddr, list: &str) -> Result<ListMatch, String> {
    let text = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_else(|| v6.to_string()),
        v4 => v4.to_string(),
    };
    // The whole list is checked first: a malformed entry anywhere voids it, even
    // after an entry that matched.
    let mut entries = Vec::new();
    for entry in list.split(',').map(str::trim) {
        let (negated, pat) = match entry.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        if pat.is_empty() {
            return Err(format!("empty entry in address list \"{list}\""));
        }
        entries.push((negated, pat, address_entry(pat)?));
    }
    let mut got = ListMatch::None;
    for (negated, pat, net) in entries {
        let hit = match net {
            Some((net, len)) => cidr_contains(net, len, ip),
            None => match_pattern(&text, pat),
        };
        if hit {
            if negated {
                return Ok(ListMatch::Negated);
            }
            got = ListMatch::Positive;
        }
    }
    Ok(got)
}

/// OpenSSH's `match_host_and_ip`: a list may name hosts or addresses; a negated hit on
/// either denies. `Err` for a malformed address list, which callers must treat as a
/// denial (and log).
///
/// The unspecified address stands for sshd's `UNKNOWN` peer (inetd mode on pipes;
/// no real peer has it): the list is still checked, but no address pattern matches
/// it, negated or not, as sshd's `addr_match_list` matches nothing for an address
/// it cannot parse. Only host patterns (`*`, `UNKNOWN`) can.
pub fn match_host_and_ip(host: &str, ip: IpAddr, list: &str) -> Result<ListMatch, String> {
    let by_ip = match match_address_list(ip, list)? {
        _ if ip.is_unspecified() => ListMatch::None,
        m => m,
    };
    let by_host = match_pattern_list(host, list, true);
    Ok(
        if by_ip == ListMatch::Negated || by_host == ListMatch::Negated {
            ListMatch::Negated
        } else if by_ip == ListMatch::Positive || by_host == ListMatch::Positive {
            ListMatch::Positive
        } else {
            ListMatch::None
        },
    )
}

/// OpenSSH's `match_user`: a single pattern, either `user` or `user@host`, where the host
/// part (after the last `@`) is matched as in [`match_host_and_ip`]. `Err` when that
/// host part is malformed: the caller must deny.
pub fn match_user(user: &str, host: &str, ip: IpAddr, pattern: &str) -> Result<bool, String> {
    match pattern.rsplit_once('@') {
        Some((pu, ph)) => {
            if !match_pattern(user, pu) {
                return Ok(false);
            }
            Ok(match_host_and_ip(host, ip, ph)? == ListMatch::Positive)
        }
        None => Ok(match_pattern(user, pattern)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unknown_peer_matches_no_address_pattern() {
        let unknown = IpAddr::from([0, 0, 0, 0]);
        let m = |list| match_host_and_ip("UNKNOWN", unknown, list);
        assert_eq!(m("0.0.0.0/0").unwrap(), ListMatch::None);
        assert_eq!(m("0.0.0.0").unwrap(), ListMatch::None);
        assert_eq!(m("*,!10.0.0.0/8").unwrap(), ListMatch::Positive);
        assert_eq!(m("UNKNOWN").unwrap(), ListMatch::Positive);
        assert!(m("10.0.0.0/99").is_err(), "still fails closed");
        assert!(!match_user("u", "UNKNOWN", unknown, "u@0.0.0.0/0").unwrap());
    }

    #[test]
    fn globs() {
        assert!(match_pattern("alice", "a*"));
        assert!(match_pattern("alice", "a?ice"));
        assert!(match_pattern("", "*"));
        assert!(!match_pattern("bob", "a*"));
        assert!(match_pattern("a.b.c", "*.c"));
        assert!(!match_pattern("abc", "ab"));
    }

    #[test]
    fn lists_with_negation() {
        assert_eq!(
            match_pattern_list("alice", "bob,al*", false),
            ListMatch::Positive
        );
        assert_eq!(
            match_pattern_list("alice", "*,!alice", false),
            ListMatch::Negated
        );
        assert_eq!(
            match_pattern_list("carol", "bob,al*", false),
            ListMatch::None
        );
        assert_eq!(
            match_pattern_list("HOST", "host", true),
            ListMatch::Positive
        );
    }

    #[test]
    fn addresses() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            match_address_list(ip, "10.0.0.0/8").unwrap(),
            ListMatch::Positive
        );
        assert_eq!(
            match_address_list(ip, "10.1.*").unwrap(),
            ListMatch::Positive
        );
        assert_eq!(
            match_address_list(ip, "10.0.0.0/8,!10.1.2.0/24").unwrap(),
            ListMatch::Negated
        );
        assert!(match_address_list(ip, "10.0.0.0/99").is_err());
        // sshd refuses a network with bits beyond its prefix and empty entries.
        assert!(match_address_list(ip, "10.0.0.1/8").is_err());
        assert!(match_address_list(ip, "10.0.0.0/8,").is_err());
        assert!(match_address_list(ip, "!").is_err());
        // Not an address before the slash: a glob, as in sshd (never matches).
        assert_eq!(match_address_list(ip, "host/8").unwrap(), ListMatch::None);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(
            match_address_list(mapped, "127.0.0.0/8").unwrap(),
            ListMatch::Positive
        );
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(
            match_address_list(v6, "::1/128").unwrap(),
            ListMatch::Positive
        );
    }

    #[test]
    fn users_with_hosts() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            match_user("alice", "localhost", ip, "alice@127.0.0.0/8"),
            Ok(true)
        );
        assert_eq!(
            match_user("alice", "localhost", ip, "alice@localhost"),
            Ok(true)
        );
        assert_eq!(
            match_user("alice", "localhost", ip, "alice@10.0.0.0/8"),
            Ok(false)
        );
        assert_eq!(match_user("alice", "localhost", ip, "al*"), Ok(true));
        assert!(match_user("alice", "localhost", ip, "alice@127.0.0.0/33").is_err());
        // Another user's malformed host part is never looked at, as in sshd.
        assert_eq!(
            match_user("bob", "localhost", ip, "alice@127.0.0.0/33"),
            Ok(false)
        );
    }

    #[test]
    fn a_malformed_negation_never_admits() {
        // sshd denies 127.0.0.1 here; reading the bad entry as "no match" let it in.
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let list = "*,!10.0.0.0/99,!127.0.0.0/8";
        assert!(match_host_and_ip("localhost", ip, list).is_err());
        assert_eq!(
            match_host_and_ip("localhost", ip, "*,!10.0.0.0/8").unwrap(),
            ListMatch::Positive
        );
    }
}
