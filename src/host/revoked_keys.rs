//! Reading the `RevokedKeys` file for a key check. The file is the admin's, so it is
//! read as root (as sshd does), but the way users' files are: by descriptor, opened
//! without blocking, a regular file only, size-capped, on the blocking pool rather
//! than the async workers, within a deadline. The verdict is `krl::is_revoked`'s;
//! every error means "refuse the key", which the caller logs in sshd's words.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use russh::keys::ssh_key::Certificate;
use russh::keys::ssh_key::public::KeyData;

use super::user_files::{Opened, open_checked};
use crate::krl::{self, KrlError, Subject};

/// The largest revocation file read. A KRL names a certificate in a bit and a key in
/// 32 bytes (its SHA-256), so 16 MiB holds hundreds of thousands of revocations; a
/// plain list of ed25519 keys at ~100 bytes a line, about 160,000. (sshd's own cap
/// is 128 MiB, re-read for every key: too much to hold per login here.)
pub(crate) const CAP: u64 = 16 << 20;

/// How long one check may take. A local file takes well under a millisecond; the
/// bound is for a file on a network mount that stopped answering.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// A key or certificate to check, owned so it can go to another thread.
#[derive(Debug, Clone)]
pub enum Revocable {
    Key(KeyData),
    Cert(Box<Certificate>),
}

/// Why the file could not be judged; each refuses the key.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("{}", .0.desc())]
    Open(nix::errno::Errno),
    #[error("not a regular file")]
    NotRegular,
    #[error("larger than {CAP} bytes")]
    TooLarge,
    #[error("{0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Format(#[from] KrlError),
    #[error("timed out after {}s", DEADLINE.as_secs())]
    TimedOut,
}

impl RevocationError {
    /// Whether asking again later might give an answer (a stuck read), so the
    /// refusal should not be remembered.
    pub fn is_transient(&self) -> bool {
        matches!(self, RevocationError::TimedOut)
    }
}

/// Whether the revocation file at `file` revokes `subject`.
pub async fn revoked(file: &Path, subject: Revocable) -> Result<bool, RevocationError> {
    let file: PathBuf = file.to_path_buf();
    let work = tokio::task::spawn_blocking(move || {
        let bytes = read(&file)?;
        let s = match &subject {
            Revocable::Key(k) => Subject::Key(k),
            Revocable::Cert(c) => Subject::Cert(c),
        };
        Ok(krl::is_revoked(&bytes, s)?)
    });
    match tokio::time::timeout(DEADLINE, work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(RevocationError::Read(std::io::Error::other(e))),
        Err(_) => Err(RevocationError::TimedOut),
    }
}

/// Read an admin's file as root, the way users' files are read (see the module
/// docs); `TrustedUserCAKeys` is read the same way.
pub(super) fn read(path: &Path) -> Result<Vec<u8>, RevocationError> {
    let (fd, st) = open_checked(path).map_err(|e| match e {
        Opened::Missing => RevocationError::Open(nix::errno::Errno::ENOENT),
        Opened::Failed(e) => RevocationError::Open(e),
        Opened::NotRegular => RevocationError::NotRegular,
    })?;
    if st.st_size as u64 > CAP {
        return Err(RevocationError::TooLarge);
    }
    let mut data = Vec::new();
    std::fs::File::from(fd)
        .take(CAP + 1)
        .read_to_end(&mut data)
        .map_err(RevocationError::Read)?;
    if data.len() as u64 > CAP {
        return Err(RevocationError::TooLarge);
    }
    Ok(data)
}
