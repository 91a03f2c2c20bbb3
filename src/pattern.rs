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

/// OpenSSH's `addr_match_list`: entries are CIDR networks when they parse as such and
/// glob patterns against the textual address otherwise. `Err` means the list itself is
/// malformed (a `/` entry that is not a network), which callers report as a config error.
pub fn match_address_list(ip: IpAddr, list: &str) -> Result<ListMatch, String> {
    let text = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_else(|| v6.to_string()),
        v4 => v4.to_string(),
    };
    let mut got = ListMatch::None;
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (negated, pat) = match entry.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        let hit = if pat.contains('/') {
            let (net, len) = parse_cidr(pat).ok_or_else(|| format!("invalid network \"{pat}\""))?;
            cidr_contains(net, len, ip)
        } else {
            match_pattern(&text, pat)
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
/// either denies.
pub fn match_host_and_ip(host: &str, ip: IpAddr, list: &str) -> ListMatch {
    let by_ip = match_address_list(ip, list).unwrap_or(ListMatch::None);
    let by_host = match_pattern_list(host, list, true);
    if by_ip == ListMatch::Negated || by_host == ListMatch::Negated {
        ListMatch::Negated
    } else if by_ip == ListMatch::Positive || by_host == ListMatch::Positive {
        ListMatch::Positive
    } else {
        ListMatch::None
    }
}

/// OpenSSH's `match_user`: a single pattern, either `user` or `user@host`, where the host
/// part is matched as in [`match_host_and_ip`].
pub fn match_user(user: &str, host: &str, ip: IpAddr, pattern: &str) -> bool {
    match pattern.split_once('@') {
        Some((pu, ph)) => {
            match_pattern(user, pu) && match_host_and_ip(host, ip, ph) == ListMatch::Positive
        }
        None => match_pattern(user, pattern),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(match_user("alice", "localhost", ip, "alice@127.0.0.0/8"));
        assert!(match_user("alice", "localhost", ip, "alice@localhost"));
        assert!(!match_user("alice", "localhost", ip, "alice@10.0.0.0/8"));
        assert!(match_user("alice", "localhost", ip, "al*"));
    }
}
