//! The options before a key in an authorized_keys line (sshd's auth-options.c):
//! what they allow or impose, parsed strictly so that a malformed restriction
//! voids its line instead of loosening it.

/// What the options before a key allow or impose.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyOptions {
    pub command: Option<String>,
    pub from: Option<String>,
    pub no_pty: bool,
    pub no_port_forwarding: bool,
    pub no_agent_forwarding: bool,
    pub no_x11_forwarding: bool,
    pub no_user_rc: bool,
    pub environment: Vec<(String, String)>,
    pub permit_open: Vec<String>,
    pub permit_listen: Vec<String>,
    /// The key is a CA for user certificates: it must never match as a plain key.
    pub cert_authority: bool,
    /// `expiry-time=`: Unix time after which the key no longer works.
    pub expires: Option<i64>,
    /// `principals=` (a `cert-authority` line): the certificate principals it
    /// accepts, instead of the user's name.
    pub principals: Option<String>,
    /// A certificate's `source-address`: CIDR networks the client must come from.
    pub source_address: Option<String>,
    /// `verify-required`: the signature must carry the authenticator's
    /// user-verification flag (security keys only).
    pub verify_required: bool,
    /// `no-touch-required` (a certificate's extension of that name): a
    /// security key's signature need not show the user's touch.
    #[serde(default)]
    pub no_touch_required: bool,
}

/// Split at the first space outside double quotes.
pub(crate) fn split_options(line: &str) -> Option<(&str, &str)> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            '\\' if quoted && !escaped => {
                escaped = true;
                continue;
            }
            '"' if !escaped => quoted = !quoted,
            ' ' | '\t' if !quoted => return Some((&line[..i], &line[i..])),
            _ => {}
        }
        escaped = false;
    }
    None
}

/// `expiry-time="YYYYMMDD[HHMM[SS]][Z]"`: local time unless it ends in `Z`.
fn parse_expiry(v: &str) -> Result<i64, String> {
    let bad = || format!("expiry-time: bad time \"{v}\"");
    let (digits, utc) = match v.strip_suffix(['Z', 'z']) {
        Some(d) => (d, true),
        None => (v, false),
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| {
        digits
            .get(r)
            .and_then(|s| s.parse::<i32>().ok())
            .unwrap_or(0)
    };
    // SAFETY: tm is plain data; timegm/mktime read it and normalise.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = num(0..4) - 1900;
    tm.tm_mon = num(4..6) - 1;
    tm.tm_mday = num(6..8);
    tm.tm_hour = num(8..10);
    tm.tm_min = num(10..12);
    tm.tm_sec = num(12..14);
    tm.tm_isdst = -1;
    // SAFETY: valid tm.
    let t = unsafe {
        if utc {
            libc::timegm(&mut tm)
        } else {
            libc::mktime(&mut tm)
        }
    };
    if t == -1 {
        return Err(bad());
    }
    Ok(t)
}

/// sshd's `SSH_AUTHOPT_PERMIT_MAX`: more permitopen/permitlisten entries on one
/// line than this void the line.
const PERMIT_MAX: usize = 4096;

/// A `permitopen`/`permitlisten` value must be `host:port` (`[v6]:port`), port a
/// number from 1 to 65535 or `*`, as sshd's `handle_permit` requires; a bare port
/// is allowed for `permitlisten` only (meaning any host). Anything else voids the
/// line: read loosely, `permitopen="8080"` would open port 8080 on every host.
fn checked_permit(v: String, bare_port_ok: bool) -> Result<String, String> {
    let v = if bare_port_ok && !v.contains(':') {
        format!("*:{v}")
    } else {
        v
    };
    let (host, port) = match v.strip_prefix('[') {
        Some(r) => match r.split_once(']') {
            Some((h, rest)) => (Some(h), rest.strip_prefix(':')),
            None => (None, None),
        },
        None => match v.find([':', '/']) {
            Some(i) => (Some(&v[..i]), Some(&v[i + 1..])),
            None => (Some(v.as_str()), None),
        },
    };
    if host.is_none_or(|h| h.len() >= 1025) {
        return Err("invalid permission hostname".into());
    }
    let port_ok = port.is_some_and(|p| {
        p == "*"
            || (!p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n > 0))
    });
    if !port_ok {
        return Err("invalid permission port".into());
    }
    Ok(v)
}

/// Parse `opt,opt="value",...` (sshd's auth-options).
pub fn parse_options(text: &str) -> Result<KeyOptions, String> {
    let mut o = KeyOptions::default();
    let mut rest = text;
    while !rest.is_empty() {
        let name_end = rest.find(['=', ',']).unwrap_or(rest.len());
        let name = rest[..name_end].to_ascii_lowercase();
        rest = &rest[name_end..];
        let value = if let Some(r) = rest.strip_prefix('=') {
            let r = r
                .strip_prefix('"')
                .ok_or_else(|| format!("{name}: value must be quoted"))?;
            let mut v = String::new();
            let mut chars = r.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, '"')) => v.push('"'),
                        Some((_, other)) => {
                            v.push('\\');
                            v.push(other);
                        }
                        None => return Err(format!("{name}: unterminated value")),
                    },
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    _ => v.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("{name}: missing end quote"))?;
            rest = &r[end..];
            Some(v)
        } else {
            None
        };
        match (name.as_str(), value) {
            ("restrict", None) => {
                o.no_pty = true;
                o.no_port_forwarding = true;
                o.no_agent_forwarding = true;
                o.no_x11_forwarding = true;
                o.no_user_rc = true;
            }
            ("no-pty", None) => o.no_pty = true,
            ("pty", None) => o.no_pty = false,
            ("no-port-forwarding", None) => o.no_port_forwarding = true,
            ("port-forwarding", None) => o.no_port_forwarding = false,
            ("no-agent-forwarding", None) => o.no_agent_forwarding = true,
            ("agent-forwarding", None) => o.no_agent_forwarding = false,
            ("no-x11-forwarding", None) => o.no_x11_forwarding = true,
            ("x11-forwarding", None) => o.no_x11_forwarding = false,
            ("no-user-rc", None) => o.no_user_rc = true,
            ("user-rc", None) => o.no_user_rc = false,
            ("cert-authority", None) => o.cert_authority = true,
            ("verify-required", None) => o.verify_required = true,
            ("no-verify-required", None) => o.verify_required = false,
            ("no-touch-required", None) => o.no_touch_required = true,
            ("touch-required", None) => o.no_touch_required = false,
            ("command", Some(v)) => o.command = Some(v),
            ("from", Some(v)) => o.from = Some(v),
            ("environment", Some(v)) => {
                let (k, val) = v
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| format!("environment: \"{v}\" is not NAME=value"))?;
                o.environment.push((k.to_string(), val.to_string()));
            }
            ("permitopen", Some(v)) => o.permit_open.push(checked_permit(v, false)?),
            ("permitlisten", Some(v)) => o.permit_listen.push(checked_permit(v, true)?),
            ("expiry-time", Some(v)) => o.expires = Some(parse_expiry(&v)?),
            ("principals", Some(v)) => o.principals = Some(v),
            ("tunnel", Some(_)) => {}
            (other, _) => return Err(format!("unknown or malformed option \"{other}\"")),
        }
        if o.permit_open.len() > PERMIT_MAX || o.permit_listen.len() > PERMIT_MAX {
            return Err("too many permission directives".into());
        }
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None if rest.is_empty() => break,
            None => return Err("garbage after option".into()),
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_parsed() {
        let o = parse_options(
            r#"command="echo \"hi\"",from="10.0.0.0/8,!10.1.*",no-pty,environment="A=b=c",permitopen="h:80",permitlisten="8080""#,
        )
        .unwrap();
        assert_eq!(o.command.as_deref(), Some("echo \"hi\""));
        assert_eq!(o.from.as_deref(), Some("10.0.0.0/8,!10.1.*"));
        assert!(o.no_pty && !o.no_port_forwarding);
        assert_eq!(o.environment, vec![("A".to_string(), "b=c".to_string())]);
        assert_eq!(o.permit_open, vec!["h:80"]);
        assert_eq!(o.permit_listen, vec!["*:8080"]);
        let r = parse_options("restrict,pty").unwrap();
        assert!(!r.no_pty && r.no_port_forwarding && r.no_agent_forwarding && r.no_user_rc);
        assert!(parse_options("bogus").is_err());
        assert!(parse_options("command=unquoted").is_err());
        assert!(parse_options(r#"command="open"#).is_err());
    }

    #[test]
    fn malformed_permissions_void_the_line() {
        for bad in [
            r#"permitopen="8080""#,
            r#"permitopen="host:""#,
            r#"permitopen="host:0""#,
            r#"permitopen="host:70000""#,
            r#"permitopen="host:http""#,
            r#"permitopen="[::1""#,
            r#"permitopen="[::1]""#,
            r#"permitlisten="0""#,
            r#"permitlisten="localhost:-1""#,
        ] {
            assert!(parse_options(bad).is_err(), "{bad} must be refused");
        }
        let o = parse_options(
            r#"permitopen="h:80",permitopen="*:*",permitopen="[::1]:22",permitlisten="8080",permitlisten="localhost:*""#,
        )
        .unwrap();
        assert_eq!(o.permit_open, vec!["h:80", "*:*", "[::1]:22"]);
        assert_eq!(o.permit_listen, vec!["*:8080", "localhost:*"]);
    }
}
