//! authorized_keys files as sshd(8) reads them: options, key, comment; a bad line
//! is skipped, never the whole file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use russh::keys::PublicKey;

use super::certs::CertPolicy;
use super::key_command::{KeyCommand, run};
use super::key_options::{KeyOptions, parse_options, split_options};
use super::user_files::{FileKind, Owner, UserFile, with_reader};
use super::{HostError, UserInfo};
use crate::pattern::{ListMatch, match_host_and_ip};

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

/// Expand `%h`, `%u`, `%U`, `%%`; a relative result is taken from the home. The
/// config refused other tokens at load; one that still comes (a config built
/// some other way) is kept as written, naming no file of anyone's.
pub fn expand_path(pattern: &str, user: &UserInfo) -> PathBuf {
    let p = PathBuf::from(user.expand(pattern).unwrap_or_else(|_| pattern.to_string()));
    if p.is_absolute() {
        p
    } else {
        user.home.join(p)
    }
}

/// A publickey question, as plain data: may `key` log `user` in from this client?
#[derive(Debug, Clone)]
pub struct KeyQuery {
    pub user: UserInfo,
    /// `AuthorizedKeysFile` patterns (`%h`, `%u`, `%U`; `none` is skipped).
    pub files: Vec<String>,
    pub strict_modes: bool,
    pub key: PublicKey,
    pub remote_host: String,
    pub remote_ip: IpAddr,
    /// The client offered a certificate (of `key`): it is judged by
    /// `certs::find_cert` instead, against its CA.
    pub cert: Option<CertPolicy>,
    /// `AuthorizedKeysCommand`, `AuthorizedPrincipalsCommand` and what their
    /// tokens need; `None` when neither is configured.
    pub commands: Option<Box<KeyCommands>>,
}

/// The commands that supply keys or principals, and the connection facts their
/// `%` tokens name.
#[derive(Debug, Clone)]
pub struct KeyCommands {
    pub keys: Option<KeyCommand>,
    pub principals: Option<KeyCommand>,
    /// `%C`: client address and port, server address and port.
    pub conn_id: String,
    /// `%D`: the routing domain, empty for none.
    pub rdomain: String,
    pub fingerprint_hash: crate::config::FingerprintHash,
}

impl KeyCommands {
    /// The commands `s` configures, for a connection from `peer` to `local`;
    /// `None` when there are none.
    pub fn from_settings(
        s: &crate::config::Settings,
        peer: std::net::SocketAddr,
        local: std::net::SocketAddr,
        rdomain: Option<&str>,
        fingerprint_hash: crate::config::FingerprintHash,
    ) -> Option<Box<KeyCommands>> {
        let command = |c: &Option<String>, u: &Option<String>| {
            c.clone().map(|command| KeyCommand {
                command,
                user: u.clone(),
            })
        };
        let keys = command(&s.authorized_keys_command, &s.authorized_keys_command_user);
        let principals = command(
            &s.authorized_principals_command,
            &s.authorized_principals_command_user,
        );
        if keys.is_none() && principals.is_none() {
            return None;
        }
        let ip = |a: &std::net::SocketAddr| crate::log::display_ip(a);
        Some(Box::new(KeyCommands {
            keys,
            principals,
            conn_id: format!(
                "{} {} {} {}",
                ip(&peer),
                peer.port(),
                ip(&local),
                local.port()
            ),
            rdomain: rdomain.unwrap_or_default().to_string(),
            fingerprint_hash,
        }))
    }

    /// The tokens every command has: `%C %D %h %U %u`.
    pub(crate) fn base_tokens(&self, user: &UserInfo) -> Vec<(char, String)> {
        vec![
            ('C', self.conn_id.clone()),
            ('D', self.rdomain.clone()),
            ('h', user.home.to_string_lossy().into_owned()),
            ('U', user.uid.to_string()),
            ('u', user.name.clone()),
        ]
    }
}

/// The type name and base64 blob of an OpenSSH public key line (`%t`, `%k`).
pub(crate) fn type_and_blob(openssh: &str) -> (String, String) {
    let mut f = openssh.split_whitespace();
    let t = f.next().unwrap_or_default().to_string();
    (t, f.next().unwrap_or_default().to_string())
}

/// Look through every file for the key, reading each with the user's identity
/// (see `user_files`), off the async workers. `Err` when the files could not be
/// read in time (or the user's cap of slow reads is reached): the caller treats
/// that as "no key".
pub async fn find_authorized_key(mut q: KeyQuery) -> Result<KeyLookup, HostError> {
    if let Some(policy) = q.cert.take() {
        return super::certs::find_cert(q, policy).await;
    }
    let in_files = find_in_files(&q).await?;
    if matches!(in_files, KeyLookup::Found(_)) {
        return Ok(in_files);
    }
    // sshd asks AuthorizedKeysCommand last.
    if let Some(c) = &q.commands
        && let Some(cmd) = &c.keys
    {
        let (t, k) = type_and_blob(&q.key.to_openssh().unwrap_or_default());
        let mut tokens = c.base_tokens(&q.user);
        tokens.push((
            'f',
            crate::config::algorithms::fingerprint(&q.key, c.fingerprint_hash),
        ));
        tokens.push(('k', k));
        tokens.push(('t', t));
        if let Some(out) = run("AuthorizedKeysCommand", cmd, &tokens).await {
            let found = lookup_in(&out, Path::new(&cmd.command), &q);
            if matches!(found, KeyLookup::Found(_)) {
                return Ok(found);
            }
        }
    }
    Ok(in_files)
}

/// The authorized_keys files' verdict.
async fn find_in_files(q: &KeyQuery) -> Result<KeyLookup, HostError> {
    let q = q.clone();
    let paths: Vec<PathBuf> = q
        .files
        .iter()
        .filter(|p| !p.eq_ignore_ascii_case("none"))
        .map(|p| expand_path(p, &q.user))
        .collect();
    let owner = Owner::from(&q.user);
    with_reader(owner, move |r| {
        let mut rejected = None;
        for path in paths {
            let UserFile::Contents(bytes) = r.read(&path, FileKind::AuthorizedKeys, q.strict_modes)
            else {
                continue;
            };
            match lookup_in(&bytes, &path, &q) {
                KeyLookup::NotFound => {}
                KeyLookup::FromRejected { file, line } => {
                    rejected.get_or_insert((file, line));
                }
                found => return found,
            }
        }
        match rejected {
            Some((file, line)) => KeyLookup::FromRejected { file, line },
            None => KeyLookup::NotFound,
        }
    })
    .await
}

/// The first line of one file's contents that lists the key and admits the client.
pub(super) fn lookup_in(bytes: &[u8], path: &Path, q: &KeyQuery) -> KeyLookup {
    let mut rejected = None;
    for (idx, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = String::from_utf8_lossy(raw);
        let lineno = idx + 1;
        let Some((options, listed)) = parse_line(&line, path, lineno) else {
            continue;
        };
        if listed.key_data() != q.key.key_data() || options.cert_authority {
            continue;
        }
        let loc = format!("{}:{lineno}", path.display());
        if options.principals.is_some() {
            // sshd's auth_authorise_keyopts: principals= belongs on a CA line.
            tracing::debug!("{loc}: principals on non-CA key");
            continue;
        }
        if options.expires.is_some_and(|t| now_unix() > t) {
            tracing::info!("{loc}: key has expired");
            continue;
        }
        if let Some(from) = &options.from {
            let admitted = match match_host_and_ip(&q.remote_host, q.remote_ip, from) {
                Ok(m) => m == ListMatch::Positive,
                Err(e) => {
                    // sshd: a list that does not parse denies (never "no match").
                    tracing::info!("{loc}: invalid from criteria: {e}");
                    false
                }
            };
            if !admitted {
                tracing::info!(
                    "{loc}: Authentication tried for {} with correct key but not from a permitted host (host={}, ip={}, required={from}).",
                    q.user.name,
                    q.remote_host,
                    q.remote_ip
                );
                rejected.get_or_insert(lineno);
                continue;
            }
        }
        return KeyLookup::Found(AuthorizedKey {
            file: path.to_path_buf(),
            line: lineno,
            options,
        });
    }
    match rejected {
        Some(line) => KeyLookup::FromRejected {
            file: path.to_path_buf(),
            line,
        },
        None => KeyLookup::NotFound,
    }
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
            // sshd logs this at debug level: the reason may quote the line.
            tracing::debug!("{}:{lineno}: bad key options: {e}", file.display());
            None
        }
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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

    /// Look `key` up for `u` from 127.0.0.1 (StrictModes off here: temp dirs live
    /// under a world-writable /tmp).
    fn find(u: &UserInfo, files: &[&str], key: &str) -> KeyLookup {
        let q = KeyQuery {
            user: u.clone(),
            files: files.iter().map(|f| f.to_string()).collect(),
            strict_modes: false,
            key: PublicKey::from_openssh(key).unwrap(),
            remote_host: "127.0.0.1".into(),
            remote_ip: "127.0.0.1".parse().unwrap(),
            cert: None,
            commands: None,
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(find_authorized_key(q))
            .unwrap()
    }

    #[test]
    fn bad_line_skips_only_itself_and_from_is_checked() {
        let home = tmp_home("find");
        let ak = home.join(".ssh/authorized_keys");
        std::fs::write(
            &ak,
            format!(
                "garbage line\nbogus-opt {KEY}\n{OTHER}\nfrom=\"10.0.0.0/8\" {KEY}\nno-pty {KEY}\n"
            ),
        )
        .unwrap();
        let u = user(&home);
        let files = [".ssh/authorized_keys", ".ssh/authorized_keys2"];
        match find(&u, &files, KEY) {
            KeyLookup::Found(k) => {
                assert_eq!(k.line, 5);
                assert!(k.options.no_pty);
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&ak, format!("from=\"10.0.0.0/8\" {KEY}\n")).unwrap();
        assert!(matches!(
            find(&u, &files, KEY),
            KeyLookup::FromRejected { line: 1, .. }
        ));
        assert_eq!(find(&u, &files, OTHER), KeyLookup::NotFound);
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn a_malformed_from_denies() {
        let home = tmp_home("from");
        let u = user(&home);
        let ak = home.join(".ssh/authorized_keys");
        let files = [".ssh/authorized_keys"];
        std::fs::write(&ak, format!("from=\"*,!10.0.0.0/8\" {KEY}\n")).unwrap();
        assert!(matches!(find(&u, &files, KEY), KeyLookup::Found(_)));
        for bad in ["*,!10.0.0.0/99,!192.0.2.0/24", "*,!10.0.0.1/8", "*,"] {
            std::fs::write(&ak, format!("from=\"{bad}\" {KEY}\n")).unwrap();
            assert!(
                matches!(find(&u, &files, KEY), KeyLookup::FromRejected { .. }),
                "{bad}"
            );
        }
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn cert_authority_and_expired_keys_never_match() {
        let home = tmp_home("ca");
        let u = user(&home);
        let ak = home.join(".ssh/authorized_keys");
        let files = [".ssh/authorized_keys"];
        for line in [
            format!("cert-authority {KEY}"),
            format!("expiry-time=\"20200101\" {KEY}"),
        ] {
            std::fs::write(&ak, line).unwrap();
            assert_eq!(find(&u, &files, KEY), KeyLookup::NotFound);
        }
        std::fs::write(&ak, format!("expiry-time=\"29991231Z\" {KEY}")).unwrap();
        assert!(matches!(find(&u, &files, KEY), KeyLookup::Found(_)));
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
