//! Security keys (FIDO `sk-ssh-ed25519@openssh.com`,
//! `sk-ecdsa-sha2-nistp256@openssh.com`, and their certificates): what their
//! signatures' flags must show once the signature itself is verified (with
//! `ssh-key`, which checks the authenticator's signed data: application hash,
//! flags, counter, message hash), as sshd judges them (auth2-pubkey.c): user
//! presence unless the key's `no-touch-required` (a certificate's extension)
//! waives it and `PubkeyAuthOptions touch-required` does not insist; user
//! verification when `verify-required` (key option, certificate critical option)
//! or `PubkeyAuthOptions verify-required` asks. Plain data in, sshd's words out.

use russh::keys::Algorithm;
use russh::keys::ssh_key::Signature;

use super::KeyOptions;
use crate::config::PubkeyAuthOptions;

/// The authenticator saw the user (a touch).
const USER_PRESENCE: u8 = 0x01;
/// The authenticator verified the user (PIN, biometrics).
const USER_VERIFICATION: u8 = 0x04;

/// Whether keys of this algorithm live in a security key.
pub(crate) fn is_security_key(alg: &Algorithm) -> bool {
    matches!(alg, Algorithm::SkEd25519 | Algorithm::SkEcdsaSha2NistP256)
}

/// What a security key's signature says besides the signature proper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SkDetails {
    pub(crate) flags: u8,
    /// The authenticator's signature counter. sshd 9.2 logs it at debug
    /// level only; its `ExposeAuthInfo` file does not carry it (the monitor,
    /// which writes the file's lines, does not record it).
    pub(crate) counter: u32,
}

impl SkDetails {
    /// The flags and counter after the signature proper (its last five bytes,
    /// as ssh-key splits them to verify it); `None` for any other signature.
    pub(crate) fn of(sig: &Signature) -> Option<SkDetails> {
        if !is_security_key(&sig.algorithm()) {
            return None;
        }
        let b = sig.as_bytes();
        let tail = b.get(b.len().checked_sub(5)?..)?;
        Some(SkDetails {
            flags: tail[0],
            counter: u32::from_be_bytes([tail[1], tail[2], tail[3], tail[4]]),
        })
    }
}

/// A requirement the signature did not meet, in sshd's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unmet {
    Presence,
    Verification,
}

/// sshd's judgement of a verified security-key signature: `options` are the
/// key's (merged with its certificate's), `server` PubkeyAuthOptions.
pub(crate) fn judge(
    d: SkDetails,
    options: &KeyOptions,
    server: PubkeyAuthOptions,
) -> Result<(), Unmet> {
    let presence = server.touch_required || !options.no_touch_required;
    if presence && d.flags & USER_PRESENCE == 0 {
        return Err(Unmet::Presence);
    }
    let verification = server.verify_required || options.verify_required;
    if verification && d.flags & USER_VERIFICATION == 0 {
        return Err(Unmet::Verification);
    }
    Ok(())
}

/// sshd's error line for a refused signature (with its trailing blank):
/// `key` is sshd's `TYPE SHA256:...`, `invalid` whether the user is invalid.
pub(crate) fn refusal_line(
    unmet: Unmet,
    key: &str,
    invalid: bool,
    user: &str,
    peer: &std::net::SocketAddr,
) -> String {
    let what = match unmet {
        Unmet::Presence => "user presence (authenticator touch)",
        Unmet::Verification => "user verification",
    };
    format!(
        "public key {key} signature for {}{user} from {} port {} rejected: {what} requirement not met ",
        if invalid { "invalid user " } else { "" },
        crate::log::display_ip(peer),
        peer.port()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(flags: u8, counter: u32) -> Signature {
        let mut data = vec![7u8; 64];
        data.push(flags);
        data.extend_from_slice(&counter.to_be_bytes());
        Signature::new(Algorithm::SkEd25519, data).unwrap()
    }

    #[test]
    fn flags_and_counter_are_read_from_the_tail() {
        let d = SkDetails::of(&sig(0x05, 0x1234_5678)).unwrap();
        assert_eq!(d.flags, 0x05);
        assert_eq!(d.counter, 0x1234_5678);
        let plain = Signature::new(Algorithm::Ed25519, vec![0u8; 64]).unwrap();
        assert_eq!(SkDetails::of(&plain), None);
    }

    #[test]
    fn sshds_rules() {
        let d = |flags| SkDetails { flags, counter: 1 };
        let none = KeyOptions::default();
        let no_touch = KeyOptions {
            no_touch_required: true,
            ..KeyOptions::default()
        };
        let verify = KeyOptions {
            verify_required: true,
            ..KeyOptions::default()
        };
        let server = PubkeyAuthOptions::default();
        let touch_server = PubkeyAuthOptions {
            touch_required: true,
            verify_required: false,
        };
        let verify_server = PubkeyAuthOptions {
            touch_required: false,
            verify_required: true,
        };
        // By default a touch is required.
        assert_eq!(judge(d(0x01), &none, server), Ok(()));
        assert_eq!(judge(d(0x00), &none, server), Err(Unmet::Presence));
        // no-touch-required waives it, unless the server insists.
        assert_eq!(judge(d(0x00), &no_touch, server), Ok(()));
        assert_eq!(
            judge(d(0x00), &no_touch, touch_server),
            Err(Unmet::Presence)
        );
        // verify-required, from the key or the server.
        assert_eq!(judge(d(0x01), &verify, server), Err(Unmet::Verification));
        assert_eq!(judge(d(0x05), &verify, server), Ok(()));
        assert_eq!(
            judge(d(0x01), &none, verify_server),
            Err(Unmet::Verification)
        );
        assert_eq!(judge(d(0x04), &no_touch, verify_server), Ok(()));
        let peer = "127.0.0.1:4242".parse().unwrap();
        assert_eq!(
            refusal_line(
                Unmet::Presence,
                "ED25519-SK SHA256:x",
                false,
                "alice",
                &peer
            ),
            "public key ED25519-SK SHA256:x signature for alice from 127.0.0.1 port 4242 rejected: user presence (authenticator touch) requirement not met "
        );
        assert_eq!(
            refusal_line(Unmet::Verification, "ECDSA-SK SHA256:y", true, "bob", &peer),
            "public key ECDSA-SK SHA256:y signature for invalid user bob from 127.0.0.1 port 4242 rejected: user verification requirement not met "
        );
    }
}
