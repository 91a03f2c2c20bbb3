//! OpenSSH's pattern language: globs, comma lists with negation, address lists with
//! CIDR networks, host-or-address lists and `user@host` patterns.

use std::net::IpAddr;

use rsshd::pattern::{
    ListMatch, cidr_contains, match_address_list, match_host_and_ip, match_pattern,
    match_pattern_list, match_user, parse_cidr,
};

/// Input: `subject \n list \n address`. The subject stands for what a client controls
/// (a user or host name), so it is cut to 1 KiB; the list, what a config line or an
/// authorized_keys `from=` holds, is not cut. Oracles: every glob agrees with an
/// independent dynamic-programming matcher; case folding equals lowering both sides;
/// a parsed network prints and parses back and contains its own address; an IPv4
/// client and its IPv4-mapped IPv6 form are treated alike; a combined host-and-address
/// result follows from its two parts.
pub fn pattern(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let subject: String = parts.next().unwrap_or("").chars().take(1024).collect();
    let list = parts.next().unwrap_or("");
    let addr = parts.next().unwrap_or("");

    for pat in list.split(',').take(64) {
        let pat = pat.trim();
        let pat = pat.strip_prefix('!').unwrap_or(pat);
        if let Some(expected) = reference_glob(&subject, pat) {
            assert_eq!(
                match_pattern(&subject, pat),
                expected,
                "glob {pat:?} against {subject:?}"
            );
        }
    }
    let folded = match_pattern_list(&subject, list, true);
    assert_eq!(
        folded,
        match_pattern_list(
            &subject.to_ascii_lowercase(),
            &list.to_ascii_lowercase(),
            false
        ),
        "case-folding list {list:?} against {subject:?}"
    );
    let _ = match_pattern_list(&subject, list, false);

    for entry in list.split(',').take(64).chain([addr]) {
        let entry = entry.trim();
        if let Some((net, len)) = parse_cidr(entry.strip_prefix('!').unwrap_or(entry)) {
            let max = if net.is_ipv4() { 32 } else { 128 };
            assert!(len <= max, "{entry:?} -> /{len}");
            assert_eq!(parse_cidr(&format!("{net}/{len}")), Some((net, len)));
            // A network written as IPv4-mapped IPv6 never matches: clients are
            // compared as the IPv4 address they carry, as sshd normalises them.
            let mapped = matches!(net, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
            assert!(
                mapped || cidr_contains(net, len, net),
                "{net}/{len} lacks {net}"
            );
        }
    }

    let mut clients: Vec<IpAddr> = ["10.1.2.3", "127.0.0.1", "::1"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    if let Ok(ip) = addr.trim().parse::<IpAddr>() {
        clients.push(ip);
    }
    for ip in clients {
        let by_ip = match_address_list(ip, list);
        if let IpAddr::V4(v4) = ip {
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            assert_eq!(
                by_ip,
                match_address_list(mapped, list),
                "{ip} and {mapped} differ on {list:?}"
            );
        }
        let both = match_host_and_ip(&subject, ip, list);
        let by_host = match_pattern_list(&subject, list, true);
        // A malformed address list is an error for the combined match too: callers
        // deny on it, never read it as "no match".
        let Ok(by_ip) = by_ip else {
            assert!(both.is_err(), "{list:?} is malformed but matched: {both:?}");
            let _ = match_user(&subject, "client.example.com", ip, list);
            continue;
        };
        // The unknown peer (an unspecified address, e.g. inetd on a pipe) matches
        // no address pattern, IPv4 or IPv6: only its name can match.
        let by_ip = if ip.is_unspecified() {
            ListMatch::None
        } else {
            by_ip
        };
        let expected = if by_ip == ListMatch::Negated || by_host == ListMatch::Negated {
            ListMatch::Negated
        } else if by_ip == ListMatch::Positive || by_host == ListMatch::Positive {
            ListMatch::Positive
        } else {
            ListMatch::None
        };
        assert_eq!(
            both,
            Ok(expected),
            "host {subject:?} / {ip} against {list:?}"
        );
        let _ = match_user(&subject, "client.example.com", ip, list);
    }
}

/// Glob by dynamic programming over (subject prefix, pattern prefix): `*` matches
/// any run, `?` one character. `None` when the table would be too large to be cheap.
fn reference_glob(s: &str, p: &str) -> Option<bool> {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = p.chars().collect();
    if (s.len() + 1).saturating_mul(p.len() + 1) > 1 << 20 {
        return None;
    }
    // row[j]: the pattern's first j characters match the subject's first i.
    let mut row = vec![false; p.len() + 1];
    row[0] = true;
    for j in 1..=p.len() {
        row[j] = row[j - 1] && p[j - 1] == '*';
    }
    for &c in &s {
        let mut next = vec![false; p.len() + 1];
        for j in 1..=p.len() {
            next[j] = match p[j - 1] {
                '*' => next[j - 1] || row[j],
                '?' => row[j - 1],
                pc => row[j - 1] && pc == c,
            };
        }
        row = next;
    }
    Some(row[p.len()])
}
