//! What a login was made with, for the session and for the admin: the
//! `ExposeAuthInfo` file (sshd's `SSH_USER_AUTH`) and the key or certificate
//! `rsshd sessions` shows.
//!
//! As sshd (auth2.c `auth2_update_session_info`, session.c
//! `prepare_auth_info_file`): one line per method that succeeded, partial ones
//! included, `method[/submethod]`, then for a key its type and base64 blob (a
//! certificate's own), then the method's extra detail (a security key's signature
//! counter); the file is `/tmp/sshauth.` and 15 random characters, made with the
//! user's identity, mode 0600, one per connection, and removed with the user's
//! identity when the connection ends.

use std::path::PathBuf;
use std::time::Duration;

use russh::keys::{Certificate, PublicKey};
use serde::{Deserialize, Serialize};

use super::as_user::{Creds, as_user};
use super::{HostError, UserInfo};
use crate::config::FingerprintHash;

/// The key (or certificate) a login used, as `rsshd sessions --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginKey {
    /// sshd's type name: `ED25519`, `RSA`, `ED25519-CERT`, ...
    #[serde(rename = "type")]
    pub key_type: String,
    /// The key's fingerprint (of the certified key for a certificate), in the
    /// daemon's FingerprintHash.
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<LoginCert>,
}

/// The certificate part of a [`LoginKey`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginCert {
    pub key_id: String,
    pub serial: u64,
    pub ca_type: String,
    pub ca_fingerprint: String,
}

impl LoginKey {
    pub(super) fn of(key: &PublicKey, cert: Option<&Certificate>, hash: FingerprintHash) -> Self {
        let fp = |k: &PublicKey| crate::config::algorithms::fingerprint(k, hash);
        LoginKey {
            key_type: super::certs::type_name(&key.algorithm(), cert.is_some()),
            fingerprint: fp(key),
            cert: cert.map(|c| {
                let ca = PublicKey::new(c.signature_key().clone(), "");
                LoginCert {
                    key_id: c.key_id().to_string(),
                    serial: c.serial(),
                    ca_type: super::certs::type_name(&ca.algorithm(), false),
                    ca_fingerprint: fp(&ca),
                }
            }),
        }
    }
}

/// sshd's `sshkey_format_text`: type and base64 blob, no comment.
pub(super) fn key_text(key: &PublicKey, cert: Option<&Certificate>) -> String {
    let openssh = match cert {
        Some(c) => c.to_openssh().unwrap_or_default(),
        None => key.to_openssh().unwrap_or_default(),
    };
    let (t, blob) = super::authorized_keys::type_and_blob(&openssh);
    format!("{t} {blob}")
}

/// One line of the file: `method`, then the key and detail when there are.
pub(super) fn line(method: &str, key: Option<String>, detail: Option<String>) -> String {
    let mut l = method.to_string();
    for part in [key, detail].into_iter().flatten() {
        // sshd refuses a detail with a newline (it would forge a line).
        l.push(' ');
        l.push_str(&part.replace('\n', " "));
    }
    l.push('\n');
    l
}

/// How long making or removing the file may take (a local tmpfs or disk).
const DEADLINE: Duration = Duration::from_secs(5);

/// The characters of the name's random part, as mkstemp's.
const NAME_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Write `text` to a new file as `user`; its path.
pub(super) async fn write(user: &UserInfo, text: String) -> Result<PathBuf, HostError> {
    as_user(&Creds::from(user), DEADLINE, move || {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut last = None;
        for _ in 0..8 {
            let tail: String = (0..15)
                .map(|_| NAME_CHARS[rand::random_range(0..NAME_CHARS.len())] as char)
                .collect();
            let path = PathBuf::from(format!("/tmp/sshauth.{tail}"));
            // A new name only (never a file or link someone left there), the
            // user's alone, closed on exec.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path);
            match file {
                Ok(mut f) => {
                    if let Err(e) = f.write_all(text.as_bytes()) {
                        let _ = std::fs::remove_file(&path);
                        return Err(HostError::Io(e));
                    }
                    return Ok(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(HostError::Io(e)),
            }
        }
        Err(HostError::Io(last.unwrap_or_else(|| {
            std::io::Error::other("no free name for the auth info file")
        })))
    })
    .await?
}

/// Remove the file as `user` (as sshd's `do_cleanup`), in the background: the
/// connection is over and nobody waits for it.
pub(super) fn remove(user: &UserInfo, path: PathBuf) {
    let creds = Creds::from(user);
    let work = move || {
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::debug!("remove {}: {e}", path.display());
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                let _ = as_user(&creds, DEADLINE, work).await;
            });
        }
        Err(_) => {
            let _ = super::as_user::as_user_blocking(&creds, DEADLINE, work);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_sshds() {
        assert_eq!(line("password", None, None), "password\n");
        assert_eq!(
            line(
                "publickey",
                Some("ssh-ed25519 AAAA".into()),
                Some("signature count = 3".into())
            ),
            "publickey ssh-ed25519 AAAA signature count = 3\n"
        );
        let key = PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBQ1swj1ClevGHknzmfaGj2F8vDD7/I5YMxtoBNmrMPY ca",
        )
        .unwrap();
        assert_eq!(
            key_text(&key, None),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBQ1swj1ClevGHknzmfaGj2F8vDD7/I5YMxtoBNmrMPY"
        );
    }
}
