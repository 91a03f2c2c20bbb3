//! Host keys: loaded from `HostKey` files, or generated once into the state directory
//! so that the quick start works with no setup and keeps its identity across restarts.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::{Certificate, LineEnding};
use russh::keys::{Algorithm, PrivateKey};

/// The host keys the host signs with, and the host certificates offered for
/// them. Only the host holds this; the network side gets their public halves
/// (`HostKeys`) and asks for signatures (`SignKex`).
#[derive(Default)]
pub struct HostKeySet {
    pub(crate) keys: Vec<PrivateKey>,
    pub(crate) certificates: Vec<Certificate>,
}

impl HostKeySet {
    /// `keys`, with those `HostCertificate` files that certify one of them (read
    /// now; the others are left out with sshd's error lines).
    pub fn new(keys: Vec<PrivateKey>, certificate_paths: &[PathBuf]) -> HostKeySet {
        let certificates = load_certificates(certificate_paths, &keys);
        HostKeySet { keys, certificates }
    }
}

/// A host key that could not be used, named by file so `-t` can say which.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("{path}: could not load host key: {source}")]
    Load {
        path: PathBuf,
        source: russh::keys::Error,
    },
    #[error("{path}: bad permissions {mode:04o}: a host key must not be readable by others")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: could not create host key: {reason}")]
    Create { path: PathBuf, reason: String },
    #[error("no hostkeys available")]
    None,
}

/// Load every configured key; an unreadable one is an error, as for sshd.
pub fn load(paths: &[PathBuf]) -> Result<Vec<PrivateKey>, HostKeyError> {
    let mut keys = Vec::new();
    for path in paths {
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 && crate::host::Privilege::current().is_root() {
                return Err(HostKeyError::Permissions {
                    path: path.clone(),
                    mode,
                });
            }
        }
        let key =
            russh::keys::load_secret_key(path, None).map_err(|source| HostKeyError::Load {
                path: path.clone(),
                source,
            })?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(HostKeyError::None);
    }
    Ok(keys)
}

/// The `HostCertificate` files whose key is one of `keys`, as sshd loads them: a
/// file that cannot be read, is not a host certificate, or has no matching host
/// key is left out with sshd's error line, and the daemon serves without it.
pub fn load_certificates(paths: &[PathBuf], keys: &[PrivateKey]) -> Vec<Certificate> {
    let mut certs = Vec::new();
    for path in paths {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(
                    "Could not load host certificate \"{}\": {e}",
                    path.display()
                );
                continue;
            }
        };
        let cert = match Certificate::from_openssh(text.trim()) {
            Ok(c) if c.cert_type() == CertType::Host => c,
            _ => {
                tracing::error!("Certificate file is not a certificate: {}", path.display());
                continue;
            }
        };
        if !keys
            .iter()
            .any(|k| k.public_key().key_data() == cert.public_key())
        {
            tracing::error!(
                "No matching private key for certificate: {}",
                path.display()
            );
            continue;
        }
        tracing::debug!("host certificate: {}", path.display());
        certs.push(cert);
    }
    certs
}

/// The generated key's path in `dir`, created (ed25519, mode 0600, with `.pub`) if
/// it does not exist yet.
pub fn ensure_generated(dir: &Path) -> Result<PathBuf, HostKeyError> {
    let path = dir.join("ssh_host_ed25519_key");
    if path.exists() {
        return Ok(path);
    }
    let create_err = |reason: String| HostKeyError::Create {
        path: path.clone(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| create_err(e.to_string()))?;
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
        .map_err(|e| create_err(e.to_string()))?;
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| create_err(e.to_string()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| create_err(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| create_err(e.to_string()))?;
    f.write_all(private.as_bytes())
        .map_err(|e| create_err(e.to_string()))?;
    std::fs::write(path.with_extension("pub"), format!("{public} rsshd\n"))
        .map_err(|e| create_err(e.to_string()))?;
    tracing::info!(
        "Generated host key {} ({})",
        path.display(),
        key.public_key().fingerprint(Default::default())
    );
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_private_and_reloads() {
        let dir = std::env::temp_dir().join(format!("rsshd-hk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = ensure_generated(&dir).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let keys = load(std::slice::from_ref(&path)).unwrap();
        assert_eq!(keys.len(), 1);
        // A second call keeps the same identity.
        assert_eq!(ensure_generated(&dir).unwrap(), path);
        assert_eq!(load(&[path]).unwrap()[0], keys[0]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
