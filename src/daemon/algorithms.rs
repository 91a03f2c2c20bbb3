//! What the transport keywords mean to russh: the lists offered in the key exchange
//! (`Ciphers`, `MACs`, `KexAlgorithms`, `HostKeyAlgorithms`, `Compression`), the
//! rekey limits (`RekeyLimit`), and the checks on keys (`RequiredRSASize` for host
//! and user keys, `PubkeyAcceptedAlgorithms` for user keys). The lists themselves are
//! assembled by `config::algorithms`, which names only what russh implements; the
//! tests below check that every such name maps onto russh's.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::Algorithm;
use russh::{Limits, Preferred, SshId, cipher, compression, kex, mac};

#[cfg(test)]
use crate::config::FingerprintHash;
use crate::config::Settings;
use crate::config::algorithms::rsa_bits;
#[cfg(test)]
use crate::config::algorithms::{check_user_key_named, fingerprint};

/// A host key configuration the daemon cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum AlgorithmError {
    /// sshd's words (`Host key %s: Invalid key length`), with the sizes.
    #[error("Host key {}: Invalid key length ({bits}-bit RSA key, RequiredRSASize {min})", path.display())]
    RsaHostKeyTooSmall { path: PathBuf, bits: u32, min: u32 },
    #[error("no host key can be used with HostKeyAlgorithms {0}")]
    NoUsableHostKey(String),
}

/// rsshd's KEX list in russh's terms, with the two extension markers every
/// OpenSSH server sends (`ext-info-s` for `server-sig-algs`, and strict key
/// exchange against Terrapin, CVE-2023-48795); russh sends only what is listed.
fn kex_names(names: &[&str]) -> Vec<kex::Name> {
    names
        .iter()
        .filter_map(|n| kex::Name::try_from(*n).ok())
        .chain([
            kex::EXTENSION_SUPPORT_AS_SERVER,
            kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
        ])
        .collect()
}

/// What the key exchange offers, in the configured order. Certificate names in
/// `HostKeyAlgorithms` are kept in the list (as sshd) but rsshd has no host
/// certificates to present, so only plain algorithms reach russh.
pub fn preferred(s: &Settings) -> Preferred {
    Preferred {
        kex: Cow::Owned(kex_names(&s.kex_algorithms)),
        key: Cow::Owned(
            s.host_key_algorithms
                .iter()
                .filter(|n| !n.contains("-cert-"))
                .filter_map(|n| Algorithm::new(n).ok())
                .collect(),
        ),
        host_key_certificates: Cow::Borrowed(&[]),
        cipher: Cow::Owned(
            s.ciphers
                .iter()
                .filter_map(|n| cipher::Name::try_from(*n).ok())
                .collect(),
        ),
        mac: Cow::Owned(
            s.macs
                .iter()
                .filter_map(|n| mac::Name::try_from(*n).ok())
                .collect(),
        ),
        // sshd 9.x: `zlib@openssh.com` only, which starts after authentication
        // (`Compression yes` and `delayed` alike); never the pre-auth `zlib`.
        compression: Cow::Borrowed(if s.compression {
            &[compression::NONE, compression::ZLIB_LEGACY]
        } else {
            &[compression::NONE]
        }),
    }
}

/// The most russh lets a key be used for (it refuses larger limits: its nonces).
const RUSSH_MAX_REKEY_BYTES: u64 = 1 << 30;

/// "No time limit": far enough that no connection lives to see it.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `RekeyLimit` in russh's terms. `default` is russh's own byte limit (1 GiB, the
/// most it accepts; sshd's default for 128-bit block ciphers is 2^32 blocks), and a
/// larger limit is lowered to it: rekeying sooner than asked widens nothing. No
/// interval means no time-based rekeying, as in sshd.
pub fn limits(s: &Settings) -> Limits {
    let bytes = match s.rekey_limit.bytes {
        0 => RUSSH_MAX_REKEY_BYTES,
        b => b.min(RUSSH_MAX_REKEY_BYTES),
    };
    let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    Limits::new(bytes, bytes, s.rekey_limit.interval.unwrap_or(NEVER))
}

/// The russh configuration for one connection: the daemon's, unless a `Match` on
/// the connection's address or port gives it other rekey limits (the one
/// transport setting sshd lets `Match` change).
pub fn for_connection(
    protocol: &Arc<russh::server::Config>,
    global: &Settings,
    pre_auth: &Settings,
) -> Arc<russh::server::Config> {
    if pre_auth.rekey_limit == global.rekey_limit {
        return Arc::clone(protocol);
    }
    Arc::new(with_limits(protocol, limits(pre_auth)))
}

/// A copy of `c` with other limits (russh's `Config` is not `Clone`).
fn with_limits(c: &russh::server::Config, limits: Limits) -> russh::server::Config {
    russh::server::Config {
        server_id: match &c.server_id {
            SshId::Standard(s) => SshId::Standard(s.clone()),
            SshId::Raw(s) => SshId::Raw(s.clone()),
        },
        methods: c.methods.clone(),
        auth_rejection_time: c.auth_rejection_time,
        auth_rejection_time_initial: c.auth_rejection_time_initial,
        keys: c.keys.clone(),
        host_key_signers: c.host_key_signers.clone(),
        certificates: c.certificates.clone(),
        limits,
        window_size: c.window_size,
        maximum_packet_size: c.maximum_packet_size,
        channel_buffer_size: c.channel_buffer_size,
        event_buffer_size: c.event_buffer_size,
        preferred: c.preferred.clone(),
        max_auth_attempts: c.max_auth_attempts,
        inactivity_timeout: c.inactivity_timeout,
        keepalive_interval: c.keepalive_interval,
        keepalive_max: c.keepalive_max,
        nodelay: c.nodelay,
        manual_window: c.manual_window,
    }
}

/// Refuse to start, as sshd 9.x does for each such key, on an RSA host key shorter
/// than `RequiredRSASize` (rsshd refuses any host key it cannot use rather than
/// skipping it); and when `HostKeyAlgorithms` leaves no host key usable.
pub fn check_host_keys(
    paths: &[PathBuf],
    keys: &[crate::host::host_keys::HostKey],
    s: &Settings,
) -> Result<(), AlgorithmError> {
    for (i, key) in keys.iter().enumerate() {
        if let Some(bits) = rsa_bits(key.public_key())
            && bits < s.required_rsa_size
        {
            let path = paths.get(i).cloned().unwrap_or_default();
            return Err(AlgorithmError::RsaHostKeyTooSmall {
                path,
                bits,
                min: s.required_rsa_size,
            });
        }
    }
    let offered = preferred(s);
    let usable = keys.iter().any(|k| {
        offered.key.iter().any(|a| match a {
            Algorithm::Rsa { .. } => k.public_key().algorithm().is_rsa(),
            a => k.public_key().algorithm() == *a,
        })
    });
    if !usable {
        return Err(AlgorithmError::NoUsableHostKey(
            s.host_key_algorithms.join(","),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::algorithms::List;

    #[test]
    fn every_name_rsshd_accepts_maps_onto_russh() {
        for n in List::Cipher.all() {
            assert!(cipher::Name::try_from(*n).is_ok(), "{n}");
        }
        for n in List::Mac.all() {
            assert!(mac::Name::try_from(*n).is_ok(), "{n}");
        }
        for n in List::Kex.all() {
            assert!(kex::Name::try_from(*n).is_ok(), "{n}");
        }
        for n in List::Key.all().iter().chain(List::Sig.all()) {
            let ok = if n.contains("-cert-") {
                Algorithm::new_certificate(n).is_ok()
            } else {
                Algorithm::new(n).is_ok_and(|a| a.as_str() == *n)
            };
            assert!(ok, "{n}");
        }
    }

    #[test]
    fn defaults_offer_no_finite_field_dh_sha1_or_cbc() {
        let p = preferred(&Settings::default());
        let kex: Vec<&str> = p.kex.iter().map(|k| k.as_ref()).collect();
        assert_eq!(
            kex,
            [
                "mlkem768x25519-sha256",
                "curve25519-sha256",
                "curve25519-sha256@libssh.org",
                "ecdh-sha2-nistp256",
                "ecdh-sha2-nistp384",
                "ecdh-sha2-nistp521",
                "ext-info-s",
                "kex-strict-s-v00@openssh.com",
            ]
        );
        assert!(p.cipher.iter().all(|c| !c.as_ref().contains("cbc")));
        assert!(p.mac.iter().all(|m| !m.as_ref().contains("sha1")));
        assert!(!p.key.contains(&Algorithm::Rsa { hash: None }));
        let comp: Vec<&str> = p.compression.iter().map(|c| c.as_ref()).collect();
        assert_eq!(comp, ["none", "zlib@openssh.com"]);
        let mut s = Settings::default();
        s.compression = false;
        assert_eq!(preferred(&s).compression.len(), 1);
    }

    #[test]
    fn rekey_limits_map_onto_russh() {
        let mut s = Settings::default();
        let l = limits(&s);
        assert_eq!((l.rekey_write_limit, l.rekey_time_limit), (1 << 30, NEVER));
        s.rekey_limit.bytes = 1 << 20;
        s.rekey_limit.interval = Some(Duration::from_secs(600));
        let l = limits(&s);
        assert_eq!(l.rekey_read_limit, 1 << 20);
        assert_eq!(l.rekey_time_limit, Duration::from_secs(600));
        s.rekey_limit.bytes = 1 << 40;
        assert_eq!(limits(&s).rekey_write_limit, 1 << 30);
    }

    #[test]
    fn md5_fingerprints_read_as_ssh_keygen_prints_them() {
        // `ssh-keygen -l -E md5` on this key prints the MD5 line below.
        let key = russh::keys::PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        )
        .unwrap();
        assert_eq!(
            fingerprint(&key, FingerprintHash::Md5),
            "MD5:65:96:2d:fc:e8:d5:a9:11:64:0c:0f:ea:00:6e:5b:bd"
        );
        assert!(fingerprint(&key, FingerprintHash::Sha256).starts_with("SHA256:"));
    }

    #[test]
    fn user_keys_are_checked_with_sshd_words() {
        let ed = russh::keys::PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let s = Settings::default();
        assert!(check_user_key_named(&s, ed.public_key(), Algorithm::Ed25519.as_str()).is_ok());
        assert_eq!(
            check_user_key_named(&s, ed.public_key(), Algorithm::Rsa { hash: None }.as_str()),
            Err(
                "userauth_pubkey: signature algorithm ssh-rsa not in PubkeyAcceptedAlgorithms \
                 [preauth]"
                    .into()
            )
        );
    }
}
