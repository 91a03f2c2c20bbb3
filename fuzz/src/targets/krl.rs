//! `RevokedKeys` files: OpenSSH KRLs and key lists (rsshd::krl).

use rsshd::krl::{explicit_key_section, is_krl, is_revoked_line};

/// A user key and a certificate of it (serial 150, ID `alice@corp`), both made by
/// `ssh-keygen`.
const SUBJECTS: &[&str] = &[
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFwCWcbAL305UwfIIPIdur3CACcO0iSKX7HuAuhq8c3a",
    "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIBEKwRVXF92dOvU473zx2pZ0jmAgq7qlBTqI4bTwLwDDAAAAIFwCWcbAL305UwfIIPIdur3CACcO0iSKX7HuAuhq8c3aAAAAAAAAAJYAAAABAAAACmFsaWNlQGNvcnAAAAAJAAAABWFsaWNlAAAAAAAAAAD//////////wAAAAAAAACCAAAAFXBlcm1pdC1YMTEtZm9yd2FyZGluZwAAAAAAAAAXcGVybWl0LWFnZW50LWZvcndhcmRpbmcAAAAAAAAAFnBlcm1pdC1wb3J0LWZvcndhcmRpbmcAAAAAAAAACnBlcm1pdC1wdHkAAAAAAAAADnBlcm1pdC11c2VyLXJjAAAAAAAAAAAAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIPf+k5+6H1YC4cgAjZPHV4yu7AjdEVCDhfqryfPt+H5mAAAAUwAAAAtzc2gtZWQyNTUxOQAAAEBXdnGnq5Yqi8LfFYXJNuo4rTt0x2RPhdPuNSc5hW6lK5XGPGvO1tEF33iTB5QGlSaigmx/vY7iXIlrQRROutgA",
];

/// Input: the file's bytes. Oracles: the same answer twice; and revocation only
/// grows: a file that was judged (not an error) and then gets the subject's key
/// added (a KRL section, or a list line) revokes it.
pub fn krl(data: &[u8]) {
    for subject in SUBJECTS {
        let first = is_revoked_line(data, subject).expect("fixture parses");
        assert_eq!(
            first,
            is_revoked_line(data, subject).expect("fixture parses")
        );
        if first.is_err() {
            continue;
        }
        let mut grown = data.to_vec();
        if is_krl(data) {
            grown.extend(explicit_key_section(subject).expect("fixture parses"));
        } else {
            grown.push(b'\n');
            grown.extend_from_slice(subject.as_bytes());
        }
        assert_eq!(
            is_revoked_line(&grown, subject),
            Some(Ok(true)),
            "adding {subject:?} did not revoke it"
        );
    }
}
