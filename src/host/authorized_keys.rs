//! authorized_keys files as sshd(8) reads them: options, key, comment; a bad line
//! is skipped, never the whole file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use russh::keys::PublicKey;

use super::UserInfo;
use super::strict_modes::secure_path;
use crate::pattern::{ListMatch, match_host_and_ip};

/// What the options before a key allow or impose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
}

/// The line that accepted a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedKey {
    pub file: PathBuf,
    pub line: usize,
    pub options: KeyOptions,
}

/// Result of looking for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup {
    Found(AuthorizedKey),
    NotFound,
    /// The key is listed, but its `from=` does not admit this client.
    FromRejected {
        file: PathBuf,
        line: usize,
    },
}

/// Expand `%h`, `%u`, `%U`, `%%`; a relative result is taken from the home.
pub fn expand_path(pattern: &str, user: &UserInfo) -> PathBuf {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(&user.home.to_string_lossy()),
            Some('u') => out.push_str(&user.name),
            Some('U') => out.push_str(&user.uid.to_string()),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    let p = PathBuf::from(out);
    if p.is_absolute() {
        p
    } else {
        user.home.join(p)
    }
}

/// Look through every file for `key`.
pub fn find_authorized_key(
    user: &UserInfo,
    files: &[String],
    strict_modes: bool,
    key: &PublicKey,
    remote_host: &str,
    remote_ip: IpAddr,
) -> KeyLookup {
    let mut rejected = None;
    for pattern in files {
        if pattern.eq_ignore_ascii_case("none") {
            continue;
        }
        let path = expand_path(pattern, user);
        let Ok(text) = read_checked(&path, user, strict_modes) else {
            continue;
        };
        for (idx, line) in text.lines().enumerate() {
            let Some((options, listed)) = parse_line(line, &path, idx + 1) else {
                continue;
            };
            if listed.key_data() != key.key_data() || options.cert_authority {
                continue;
            }
            if options.expires.is_some_and(|t| now_unix() > t) {
                tracing::info!("{}:{}: key has expired", path.display(), idx + 1);
                continue;
            }
            if let Some(from) = &options.from
                && match_host_and_ip(remote_host, remote_ip, from) != ListMatch::Positive
            {
                rejected = Some((path.clone(), idx + 1));
                continue;
            }
            return KeyLookup::Found(AuthorizedKey {
                file: path,
                line: idx + 1,
                options,
            });
        }
    }
    match rejected {
        Some((file, line)) => KeyLookup::FromRejected { file, line },
        None => KeyLookup::NotFound,
    }
}

/// Read a key file after the StrictModes checks; missing files are normal.
fn read_checked(path: &Path, user: &UserInfo, strict_modes: bool) -> Result<String, ()> {
    let meta = std::fs::metadata(path).map_err(|_| ())?;
    if !meta.is_file() {
        return Err(());
    }
    if strict_modes && let Err(reason) = secure_path(path, user.uid, &user.home) {
        tracing::info!("Authentication refused: {reason}");
        return Err(());
    }
    // Bounded: an authorized_keys file is small; refuse a runaway one.
    if meta.len() > 4 * 1024 * 1024 {
        tracing::info!("Authentication refused: {} is too large", path.display());
        return Err(());
    }
    std::fs::read_to_string(path).map_err(|e| {
        tracing::debug!("could not read {}: {e}", path.display());
    })
}

/// Parse one line into options and key; `None` for blank, comment or bad lines.
pub fn parse_line(line: &str, file: &Path, lineno: usize) -> Option<(KeyOptions, PublicKey)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    // A line either starts with the key type, or with options then the key type.
    if let Ok(key) = PublicKey::from_openssh(line) {
        return Some((KeyOptions::default(), key));
    }
    let (opts_text, rest) = split_options(line)?;
    let key = match PublicKey::from_openssh(rest.trim_start()) {
        Ok(k) => k,
        Err(_) => {
            tracing::debug!("{}:{lineno}: skipping line: no valid key", file.display());
            return None;
        }
    };
    match parse_options(opts_text) {
        Ok(o) => Some((o, key)),
        Err(e) => {
            tracing::info!("{}:{lineno}: bad key options: {e}", file.display());
            None
        }
    }
}

/// Split at the first space outside double quotes.
fn split_options(line: &str) -> Option<(&str, &str)> {
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

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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
            // FIDO flags: rsshd verifies no security-key assertions beyond russh's.
            ("no-touch-required", None) | ("verify-required", None) => {}
            ("command", Some(v)) => o.command = Some(v),
            ("from", Some(v)) => o.from = Some(v),
            ("environment", Some(v)) => {
                let (k, val) = v
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| format!("environment: \"{v}\" is not NAME=value"))?;
                o.environment.push((k.to_string(), val.to_string()));
            }
            ("permitopen", Some(v)) => o.permit_open.push(v),
            ("permitlisten", Some(v)) => o.permit_listen.push(v),
            ("expiry-time", Some(v)) => o.expires = Some(parse_expiry(&v)?),
            ("principals", Some(_)) | ("tunnel", Some(_)) => {}
            (other, _) => return Err(format!("unknown or malformed option \"{other}\"")),
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

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test@host";
    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti other";

    fn user(home: &Path) -> UserInfo {
        UserInfo {
            name: "alice".into(),
            uid: nix::unistd::geteuid().as_raw(),
            gid: 0,
            home: home.to_path_buf(),
            shell: "/bin/sh".into(),
            group_names: vec![],
            gids: vec![],
        }
    }

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
        assert_eq!(o.permit_listen, vec!["8080"]);
        let r = parse_options("restrict,pty").unwrap();
        assert!(!r.no_pty && r.no_port_forwarding && r.no_agent_forwarding && r.no_user_rc);
        assert!(parse_options("bogus").is_err());
        assert!(parse_options("command=unquoted").is_err());
        assert!(parse_options(r#"command="open"#).is_err());
    }

    #[test]
    fn lines_with_and_without_options() {
        let p = Path::new("f");
        assert!(parse_line(KEY, p, 1).is_some());
        let (o, _) = parse_line(&format!(r#"no-pty,command="a b" {KEY}"#), p, 1).unwrap();
        assert!(o.no_pty);
        assert_eq!(o.command.as_deref(), Some("a b"));
        assert!(parse_line("# comment", p, 1).is_none());
        assert!(parse_line("   ", p, 1).is_none());
        assert!(parse_line("ssh-ed25519 garbage", p, 1).is_none());
        assert!(parse_line(&format!("bogus-option {KEY}"), p, 1).is_none());
    }

    fn tmp_home(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rsshd-ak-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join(".ssh")).unwrap();
        d
    }

    #[test]
    fn bad_line_skips_only_itself_and_from_is_checked() {
        let home = tmp_home("find");
        let key = PublicKey::from_openssh(KEY).unwrap();
        std::fs::write(
            home.join(".ssh/authorized_keys"),
            format!(
                "garbage line\nbogus-opt {KEY}\n{OTHER}\nfrom=\"10.0.0.0/8\" {KEY}\nno-pty {KEY}\n"
            ),
        )
        .unwrap();
        let u = user(&home);
        let files = vec![
            ".ssh/authorized_keys".to_string(),
            ".ssh/authorized_keys2".to_string(),
        ];
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // StrictModes off here: temp dirs live under a world-writable /tmp.
        match find_authorized_key(&u, &files, false, &key, "127.0.0.1", ip) {
            KeyLookup::Found(k) => {
                assert_eq!(k.line, 5);
                assert!(k.options.no_pty);
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(
            home.join(".ssh/authorized_keys"),
            format!("from=\"10.0.0.0/8\" {KEY}\n"),
        )
        .unwrap();
        assert!(matches!(
            find_authorized_key(&u, &files, false, &key, "127.0.0.1", ip),
            KeyLookup::FromRejected { line: 1, .. }
        ));
        let other = PublicKey::from_openssh(OTHER).unwrap();
        assert_eq!(
            find_authorized_key(&u, &files, false, &other, "h", ip),
            KeyLookup::NotFound
        );
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn cert_authority_and_expired_keys_never_match() {
        let home = tmp_home("ca");
        let key = PublicKey::from_openssh(KEY).unwrap();
        let u = user(&home);
        let files = vec![".ssh/authorized_keys".to_string()];
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for line in [
            format!("cert-authority {KEY}"),
            format!("expiry-time=\"20200101\" {KEY}"),
        ] {
            std::fs::write(home.join(".ssh/authorized_keys"), line).unwrap();
            assert_eq!(
                find_authorized_key(&u, &files, false, &key, "h", ip),
                KeyLookup::NotFound
            );
        }
        std::fs::write(
            home.join(".ssh/authorized_keys"),
            format!("expiry-time=\"29991231Z\" {KEY}"),
        )
        .unwrap();
        assert!(matches!(
            find_authorized_key(&u, &files, false, &key, "h", ip),
            KeyLookup::Found(_)
        ));
        assert!(parse_options("expiry-time=\"2020\"").is_err());
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn tokens_expand() {
        let u = user(Path::new("/home/alice"));
        assert_eq!(
            expand_path("%h/.ssh/k", &u),
            PathBuf::from("/home/alice/.ssh/k")
        );
        assert_eq!(
            expand_path("/etc/keys/%u", &u),
            PathBuf::from("/etc/keys/alice")
        );
        assert_eq!(
            expand_path(".ssh/authorized_keys", &u),
            PathBuf::from("/home/alice/.ssh/authorized_keys")
        );
        assert_eq!(expand_path("/k/%%u", &u), PathBuf::from("/k/%u"));
    }
}
