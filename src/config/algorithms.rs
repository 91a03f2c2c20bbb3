//! sshd's algorithm lists (`Ciphers`, `MACs`, `KexAlgorithms`, `HostKeyAlgorithms`,
//! `PubkeyAcceptedAlgorithms`, `CASignatureAlgorithms`): the names rsshd can do, its
//! defaults, and the `+`/`-`/`^`/pattern forms assembled as OpenSSH's
//! `kex_assemble_names` does.
//!
//! Every name is spelled as `ssh -Q` spells it. "Can do" means what russh 0.65.1
//! implements (`russh::{cipher,mac,kex}`, and the key algorithms `ssh-key` verifies and
//! signs with); `daemon::algorithms` maps the names onto russh's, and its tests check
//! that every name listed here maps. The defaults are OpenSSH 9.2's, minus what russh
//! lacks and minus what rsshd leaves out on purpose: finite-field Diffie-Hellman,
//! SHA-1 (`ssh-rsa` signatures, `hmac-sha1*`, `diffie-hellman-*-sha1`) and CBC, which
//! an admin may still add with `+` where the library has them.

use russh::keys::{HashAlg, PublicKey};

use crate::config::{FingerprintHash, Settings};
use crate::pattern::{ListMatch, match_pattern, match_pattern_list};

/// Which list a keyword holds; each has its own names, defaults and error wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum List {
    Cipher,
    Mac,
    Kex,
    /// Host key and user key algorithms, certificates included.
    Key,
    /// Signature algorithms a CA may use (`CASignatureAlgorithms`).
    Sig,
}

/// Ciphers russh has, in OpenSSH's `cipher_alg_list` order (the order wildcards
/// expand in).
const CIPHERS: &[&str] = &[
    "aes128-cbc",
    "aes192-cbc",
    "aes256-cbc",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
];

/// OpenSSH 9.2's server default (`KEX_SERVER_ENCRYPT`); russh has all of it.
const DEFAULT_CIPHERS: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
];

/// MACs russh has, in OpenSSH's `mac_alg_list` order.
const MACS: &[&str] = &[
    "hmac-sha1",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
];

/// OpenSSH 9.2's `KEX_SERVER_MAC` without the `umac-*` (not in russh) and SHA-1 ones.
const DEFAULT_MACS: &[&str] = &[
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
];

/// Key exchanges russh has, in OpenSSH's `kex_alg_list` order (OpenSSH 9.9 puts
/// `mlkem768x25519-sha256` last there too). russh's group15/group17 are left out:
/// OpenSSH has no such names.
const KEXES: &[&str] = &[
    "diffie-hellman-group1-sha1",
    "diffie-hellman-group14-sha1",
    "diffie-hellman-group14-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group-exchange-sha1",
    "diffie-hellman-group-exchange-sha256",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "mlkem768x25519-sha256",
];

/// The post-quantum hybrid OpenSSH 9.9+ prefers, then sshd's elliptic-curve
/// exchanges. No finite-field DH: with it any client can make the daemon do an
/// 8192-bit modular exponentiation per handshake for almost nothing
/// (`diffie-hellman-group18-sha512`, the DHEat attack). OpenSSH 9.0-9.8 clients (Debian 12's included)
/// prefer `sntrup761x25519-sha512@openssh.com`, which russh 0.65.1 does not have;
/// they settle on `curve25519-sha256`.
pub(crate) const DEFAULT_KEX: &[&str] = &[
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
];

/// Public key and signature algorithms, in OpenSSH's `sshkey_alg_list` order, with
/// certificate types: those `ssh-key` verifies (user keys, `sk-*` included) or signs
/// with (host keys). A certificate name is accepted and listed as sshd does, though
/// rsshd presents no host certificates and accepts no user certificates yet.
const KEYS: &[&str] = &[
    "ssh-ed25519",
    "ssh-ed25519-cert-v01@openssh.com",
    "sk-ssh-ed25519@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ssh-rsa",
    "ssh-rsa-cert-v01@openssh.com",
    "rsa-sha2-256",
    "rsa-sha2-256-cert-v01@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-512-cert-v01@openssh.com",
];

/// OpenSSH 9.2's `KEX_DEFAULT_PK_ALG` (no SHA-1: no `ssh-rsa`), all of which russh has.
const DEFAULT_KEYS: &[&str] = &[
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
];

/// Signature algorithms (no certificate types), in `sshkey_alg_list` order.
const SIGS: &[&str] = &[
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
    "rsa-sha2-256",
    "rsa-sha2-512",
];

/// OpenSSH 9.2's `SSH_ALLOWED_CA_SIGALGS`.
const DEFAULT_SIGS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
];

/// Names OpenSSH 9.x knows that russh 0.65.1 does not implement: named as such in
/// the error, rather than as unknown.
const OPENSSH_ONLY: &[&str] = &[
    "3des-cbc",
    "hmac-sha1-96",
    "hmac-md5",
    "hmac-md5-96",
    "umac-64@openssh.com",
    "umac-128@openssh.com",
    "hmac-sha1-96-etm@openssh.com",
    "hmac-md5-etm@openssh.com",
    "hmac-md5-96-etm@openssh.com",
    "umac-64-etm@openssh.com",
    "umac-128-etm@openssh.com",
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
    "ssh-dss-cert-v01@openssh.com",
];

impl List {
    /// Every name rsshd can do, in the order patterns expand in.
    pub(crate) fn all(self) -> &'static [&'static str] {
        match self {
            List::Cipher => CIPHERS,
            List::Mac => MACS,
            List::Kex => KEXES,
            List::Key => KEYS,
            List::Sig => SIGS,
        }
    }

    /// What is in force when the keyword is not set.
    pub(crate) fn default_names(self) -> &'static [&'static str] {
        match self {
            List::Cipher => DEFAULT_CIPHERS,
            List::Mac => DEFAULT_MACS,
            List::Kex => DEFAULT_KEX,
            List::Key => DEFAULT_KEYS,
            List::Sig => DEFAULT_SIGS,
        }
    }

    pub(crate) fn defaults(self) -> Vec<&'static str> {
        self.default_names().to_vec()
    }

    /// sshd's words for a list it rejects (servconf.c).
    fn bad(self) -> &'static str {
        match self {
            List::Cipher => "Bad SSH2 cipher spec",
            List::Mac => "Bad SSH2 mac spec",
            List::Kex => "Bad SSH2 KexAlgorithms",
            List::Key | List::Sig => "Bad key types",
        }
    }

    /// sshd accepts patterns outside `-` lists only for key types
    /// (`sshkey_names_valid2` with wildcards allowed).
    fn patterns(self) -> bool {
        matches!(self, List::Key | List::Sig)
    }

    /// Whether `name` is one of OpenSSH's names for this list that rsshd lacks.
    fn openssh_only(self, name: &str) -> bool {
        OPENSSH_ONLY.contains(&name) && self.family(name)
    }

    /// A rough family test so that, say, `3des-cbc` in `MACs` is "unknown" rather
    /// than "not implemented".
    fn family(self, name: &str) -> bool {
        let dss_or_webauthn = name.starts_with("ssh-dss") || name.starts_with("webauthn");
        match self {
            List::Cipher => name.ends_with("-cbc"),
            List::Mac => name.starts_with("hmac-") || name.starts_with("umac-"),
            List::Kex => name.starts_with("sntrup"),
            List::Key => dss_or_webauthn,
            List::Sig => dss_or_webauthn && !name.contains("-cert-"),
        }
    }
}

/// The names of `value` that OpenSSH knows and rsshd lacks (`-` lists remove, so
/// they name none). They are left out of the list in force: what the admin wrote,
/// narrowed, never widened. A list left with nothing is refused (`assemble`).
/// Hardening guides name some of them (`umac-128-etm@openssh.com`,
/// `sntrup761x25519-sha512@openssh.com`), and such a config must still start.
pub(crate) fn not_implemented(list: List, value: &str) -> Vec<&str> {
    if value.starts_with('-') {
        return Vec::new();
    }
    let body = value.strip_prefix(['+', '^']).unwrap_or(value);
    body.split(',').filter(|n| list.openssh_only(n)).collect()
}

/// Check one value as sshd does before storing it, then assemble it (see
/// [`assemble`]). The error is the text after `file:line: Keyword: `.
pub(crate) fn parse(list: List, value: &str) -> Result<Vec<&'static str>, String> {
    let bad = |why: String| format!("{} '{value}': {why}", list.bad());
    if value.is_empty() {
        return Err(bad("empty list".into()));
    }
    // sshd validates everything but `-` lists, where anything may be removed.
    if !value.starts_with('-') {
        let body = value.strip_prefix(['+', '^']).unwrap_or(value);
        for name in body.split(',') {
            check_name(list, name).map_err(bad)?;
        }
    } else if value[1..].split(',').any(str::is_empty) {
        return Err(bad("empty name".into()));
    }
    assemble(list, value).map_err(|e| {
        let missing = not_implemented(list, value);
        if missing.is_empty() {
            bad(e)
        } else {
            bad(format!(
                "{e} ({} not implemented by rsshd)",
                missing.join(", ")
            ))
        }
    })
}

/// One name of a list that is not a `-` list.
fn check_name(list: List, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if list.all().contains(&name) {
        return Ok(());
    }
    // One of OpenSSH's names that russh lacks: taken, and left out of the list
    // by `assemble` (see `not_implemented`).
    if list.openssh_only(name) {
        return Ok(());
    }
    let wild = name.contains(['*', '?', '!']);
    if wild && list.patterns() {
        let pat = name.strip_prefix('!').unwrap_or(name);
        if list.all().iter().any(|n| match_pattern(n, pat)) {
            return Ok(());
        }
        return Err(format!("{name} matches no algorithm rsshd implements"));
    }
    Err(format!("unknown name {name}"))
}

/// OpenSSH's `kex_assemble_names`: `+list` appends to the default, `-list` removes
/// what matches (with `!` exceptions, `match_filter_denylist`), `^list` goes in
/// front, anything else replaces it; outside `-` lists each entry may be a pattern,
/// expanded over every name rsshd can do, in that order. Duplicates are dropped.
/// Unlike sshd (which then quietly falls back to its default), a list left empty is
/// an error.
pub(crate) fn assemble(list: List, value: &str) -> Result<Vec<&'static str>, String> {
    let def = list.default_names();
    let out = if let Some(remove) = value.strip_prefix('-') {
        def.iter()
            .copied()
            .filter(|n| match_pattern_list(n, remove, false) != ListMatch::Positive)
            .collect()
    } else {
        let entries: Vec<&str> = match value.as_bytes().first() {
            Some(b'+') => def.iter().copied().chain(value[1..].split(',')).collect(),
            Some(b'^') => value[1..].split(',').chain(def.iter().copied()).collect(),
            _ => value.split(',').collect(),
        };
        let mut out: Vec<&'static str> = Vec::new();
        for e in entries {
            if e.starts_with('!') {
                return Err(format!("negated pattern {e} outside a \"-\" list"));
            }
            for n in list.all().iter().filter(|n| match_pattern(n, e)) {
                if !out.contains(n) {
                    out.push(n);
                }
            }
        }
        out
    };
    if out.is_empty() {
        return Err("no algorithm left".into());
    }
    Ok(out)
}

// User and host key facts the privileged boundary (`host`) and the network side
// both need; here, beside the algorithm lists, so that neither imports the other
// for them (`host` once imported them from `daemon`, which imports `host`).

/// The exact size of an RSA key's modulus in bits (OpenSSH's `BN_num_bits`), `None`
/// for other keys.
pub(crate) fn rsa_bits(key: &PublicKey) -> Option<u32> {
    let n = key.key_data().rsa()?.n().as_positive_bytes()?;
    let first = n.iter().position(|b| *b != 0)?;
    let len = u32::try_from(n.len() - first).ok()?;
    Some((len - 1) * 8 + (8 - n[first].leading_zeros()))
}

/// A key's fingerprint as sshd logs it under `FingerprintHash`: `SHA256:` and
/// unpadded base64, or `MD5:` and colon-separated hex of the MD5 of the key blob
/// (what `ssh-keygen -l -E md5` prints).
pub(crate) fn fingerprint(key: &PublicKey, hash: FingerprintHash) -> String {
    let blob = match hash {
        FingerprintHash::Sha256 => None,
        FingerprintHash::Md5 => key.to_bytes().ok(),
    };
    let Some(blob) = blob else {
        return key.fingerprint(HashAlg::Sha256).to_string();
    };
    let hex: Vec<String> = md5::compute(blob)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("MD5:{}", hex.join(":"))
}

/// Whether a user key may authenticate with the signature algorithm the client
/// named (for a certificate, its certificate type: `ssh-ed25519-cert-v01@openssh.com`);
/// `Err` is the line sshd logs on refusing it (auth2-pubkey.c).
pub(crate) fn check_user_key_named(
    s: &Settings,
    key: &PublicKey,
    name: &str,
) -> Result<(), String> {
    if !s.pubkey_accepted_algorithms.contains(&name) {
        return Err(format!(
            "userauth_pubkey: signature algorithm {name} not in PubkeyAcceptedAlgorithms [preauth]"
        ));
    }
    if rsa_bits(key).is_some_and(|bits| bits < s.required_rsa_size) {
        return Err("refusing RSA key: Invalid key length [preauth]".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(list: List, v: &str) -> Result<String, String> {
        parse(list, v).map(|l| l.join(","))
    }

    #[test]
    fn forms_assemble_as_sshd() {
        use List::*;
        // Outputs here are what /usr/sbin/sshd -T (9.2) prints for the same lines,
        // where both have the names (tests/algorithms.rs runs sshd itself).
        assert_eq!(
            a(Cipher, "+aes128-cbc").unwrap(),
            "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,\
             aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes128-cbc"
        );
        assert_eq!(
            a(Cipher, "-aes*,!aes256-ctr").unwrap(),
            "chacha20-poly1305@openssh.com,aes256-ctr"
        );
        assert_eq!(
            a(Cipher, "^aes256-ctr,aes128-cbc").unwrap(),
            "aes256-ctr,aes128-cbc,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,\
             aes128-gcm@openssh.com,aes256-gcm@openssh.com"
        );
        assert_eq!(a(Cipher, "aes128-ctr,aes128-ctr").unwrap(), "aes128-ctr");
        assert_eq!(
            a(Key, "ssh-ed25519*").unwrap(),
            "ssh-ed25519,ssh-ed25519-cert-v01@openssh.com"
        );
        assert_eq!(
            a(Key, "sk-*,ssh-ed25519").unwrap(),
            "sk-ssh-ed25519@openssh.com,sk-ssh-ed25519-cert-v01@openssh.com,\
             sk-ecdsa-sha2-nistp256@openssh.com,sk-ecdsa-sha2-nistp256-cert-v01@openssh.com,\
             ssh-ed25519"
        );
        assert_eq!(
            a(Key, "-*cert*,!ssh-ed25519-cert*").unwrap(),
            "ssh-ed25519-cert-v01@openssh.com,ssh-ed25519,ecdsa-sha2-nistp256,\
             ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,sk-ssh-ed25519@openssh.com,\
             sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,rsa-sha2-256"
        );
        assert!(
            a(Key, "+ssh-rsa*")
                .unwrap()
                .ends_with("rsa-sha2-512,rsa-sha2-256,ssh-rsa,ssh-rsa-cert-v01@openssh.com")
        );
        assert_eq!(
            a(Sig, "^ssh-rsa").unwrap(),
            "ssh-rsa,ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,\
             sk-ssh-ed25519@openssh.com,sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,\
             rsa-sha2-256"
        );
        // A `-` list may name anything, known or not.
        assert_eq!(a(Mac, "-hmac-sha1,foo").unwrap(), DEFAULT_MACS.join(","));
        assert_eq!(
            a(Kex, "-sntrup*,diffie-hellman*,mlkem*").unwrap(),
            "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,\
             ecdh-sha2-nistp384,ecdh-sha2-nistp521"
        );
    }

    /// Names OpenSSH has and russh lacks, as hardening guides write them: left
    /// out (the config loader warns), the rest applied; never an addition.
    #[test]
    fn names_rsshd_lacks_are_left_out() {
        use List::*;
        assert_eq!(
            a(
                Mac,
                "hmac-sha2-512-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com"
            )
            .unwrap(),
            "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com"
        );
        assert_eq!(
            a(Kex, "sntrup761x25519-sha512@openssh.com,curve25519-sha256").unwrap(),
            "curve25519-sha256"
        );
        assert_eq!(
            a(Mac, "+umac-64-etm@openssh.com").unwrap(),
            DEFAULT_MACS.join(",")
        );
        assert_eq!(
            a(Kex, "^sntrup761x25519-sha512@openssh.com").unwrap(),
            List::Kex.default_names().join(",")
        );
        assert_eq!(
            not_implemented(
                Mac,
                "hmac-sha2-256,umac-128@openssh.com,umac-64@openssh.com"
            ),
            ["umac-128@openssh.com", "umac-64@openssh.com"]
        );
        assert!(not_implemented(Mac, "-umac*").is_empty());
        assert!(not_implemented(Cipher, "aes128-ctr").is_empty());
    }

    #[test]
    fn bad_lists_are_named_as_sshd_names_them() {
        use List::*;
        assert_eq!(
            a(Cipher, "aes*"),
            Err("Bad SSH2 cipher spec 'aes*': unknown name aes*".into())
        );
        assert_eq!(
            a(Cipher, "aes128-ctr,foo"),
            Err("Bad SSH2 cipher spec 'aes128-ctr,foo': unknown name foo".into())
        );
        assert_eq!(
            a(Key, "foo*"),
            Err("Bad key types 'foo*': foo* matches no algorithm rsshd implements".into())
        );
        // Only names rsshd lacks: nothing is left.
        assert_eq!(
            a(Key, "ssh-dss"),
            Err(
                "Bad key types 'ssh-dss': no algorithm left (ssh-dss not implemented by rsshd)"
                    .into()
            )
        );
        assert!(a(Sig, "3des-cbc").unwrap_err().contains("unknown name"));
        assert_eq!(
            a(Key, "!ssh-rsa"),
            Err("Bad key types '!ssh-rsa': negated pattern !ssh-rsa outside a \"-\" list".into())
        );
        assert_eq!(
            a(Cipher, "-*"),
            Err("Bad SSH2 cipher spec '-*': no algorithm left".into())
        );
        assert!(a(Cipher, "aes128-ctr,,x").is_err());
        assert!(a(Cipher, "-aes128-ctr,").is_err());
        assert!(a(Kex, "").is_err());
    }

    #[test]
    fn defaults_leave_out_sha1_cbc_and_finite_field_dh() {
        for list in [List::Cipher, List::Mac, List::Kex, List::Key, List::Sig] {
            for n in list.default_names() {
                assert!(list.all().contains(n), "{n} default but not implemented");
                assert!(
                    !n.contains("cbc") && !n.contains("sha1") && !n.starts_with("diffie-hellman"),
                    "{n}"
                );
                assert!(*n != "ssh-rsa" && !n.starts_with("ssh-rsa-cert"), "{n}");
            }
        }
        for n in OPENSSH_ONLY {
            let lists = [List::Cipher, List::Mac, List::Kex, List::Key, List::Sig];
            assert!(lists.iter().any(|l| l.openssh_only(n)), "{n} in no family");
            assert!(lists.iter().all(|l| !l.all().contains(n)), "{n}");
        }
    }
}
