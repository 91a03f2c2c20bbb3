//! authorized_keys lines and their key options, as sshd(8)'s AUTHORIZED_KEYS FILE
//! FORMAT, and the `from=` list they carry.

use std::net::IpAddr;
use std::path::Path;

use rsshd::host::{KeyOptions, parse_line, parse_options};
use rsshd::pattern::match_host_and_ip;

/// Parse every line as the daemon does, and the options part of each line on its own
/// (most mutants break the key, which would hide the options from `parse_line`).
/// Oracle: options that parsed, written back in canonical form, parse to the same
/// options; a `from=` list is evaluated for a few clients.
pub fn authorized_keys(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for (i, line) in text.lines().enumerate().take(512) {
        if let Some((options, _key)) = parse_line(line, Path::new("authorized_keys"), i + 1) {
            check(&options);
        }
        let (opts, _) = split_options(line.trim());
        if let Ok(options) = parse_options(opts) {
            check(&options);
        }
    }
}

fn check(options: &KeyOptions) {
    let (canonical, expected) = canonical(options);
    let Some(canonical) = canonical else {
        return;
    };
    let again = parse_options(&canonical)
        .unwrap_or_else(|e| panic!("canonical options do not parse: {e}\n{canonical}"));
    assert_eq!(again, expected, "options change through {canonical:?}");
    if let Some(from) = &options.from {
        for (host, ip) in [
            ("client.example.com", "10.1.2.3"),
            ("localhost", "127.0.0.1"),
            ("::1", "::1"),
            ("v4mapped", "::ffff:192.168.0.7"),
        ] {
            let ip: IpAddr = ip.parse().expect("literal address");
            let _ = match_host_and_ip(host, ip, from);
        }
    }
}

/// As the daemon splits a line: options end at the first blank outside quotes.
fn split_options(line: &str) -> (&str, &str) {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in line.char_indices() {
        match c {
            '\\' if quoted && !escaped => {
                escaped = true;
                continue;
            }
            '"' if !escaped => quoted = !quoted,
            ' ' | '\t' if !quoted => return (&line[..i], &line[i..]),
            _ => {}
        }
        escaped = false;
    }
    (line, "")
}

/// The options written back as one option list, and the options that list must
/// parse to (the same, less an expiry time that four year digits cannot show).
/// `None` when a value cannot be written in the format at all.
fn canonical(o: &KeyOptions) -> (Option<String>, KeyOptions) {
    let mut expected = o.clone();
    let mut parts: Vec<String> = Vec::new();
    for (set, name) in [
        (o.no_pty, "no-pty"),
        (o.no_port_forwarding, "no-port-forwarding"),
        (o.no_agent_forwarding, "no-agent-forwarding"),
        (o.no_x11_forwarding, "no-x11-forwarding"),
        (o.no_user_rc, "no-user-rc"),
        (o.cert_authority, "cert-authority"),
        (o.verify_required, "verify-required"),
        (o.no_touch_required, "no-touch-required"),
    ] {
        if set {
            parts.push(name.to_string());
        }
    }
    let mut values: Vec<(&str, String)> = Vec::new();
    if let Some(c) = &o.command {
        values.push(("command", c.clone()));
    }
    if let Some(f) = &o.from {
        values.push(("from", f.clone()));
    }
    for (k, v) in &o.environment {
        values.push(("environment", format!("{k}={v}")));
    }
    for p in &o.permit_open {
        values.push(("permitopen", p.clone()));
    }
    for p in &o.permit_listen {
        values.push(("permitlisten", p.clone()));
    }
    if let Some(p) = &o.principals {
        values.push(("principals", p.clone()));
    }
    if let Some(t) = o.expires {
        match utc_stamp(t) {
            Some(s) => values.push(("expiry-time", s)),
            None => expected.expires = None,
        }
    }
    for (name, v) in values {
        let Some(q) = quote(&v) else {
            return (None, expected);
        };
        parts.push(format!("{name}={q}"));
    }
    (Some(parts.join(",")), expected)
}

/// Quote a value so the option parser reads it back: `"` is written `\"`, and a
/// backslash keeps the character after it (the parser keeps both). A value with a
/// backslash before a quote or at its end cannot come out of the parser.
fn quote(v: &str) -> Option<String> {
    let mut out = String::from("\"");
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => match chars.next() {
                Some('"') | None => return None,
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
            },
            c => out.push(c),
        }
    }
    out.push('"');
    Some(out)
}

/// `YYYYMMDDHHMMSSZ` for a Unix time, or `None` outside years 0-9999.
fn utc_stamp(t: i64) -> Option<String> {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    Some(format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ))
}
