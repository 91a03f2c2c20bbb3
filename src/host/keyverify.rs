//! `KeyVerify`: the host checks a `publickey` signature itself, never taking the
//! network side's word that the client proved its key. The signed data must be
//! RFC 4252 section 7's, for this user and the key (or certificate) the host
//! allowed last on this connection, over a session identifier the host signed
//! in a key exchange and that no other connection has used; the signature is
//! checked with `ssh-key`. Only then is the method recorded.

use russh::keys::signature::Verifier;
use russh::keys::ssh_encoding::Decode;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::ssh_key::{Certificate, Signature};
use russh::keys::{Algorithm, PublicKey};

use super::HostError;
use super::api::MethodResult;
use super::auth_state::ConnState;
use super::service::Service;
use super::sk::SkDetails;

/// `SSH_MSG_USERAUTH_REQUEST`.
const USERAUTH_REQUEST: u8 = 50;

/// What a `KeyVerify` request carries besides its connection.
pub(super) struct KeyProof {
    pub(super) user: String,
    pub(super) key_openssh: String,
    pub(super) cert_openssh: Option<String>,
    /// The signature's algorithm (for a certificate, the plain one it signs with).
    pub(super) algo: String,
    pub(super) signed_data: Vec<u8>,
    /// The signature as SSH encodes it (algorithm name, then the blob).
    pub(super) signature: Vec<u8>,
}

/// The fields of the signed data (RFC 4252 section 7).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SignedRequest {
    pub(super) session_id: Vec<u8>,
    pub(super) user: String,
    /// The algorithm name the request gives (a certificate type for a certificate).
    pub(super) algo: String,
    pub(super) blob: Vec<u8>,
}

/// Parse `data` as the userauth signature payload: string session identifier,
/// byte 50, string user, string "ssh-connection", string "publickey", TRUE,
/// string algorithm, string key blob, and nothing after.
pub(super) fn parse_signed(data: &[u8]) -> Result<SignedRequest, String> {
    let bad = |what: &str| format!("signed data: {what}");
    let r = &mut &data[..];
    let session_id = Vec::<u8>::decode(r).map_err(|_| bad("no session identifier"))?;
    if u8::decode(r).ok() != Some(USERAUTH_REQUEST) {
        return Err(bad("not a USERAUTH_REQUEST"));
    }
    let user = String::decode(r).map_err(|_| bad("no user name"))?;
    if String::decode(r).ok().as_deref() != Some("ssh-connection") {
        return Err(bad("not for ssh-connection"));
    }
    if String::decode(r).ok().as_deref() != Some("publickey") {
        return Err(bad("not a publickey request"));
    }
    if u8::decode(r).ok() != Some(1) {
        return Err(bad("not a signed request"));
    }
    let algo = String::decode(r).map_err(|_| bad("no algorithm"))?;
    let blob = Vec::<u8>::decode(r).map_err(|_| bad("no key"))?;
    if !r.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(SignedRequest {
        session_id,
        user,
        algo,
        blob,
    })
}

impl ConnState {
    /// A security key's verified signature against what its options and
    /// PubkeyAuthOptions demand of its flags; a refusal is a failed attempt,
    /// logged in sshd's words.
    fn security_key_flags(
        &mut self,
        user: &str,
        key: &PublicKey,
        cert: Option<&Certificate>,
        details: SkDetails,
        options: &super::KeyOptions,
    ) -> Result<(), MethodResult> {
        let server = self.candidate(user).settings.pubkey_auth_options;
        let Err(unmet) = super::sk::judge(details, options, server) else {
            return Ok(());
        };
        let desc = format!(
            "{} {}",
            super::certs::type_name(&key.algorithm(), cert.is_some()),
            crate::config::algorithms::fingerprint(key, self.fingerprint_hash)
        );
        let invalid = self.is_invalid(user);
        tracing::error!(
            "{}",
            super::sk::refusal_line(unmet, &desc, invalid, user, &self.peer)
        );
        tracing::debug!(
            "Failed publickey for {user} from {} ssh2: {desc}",
            crate::log::peer(&self.peer)
        );
        Err(MethodResult::Failed {
            count: true,
            methods: Vec::new(),
        })
    }

    /// `KeyVerify`; an `Err` is a refusal (logged at error level, without the
    /// signature), an `Ok` the method's result as `publickey_proved` gives it.
    pub(super) async fn key_verify(
        &mut self,
        host: &Service,
        proof: KeyProof,
    ) -> Result<MethodResult, HostError> {
        let conn = self.id;
        let refuse = |why: String| {
            tracing::error!(
                "host: refused KeyVerify from network side on connection {}: {why}",
                conn.0
            );
            HostError::NotPermitted(why)
        };
        let offered = super::authn::parse_key(
            &proof.key_openssh,
            Some(&proof.algo),
            proof.cert_openssh.as_deref(),
        )
        .map_err(|e| refuse(e.to_string()))?;
        let signed = parse_signed(&proof.signed_data).map_err(refuse)?;
        if signed.user != proof.user {
            return Err(refuse("signed for another user".into()));
        }
        // The key (or certificate) signed must be the one named, and the one the
        // host allowed last here for this user.
        let (key, cert) = (&offered.key, offered.cert.as_deref());
        let sig_algo = match cert {
            Some(c) => {
                let signed_cert = Certificate::decode(&mut &signed.blob[..])
                    .map_err(|_| refuse("signed data: unreadable certificate".into()))?;
                if signed_cert != *c {
                    return Err(refuse("signed for another certificate".into()));
                }
                Algorithm::new_certificate(&signed.algo)
            }
            None => {
                let signed_key = KeyData::decode(&mut &signed.blob[..])
                    .map_err(|_| refuse("signed data: unreadable key".into()))?;
                if signed_key != *key.key_data() {
                    return Err(refuse("signed for another key".into()));
                }
                Algorithm::new(&signed.algo)
            }
        }
        .map_err(|_| refuse(format!("signed data: unknown algorithm {:?}", signed.algo)))?;
        let allowed = self.keys.allowed.take();
        let options = match allowed {
            Some(a)
                if a.user == proof.user
                    && a.key.key_data() == key.key_data()
                    && a.cert.as_deref() == cert =>
            {
                a.options
            }
            _ => {
                return Err(refuse(
                    "key not allowed on this connection for this user".into(),
                ));
            }
        };
        // RFC 4252 section 7 and RFC 8332: the signature is made with the
        // algorithm the request names (no SHA-1 signature under rsa-sha2-512).
        let signature = Signature::decode(&mut &proof.signature[..])
            .map_err(|_| refuse("unreadable signature".into()))?;
        if Some(&sig_algo) != offered.algo.as_ref() || signature.algorithm() != sig_algo {
            return Err(refuse(
                "signature algorithm is not the one requested".into(),
            ));
        }
        // For a certificate, the certified key signed (for a security key,
        // ssh-key checks the authenticator's data: application, flags,
        // counter).
        Verifier::verify(key.key_data(), &proof.signed_data, &signature)
            .map_err(|_| refuse(format!("bad signature by {}", key.algorithm())))?;
        let now = tokio::time::Instant::now();
        host.kex()
            .bind(&signed.session_id, conn, now)
            .map_err(|why| refuse(why.to_string()))?;
        tracing::debug!(
            "host: verified {} signature of {} on connection {}",
            sig_algo.as_str(),
            proof.user,
            conn.0
        );
        if let Some(details) = SkDetails::of(&signature)
            && let Err(unmet) = self.security_key_flags(&proof.user, key, cert, details, &options)
        {
            return Ok(unmet);
        }
        Ok(self
            .publickey_proved(host, &proof.user, key, cert, options)
            .await)
    }
}
