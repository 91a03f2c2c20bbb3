//! KRLs made by OpenSSH 9.2's `ssh-keygen -k` (as hex below; the real-client tests
//! in tests/revoked_keys.rs make theirs at run time) and hand-built malformed ones.

use super::*;

/// `ssh-keygen -t ed25519` public keys; CERT is USER signed by CA with
/// `-I alice@corp -z 150`.
const USER: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFwCWcbAL305UwfIIPIdur3CACcO0iSKX7HuAuhq8c3a root@vm";
const OTHER: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJaA1+sUvNusknaNyn2hUYo5jyAdaIHFZcoPIcg8yORD root@vm";
const CA: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPf+k5+6H1YC4cgAjZPHV4yu7AjdEVCDhfqryfPt+H5m ca";
const CERT: &str = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIBEKwRVXF92dOvU473zx2pZ0jmAgq7qlBTqI4bTwLwDDAAAAIFwCWcbAL305UwfIIPIdur3CACcO0iSKX7HuAuhq8c3aAAAAAAAAAJYAAAABAAAACmFsaWNlQGNvcnAAAAAJAAAABWFsaWNlAAAAAAAAAAD//////////wAAAAAAAACCAAAAFXBlcm1pdC1YMTEtZm9yd2FyZGluZwAAAAAAAAAXcGVybWl0LWFnZW50LWZvcndhcmRpbmcAAAAAAAAAFnBlcm1pdC1wb3J0LWZvcndhcmRpbmcAAAAAAAAACnBlcm1pdC1wdHkAAAAAAAAADnBlcm1pdC11c2VyLXJjAAAAAAAAAAAAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIPf+k5+6H1YC4cgAjZPHV4yu7AjdEVCDhfqryfPt+H5mAAAAUwAAAAtzc2gtZWQyNTUxOQAAAEBXdnGnq5Yqi8LfFYXJNuo4rTt0x2RPhdPuNSc5hW6lK5XGPGvO1tEF33iTB5QGlSaigmx/vY7iXIlrQRROutgA root@vm";

/// `ssh-keygen -k -s ca.pub` from spec files: `serial: 100-200` (a range),
/// serials 140,142,145,150,160 (a bitmap), `id: alice@corp`, and
/// `serial: 151` + `id: bob` (a list and an ID that miss).
const KRL_RANGE: &str = "5353484b524c0a00000000010000000000000000000000006b0d751e000000000000000000000000000000000100000050000000330000000b7373682d6564323535313900000020f7fe939fba1f5602e1c8008d93c7578caeec08dd11508385faabc9f3edf87e66000000002100000010000000000000006400000000000000c8";
const KRL_BITMAP: &str = "5353484b524c0a00000000010000000000000000000000006b0d751e00000000000000000000000000000000010000004f000000330000000b7373682d6564323535313900000020f7fe939fba1f5602e1c8008d93c7578caeec08dd11508385faabc9f3edf87e6600000000220000000f000000000000008c00000003100425";
const KRL_ID: &str = "5353484b524c0a00000000010000000000000000000000006b0d751e00000000000000000000000000000000010000004e000000330000000b7373682d6564323535313900000020f7fe939fba1f5602e1c8008d93c7578caeec08dd11508385faabc9f3edf87e6600000000230000000e0000000a616c69636540636f7270";
const KRL_MISS: &str = "5353484b524c0a00000000010000000000000000000000006b0d751e000000000000000000000000000000000100000054000000330000000b7373682d6564323535313900000020f7fe939fba1f5602e1c8008d93c7578caeec08dd11508385faabc9f3edf87e660000000020000000080000000000000097230000000700000003626f62";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn key(s: &str) -> KeyData {
    PublicKey::from_openssh(s).unwrap().key_data().clone()
}

fn cert() -> Certificate {
    Certificate::from_openssh(CERT).unwrap()
}

fn string(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

fn header() -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(&[0; 24]); // krl_version, generated_date, flags
    v.extend(string(b"")); // reserved
    v.extend(string(b"comment"));
    v
}

fn section(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend(string(body));
    v
}

fn krl(sections: &[Vec<u8>]) -> Vec<u8> {
    let mut v = header();
    for s in sections {
        v.extend_from_slice(s);
    }
    v
}

/// A certificates section for CA (`None`: any CA) with these subsections.
fn certs(ca: Option<&KeyData>, subs: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut body = string(&ca.map(|k| k.encode_vec().unwrap()).unwrap_or_default());
    body.extend(string(b""));
    for (kind, sub) in subs {
        body.push(*kind);
        body.extend(string(sub));
    }
    section(SECTION_CERTIFICATES, &body)
}

#[test]
fn ssh_keygen_certificate_sections() {
    let c = cert();
    for (name, file, want) in [
        ("range", KRL_RANGE, true),
        ("bitmap", KRL_BITMAP, true),
        ("id", KRL_ID, true),
        ("miss", KRL_MISS, false),
    ] {
        let bytes = hex(file);
        assert_eq!(is_revoked(&bytes, Subject::Cert(&c)), Ok(want), "{name}");
        // No certificate section speaks of a plain key.
        assert_eq!(
            is_revoked(&bytes, Subject::Key(&key(USER))),
            Ok(false),
            "{name}"
        );
    }
}

#[test]
fn explicit_keys_and_hashes() {
    let user = key(USER);
    let blob = user.encode_vec().unwrap();
    let sha1: [u8; 20] = sha1::Sha1::digest(&blob).into();
    let sha256 = user.fingerprint(HashAlg::Sha256).sha256().unwrap();
    for (kind, body) in [
        (SECTION_EXPLICIT_KEY, string(&blob)),
        (SECTION_FINGERPRINT_SHA1, string(&sha1)),
        (SECTION_FINGERPRINT_SHA256, string(&sha256)),
    ] {
        let file = krl(&[section(kind, &body)]);
        assert_eq!(is_revoked(&file, Subject::Key(&user)), Ok(true), "{kind}");
        assert_eq!(is_revoked(&file, Subject::Key(&key(OTHER))), Ok(false));
        // A certificate of a revoked key is revoked, as is one signed by a revoked CA.
        assert_eq!(is_revoked(&file, Subject::Cert(&cert())), Ok(true));
    }
    let ca_revoked = krl(&[section(
        SECTION_EXPLICIT_KEY,
        &string(&key(CA).encode_vec().unwrap()),
    )]);
    assert_eq!(is_revoked(&ca_revoked, Subject::Cert(&cert())), Ok(true));
    assert_eq!(is_revoked(&ca_revoked, Subject::Key(&user)), Ok(false));
    // A hash of the wrong length is malformed.
    let bad = krl(&[section(SECTION_FINGERPRINT_SHA256, &string(&sha1))]);
    assert!(is_revoked(&bad, Subject::Key(&user)).is_err());
}

#[test]
fn serial_rules() {
    let c = cert(); // serial 150
    let list = |n: &[u64]| n.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
    let any = |sub: (u8, Vec<u8>)| krl(&[certs(None, &[sub])]);
    assert_eq!(
        is_revoked(&any((CERT_SERIAL_LIST, list(&[1, 150]))), Subject::Cert(&c)),
        Ok(true)
    );
    assert_eq!(
        is_revoked(&any((CERT_SERIAL_LIST, list(&[151]))), Subject::Cert(&c)),
        Ok(false)
    );
    // Serial 0 and inverted ranges are malformed.
    assert!(is_revoked(&any((CERT_SERIAL_LIST, list(&[0]))), Subject::Cert(&c)).is_err());
    assert!(is_revoked(&any((CERT_SERIAL_RANGE, list(&[9, 8]))), Subject::Cert(&c)).is_err());
    // A section for another CA does not apply.
    let other_ca = key(OTHER);
    let f = krl(&[certs(
        Some(&other_ca),
        &[(CERT_SERIAL_RANGE, list(&[1, 1000]))],
    )]);
    assert_eq!(is_revoked(&f, Subject::Cert(&c)), Ok(false));
    // Bitmaps: bit 0 at offset 0 is serial 0 (malformed); a negative or oversized
    // bitmap is malformed; the last bit of u64 may not wrap.
    let bitmap = |offset: u64, bits: &[u8]| {
        let mut v = offset.to_be_bytes().to_vec();
        v.extend(string(bits));
        any((CERT_SERIAL_BITMAP, v))
    };
    assert!(is_revoked(&bitmap(0, &[0x01]), Subject::Cert(&c)).is_err());
    assert!(is_revoked(&bitmap(1, &[0x80]), Subject::Cert(&c)).is_err());
    assert!(
        is_revoked(
            &bitmap(1, &vec![0x7f; MAX_BITMAP_BYTES + 1]),
            Subject::Cert(&c)
        )
        .is_err()
    );
    assert!(is_revoked(&bitmap(u64::MAX, &[0x02]), Subject::Cert(&c)).is_err());
    assert_eq!(
        is_revoked(&bitmap(150, &[0x01]), Subject::Cert(&c)),
        Ok(true)
    );
    assert_eq!(
        is_revoked(&bitmap(149, &[0x01]), Subject::Cert(&c)),
        Ok(false)
    );
    assert_eq!(
        is_revoked(&bitmap(100, &[0x00]), Subject::Cert(&c)),
        Ok(false)
    );
}

#[test]
fn malformed_krls_are_errors_never_panics() {
    let good = hex(KRL_BITMAP);
    let c = cert();
    // Every truncation is an error (the magic alone leaves no version), except
    // at the end of the header: a KRL with no sections revokes nothing.
    let header_end = header().len() - "comment".len();
    assert_eq!(
        is_revoked(&good[..header_end], Subject::Cert(&c)),
        Ok(false)
    );
    for n in (MAGIC.len()..good.len()).filter(|n| *n != header_end) {
        assert!(
            is_revoked(&good[..n], Subject::Cert(&c)).is_err(),
            "{n} bytes"
        );
    }
    // Every single-byte change past the magic either parses or is an error.
    for i in MAGIC.len()..good.len() {
        for b in [0x00, 0x7f, 0x80, 0xff] {
            let mut m = good.clone();
            m[i] = b;
            let _ = is_revoked(&m, Subject::Cert(&c));
        }
    }
    let user = key(USER);
    let unknown = krl(&[section(9, b"")]);
    assert!(is_revoked(&unknown, Subject::Key(&user)).is_err());
    let mut ext = string(b"x@example.com");
    ext.push(1);
    ext.extend(string(b""));
    assert_eq!(
        is_revoked(
            &krl(&[section(SECTION_EXTENSION, &ext)]),
            Subject::Key(&user)
        ),
        Err(KrlError::Unsupported("x@example.com".into()))
    );
    let n = ext.len() - 5;
    ext[n] = 0; // not critical: ignored
    assert_eq!(
        is_revoked(
            &krl(&[section(SECTION_EXTENSION, &ext)]),
            Subject::Key(&user)
        ),
        Ok(false)
    );
    // A signature section is skipped, not believed or refused.
    let mut sig = vec![SECTION_SIGNATURE];
    sig.extend(string(b"key"));
    sig.extend(string(b"sig"));
    assert_eq!(is_revoked(&krl(&[sig]), Subject::Key(&user)), Ok(false));
    // A wrong format version.
    let mut v2 = header();
    v2[MAGIC.len() + 3] = 2;
    assert!(is_revoked(&v2, Subject::Key(&user)).is_err());
}

#[test]
fn key_lists() {
    let user = key(USER);
    let list = format!("# revoked\n\n  {OTHER}\n{USER}\n");
    assert_eq!(is_revoked(list.as_bytes(), Subject::Key(&user)), Ok(true));
    assert_eq!(is_revoked(OTHER.as_bytes(), Subject::Key(&user)), Ok(false));
    // A listed certificate stands for its key; a listed CA revokes its certificates.
    assert_eq!(is_revoked(CERT.as_bytes(), Subject::Key(&user)), Ok(true));
    assert_eq!(is_revoked(CA.as_bytes(), Subject::Cert(&cert())), Ok(true));
    // A line that is no key, before any match, is an error.
    let bad = format!("garbage\n{USER}\n");
    assert!(is_revoked(bad.as_bytes(), Subject::Key(&user)).is_err());
    assert!(is_revoked(b"\xff\xfe", Subject::Key(&user)).is_err());
    assert_eq!(is_revoked(b"", Subject::Key(&user)), Ok(false));
}
