//! Host keys: loaded from `HostKey` files, or generated once into the state directory
//! so that the quick start works with no setup and keeps its identity across restarts.
//! With `HostKeyAgent`, a key whose private half is not readable is held by an
//! ssh-agent (host_key_agent.rs), as in sshd.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::{Certificate, LineEnding};
use russh::keys::{Algorithm, PrivateKey, PublicKey};

use super::host_key_agent::{self, AgentError, AgentSocket};

/// One host key: its private half, or only its public half with the agent
/// that signs for it (`HostKeyAgent`).
#[derive(Clone)]
pub enum HostKey {
    /// Boxed: a private key is several times the size of the other variant.
    Private(Box<PrivateKey>),
    Agent {
        public: PublicKey,
        agent: Arc<AgentSocket>,
    },
}

impl HostKey {
    pub fn public_key(&self) -> &PublicKey {
        match self {
            HostKey::Private(k) => k.public_key(),
            HostKey::Agent { public, .. } => public,
        }
    }
}

/// The host keys the host signs with (or has an agent sign with), and the host
/// certificates offered for them. Only the host holds this; the network side
/// gets their public halves (`HostKeys`) and asks for signatures (`SignKex`).
#[derive(Default)]
pub struct HostKeySet {
    pub(crate) keys: Vec<HostKey>,
    pub(crate) certificates: Vec<Certificate>,
}

impl HostKeySet {
    /// `keys`, with those `HostCertificate` files that certify one of them (read
    /// now; the others are left out with sshd's error lines).
    pub fn new(keys: Vec<HostKey>, certificate_paths: &[PathBuf]) -> HostKeySet {
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
    /// sshd's line for a public-only key that no agent can sign for.
    #[error("Unable to load host key: {}", path.display())]
    NoAgent { path: PathBuf },
    #[error("{path}: could not create host key: {reason}")]
    Create { path: PathBuf, reason: String },
    #[error("no hostkeys available")]
    None,
}

/// A host key file is a few KiB at most (RSA-16384 is under 13 KiB).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Where `HostKeyAgent` stands while the keys load.
enum Agent {
    Off,
    /// Configured, but it did not accept a connection (logged once).
    Unreachable,
    At(Arc<AgentSocket>),
}

/// Load every configured key; an unreadable one is an error, as for sshd (which
/// logs it and goes on with the others). With `HostKeyAgent` (`agent`), a key
/// whose private half does not load is used through the agent, if it answers,
/// with its public half from the file itself or from the file named with
/// `.pub` added, as sshd does.
pub fn load(paths: &[PathBuf], agent: Option<&str>) -> Result<Vec<HostKey>, HostKeyError> {
    let agent = match agent.map(host_key_agent::check) {
        None => Agent::Off,
        Some(Ok(a)) => Agent::At(Arc::new(a)),
        Some(Err(e)) => {
            if let AgentError::Connect { shown, reason } = e {
                tracing::error!("Could not connect to agent \"{shown}\": {reason}");
            }
            Agent::Unreachable
        }
    };
    let mut keys = Vec::new();
    for path in paths {
        keys.push(load_one(path, &agent)?);
    }
    if keys.is_empty() {
        return Err(HostKeyError::None);
    }
    Ok(keys)
}

fn load_one(path: &Path, agent: &Agent) -> Result<HostKey, HostKeyError> {
    if let Agent::Off = agent {
        return load_private(path).map(|k| HostKey::Private(Box::new(k)));
    }
    // A public key named directly: nothing private to try.
    if let Some(public) = read_public(path) {
        return through_agent(path, public, agent);
    }
    let err = match load_private(path) {
        Ok(k) => return Ok(HostKey::Private(Box::new(k))),
        Err(e @ HostKeyError::Permissions { .. }) => return Err(e),
        Err(e) => e,
    };
    // The public half: in the private key file itself (readable, but
    // encrypted or otherwise unusable), or in FILE.pub.
    let mut with_pub = OsString::from(path.as_os_str());
    with_pub.push(".pub");
    let Some(public) = public_of_private(path).or_else(|| read_public(Path::new(&with_pub))) else {
        return Err(err);
    };
    match &err {
        // sshd is silent about a private key it cannot open.
        HostKeyError::Load {
            source: russh::keys::Error::IO(_),
            ..
        } => {}
        HostKeyError::Load {
            source: russh::keys::Error::KeyIsEncrypted,
            ..
        } => tracing::error!(
            "Unable to load host key \"{}\": incorrect passphrase supplied to decrypt private key",
            path.display()
        ),
        _ => tracing::error!(
            "Unable to load host key \"{}\": invalid format",
            path.display()
        ),
    }
    through_agent(path, public, agent)
}

fn through_agent(path: &Path, public: PublicKey, agent: &Agent) -> Result<HostKey, HostKeyError> {
    match agent {
        Agent::At(a) => {
            tracing::debug!("will rely on agent for hostkey {}", path.display());
            Ok(HostKey::Agent {
                public,
                agent: Arc::clone(a),
            })
        }
        _ => Err(HostKeyError::NoAgent {
            path: path.to_path_buf(),
        }),
    }
}

/// The file's text, if it can be read (size-capped: a key file is small).
fn read_text(path: &Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The public key in `path`, if it is a public key file.
fn read_public(path: &Path) -> Option<PublicKey> {
    PublicKey::from_openssh(read_text(path)?.trim()).ok()
}

/// The public half of the OpenSSH private key in `path`, which holds it in
/// the clear even when the private half is encrypted.
fn public_of_private(path: &Path) -> Option<PublicKey> {
    PrivateKey::from_openssh(read_text(path)?)
        .ok()
        .map(|k| k.public_key().clone())
}

fn load_private(path: &Path) -> Result<PrivateKey, HostKeyError> {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 && crate::host::Privilege::current().is_root() {
            return Err(HostKeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    russh::keys::load_secret_key(path, None).map_err(|source| HostKeyError::Load {
        path: path.to_path_buf(),
        source,
    })
}

/// The `HostCertificate` files whose key is one of `keys`, as sshd loads them: a
/// file that cannot be read, is not a host certificate, or has no matching host
/// key is left out with sshd's error line, and the daemon serves without it.
pub fn load_certificates(paths: &[PathBuf], keys: &[HostKey]) -> Vec<Certificate> {
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
        let keys = load(std::slice::from_ref(&path), None).unwrap();
        assert_eq!(keys.len(), 1);
        // A second call keeps the same identity.
        assert_eq!(ensure_generated(&dir).unwrap(), path);
        assert!(matches!(
            (&load(&[path], None).unwrap()[0], &keys[0]),
            (HostKey::Private(a), HostKey::Private(b)) if a == b
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
