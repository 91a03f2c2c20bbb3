//! Host keys whose private half russh does not hold.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ssh_key::{Algorithm, PrivateKey, PublicKey, Signature};

use crate::helpers::sign_with_hash_alg;
use crate::keys::key::PrivateKeyWithHashAlg;

/// What [`HostKeySigner::sign`] returns.
pub type SignFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Signature, crate::Error>> + Send + 'a>>;

/// A host key whose private half is held elsewhere: in another process (so
/// that the process facing the network never holds it), an HSM or an agent.
///
/// Give these in [`Config::host_key_signers`](super::Config::host_key_signers)
/// next to, or instead of, [`Config::keys`](super::Config::keys). russh
/// advertises and selects them like the keys it holds, and asks the signer to
/// sign each key exchange's hash, awaiting its answer.
pub trait HostKeySigner: Send + Sync {
    /// The public host key, sent to the client in the key exchange.
    fn public_key(&self) -> &PublicKey;

    /// Signs `data`, the exchange hash, with the private key for the
    /// negotiated host key `algorithm` (for RSA, it names the hash:
    /// `rsa-sha2-512`, `rsa-sha2-256` or `ssh-rsa`). The signature's
    /// algorithm must be `algorithm`, or the client refuses it.
    fn sign<'a>(&'a self, algorithm: &'a Algorithm, data: &'a [u8]) -> SignFuture<'a>;
}

/// A host key the key exchange can use: one russh holds, or a signer.
pub(crate) enum HostKey<'a> {
    Held(&'a PrivateKey),
    Signer(&'a dyn HostKeySigner),
}

impl HostKey<'_> {
    /// All of `config`'s host keys, those held first.
    pub(crate) fn all(config: &super::Config) -> Vec<HostKey<'_>> {
        config
            .keys
            .iter()
            .map(HostKey::Held)
            .chain(
                config
                    .host_key_signers
                    .iter()
                    .map(|s| HostKey::Signer(s.as_ref())),
            )
            .collect()
    }

    pub(crate) fn public_key(&self) -> &PublicKey {
        match self {
            HostKey::Held(k) => k.public_key(),
            HostKey::Signer(s) => s.public_key(),
        }
    }

    /// The signature of `data` for `algorithm`, encoded for the wire.
    pub(crate) async fn sign(
        &self,
        algorithm: &Algorithm,
        data: &[u8],
    ) -> Result<Vec<u8>, crate::Error> {
        match self {
            HostKey::Held(k) => {
                let hash = match algorithm {
                    Algorithm::Rsa { hash } => *hash,
                    _ => None,
                };
                let key = PrivateKeyWithHashAlg::new(Arc::new((*k).clone()), hash);
                Ok(sign_with_hash_alg(&key, data)?)
            }
            HostKey::Signer(s) => {
                let signature = s.sign(algorithm, data).await?;
                let mut encoded = Vec::new();
                ssh_encoding::Encode::encode(&signature, &mut encoded)?;
                Ok(encoded)
            }
        }
    }
}

impl fmt::Debug for HostKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            HostKey::Held(_) => "held",
            HostKey::Signer(_) => "signer",
        };
        write!(f, "{} host key ({kind})", self.public_key().algorithm())
    }
}
