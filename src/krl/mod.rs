//! `RevokedKeys` files, as sshd reads them (`sshkey_check_revoked`): an OpenSSH key
//! revocation list (KRL, the binary format `ssh-keygen -k` writes, described in
//! OpenSSH's PROTOCOL.krl), or else a text file of public keys, one per line.
//!
//! [`is_revoked`] answers for one key or certificate, in one pass over the file's
//! bytes, so a file of any size costs no memory beyond itself. A KRL is checked
//! whole before it is believed: any malformed part (a short read, a bad key, a
//! serial 0, an unknown section, a critical extension) makes it an error, and an
//! error refuses every key, as in sshd. A text list is read line by line as sshd
//! does: the first matching line revokes, a line that is not a public key (before
//! any match) is an error.
//!
//! What revokes (`ssh_krl_check_key`): the plain key by its blob, its SHA-1 or its
//! SHA-256 fingerprint; a certificate by the same checks on its key, by serial (list,
//! range or bitmap) or key ID under the CA that signed it or under "any CA", or by
//! its CA key being revoked. KRL signature sections are skipped, as OpenSSH >= 9.4
//! does (it no longer verifies them).
//!
//! Pure parsing of bytes, bounds-checked and without `unsafe`; reading the file is
//! the privileged boundary's job (`host::revoked_keys`).

#![forbid(unsafe_code)]

mod reader;
#[cfg(test)]
mod tests;

use russh::keys::ssh_encoding::Encode;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::ssh_key::{Certificate, HashAlg, PublicKey};
use sha1::Digest;

use reader::Reader;

/// What to check: a plain key, or a certificate (with its CA).
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    Key(&'a KeyData),
    Cert(&'a Certificate),
}

/// Why a revocation file could not be judged (every key is then refused). The
/// text is sshd's `ssh_err` wording where sshd has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KrlError {
    #[error("invalid format")]
    Format(&'static str),
    #[error("requested feature not supported")]
    Unsupported(String),
}

const MAGIC: &[u8] = b"SSHKRL\n\0";
const FORMAT_VERSION: u32 = 1;

const SECTION_CERTIFICATES: u8 = 1;
const SECTION_EXPLICIT_KEY: u8 = 2;
const SECTION_FINGERPRINT_SHA1: u8 = 3;
const SECTION_SIGNATURE: u8 = 4;
const SECTION_FINGERPRINT_SHA256: u8 = 5;
const SECTION_EXTENSION: u8 = 255;

const CERT_SERIAL_LIST: u8 = 0x20;
const CERT_SERIAL_RANGE: u8 = 0x21;
const CERT_SERIAL_BITMAP: u8 = 0x22;
const CERT_KEY_ID: u8 = 0x23;
const CERT_EXTENSION: u8 = 0x39;

/// sshd's largest bignum (SSHBUF_MAX_BIGNUM): a serial bitmap spans at most
/// 16,384 serials per section.
const MAX_BITMAP_BYTES: usize = 16384 / 8;

/// The smallest RSA key sshd reads from a key list; shorter ones are skipped.
const RSA_MIN_BITS: u32 = 1024;

/// Whether `file` (a KRL or a key list, as read) revokes `subject`.
pub fn is_revoked(file: &[u8], subject: Subject) -> Result<bool, KrlError> {
    if file.starts_with(MAGIC) {
        krl_revokes(file, &Facts::of(subject))
    } else {
        list_revokes(file, subject)
    }
}

/// Whether `file` has a KRL's magic (else it is read as a key list).
pub fn is_krl(file: &[u8]) -> bool {
    file.starts_with(MAGIC)
}

/// [`is_revoked`] for a subject given as an OpenSSH public key or certificate line
/// (`None` when it is neither), for the fuzz target, which sees only rsshd's API.
#[doc(hidden)]
pub fn is_revoked_line(file: &[u8], subject: &str) -> Option<Result<bool, KrlError>> {
    if let Ok(k) = PublicKey::from_openssh(subject) {
        return Some(is_revoked(file, Subject::Key(k.key_data())));
    }
    let c = Certificate::from_openssh(subject).ok()?;
    Some(is_revoked(file, Subject::Cert(&c)))
}

/// The explicit-key section that revokes the key on `line` (a public key or a
/// certificate, which stands for its key), for the fuzz target's oracle.
#[doc(hidden)]
pub fn explicit_key_section(line: &str) -> Option<Vec<u8>> {
    let key = parse_listed(line)?;
    let blob = key.encode_vec().ok()?;
    let mut body = (blob.len() as u32).to_be_bytes().to_vec();
    body.extend_from_slice(&blob);
    let mut v = vec![SECTION_EXPLICIT_KEY];
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(&body);
    Some(v)
}

/// The parts of a key that a KRL can name, computed once.
struct Facts<'a> {
    key: KeyProbe,
    cert: Option<CertFacts<'a>>,
}

/// A plain key's blob and fingerprints.
struct KeyProbe {
    blob: Vec<u8>,
    sha1: [u8; 20],
    sha256: [u8; 32],
}

struct CertFacts<'a> {
    serial: u64,
    key_id: &'a str,
    ca: &'a KeyData,
    ca_probe: KeyProbe,
}

impl KeyProbe {
    fn of(key: &KeyData) -> KeyProbe {
        // Encoding a parsed key cannot fail; an empty blob would match nothing.
        let blob = key.encode_vec().unwrap_or_default();
        let sha1 = sha1::Sha1::digest(&blob).into();
        let sha256 = key.fingerprint(HashAlg::Sha256).sha256().unwrap_or([0; 32]);
        KeyProbe { blob, sha1, sha256 }
    }
}

impl<'a> Facts<'a> {
    fn of(subject: Subject<'a>) -> Facts<'a> {
        match subject {
            Subject::Key(k) => Facts {
                key: KeyProbe::of(k),
                cert: None,
            },
            Subject::Cert(c) => Facts {
                key: KeyProbe::of(c.public_key()),
                cert: Some(CertFacts {
                    serial: c.serial(),
                    key_id: c.key_id(),
                    ca: c.signature_key(),
                    ca_probe: KeyProbe::of(c.signature_key()),
                }),
            },
        }
    }

    /// Whether a key-level entry (explicit blob or fingerprint) names the key or,
    /// for a certificate, its CA.
    fn any_probe(&self, hit: impl Fn(&KeyProbe) -> bool) -> bool {
        hit(&self.key) || self.cert.as_ref().is_some_and(|c| hit(&c.ca_probe))
    }
}

/// Parse the whole KRL (every part is checked before any answer is given, as
/// sshd's `ssh_krl_from_blob` loads it whole) and say whether it revokes.
fn krl_revokes(file: &[u8], facts: &Facts) -> Result<bool, KrlError> {
    let mut r = Reader::new(&file[MAGIC.len()..]);
    if r.u32()? != FORMAT_VERSION {
        return Err(KrlError::Format("unsupported KRL format version"));
    }
    r.u64()?; // krl_version
    r.u64()?; // generated_date
    r.u64()?; // flags
    r.string()?; // reserved
    r.cstring()?; // comment
    let mut revoked = false;
    while !r.is_empty() {
        let kind = r.u8()?;
        if kind == SECTION_SIGNATURE {
            // Signing key, then the signature: neither is checked any more.
            r.string()?;
            r.string()?;
            continue;
        }
        let mut s = Reader::new(r.string()?);
        match kind {
            SECTION_CERTIFICATES => revoked |= cert_section(&mut s, facts)?,
            SECTION_EXPLICIT_KEY => {
                while !s.is_empty() {
                    let blob = s.string()?;
                    revoked |= facts.any_probe(|p| p.blob == blob);
                }
            }
            SECTION_FINGERPRINT_SHA1 => {
                while !s.is_empty() {
                    let h = s.string_of_len(20)?;
                    revoked |= facts.any_probe(|p| p.sha1 == h);
                }
            }
            SECTION_FINGERPRINT_SHA256 => {
                while !s.is_empty() {
                    let h = s.string_of_len(32)?;
                    revoked |= facts.any_probe(|p| p.sha256 == h);
                }
            }
            SECTION_EXTENSION => extension(&mut s)?,
            _ => return Err(KrlError::Format("unsupported KRL section")),
        }
        if !s.is_empty() {
            return Err(KrlError::Format("KRL section contains unparsed data"));
        }
    }
    Ok(revoked)
}

/// An extension (section or certificate subsection): name, critical flag, body.
/// None is supported, so a critical one makes the KRL unusable.
fn extension(s: &mut Reader) -> Result<(), KrlError> {
    let name = s.cstring()?;
    let critical = s.u8()? != 0;
    s.string()?;
    if !s.is_empty() {
        return Err(KrlError::Format("KRL extension has trailing data"));
    }
    if critical {
        return Err(KrlError::Unsupported(
            String::from_utf8_lossy(name).into_owned(),
        ));
    }
    Ok(())
}

/// A certificates section: the CA (empty: any CA), then subsections revoking by
/// serial or key ID. True when it revokes the subject.
fn cert_section(s: &mut Reader, facts: &Facts) -> Result<bool, KrlError> {
    let ca_blob = s.string()?;
    s.string()?; // reserved
    let ca = if ca_blob.is_empty() {
        None
    } else {
        let k = PublicKey::from_bytes(ca_blob)
            .map_err(|_| KrlError::Format("KRL has an invalid CA key"))?;
        Some(k.key_data().clone())
    };
    // Whether this section is about the subject's CA (sshd looks at the section of
    // the cert's own CA, then at the any-CA one).
    let applies = facts
        .cert
        .as_ref()
        .is_some_and(|c| ca.as_ref().is_none_or(|ca| ca == c.ca));
    let serial = facts.cert.as_ref().map_or(0, |c| c.serial);
    let mut revoked = false;
    while !s.is_empty() {
        let kind = s.u8()?;
        let mut sub = Reader::new(s.string()?);
        match kind {
            CERT_SERIAL_LIST => {
                while !sub.is_empty() {
                    let n = sub.u64()?;
                    check_serials(n, n)?;
                    revoked |= n == serial;
                }
            }
            CERT_SERIAL_RANGE => {
                let (lo, hi) = (sub.u64()?, sub.u64()?);
                check_serials(lo, hi)?;
                revoked |= (lo..=hi).contains(&serial);
            }
            CERT_SERIAL_BITMAP => {
                let offset = sub.u64()?;
                let bits = sub.positive_mpint(MAX_BITMAP_BYTES)?;
                revoked |= bitmap(offset, bits, serial)?;
            }
            CERT_KEY_ID => {
                while !sub.is_empty() {
                    let id = sub.cstring()?;
                    revoked |= facts
                        .cert
                        .as_ref()
                        .is_some_and(|c| c.key_id.as_bytes() == id);
                }
            }
            CERT_EXTENSION => extension(&mut sub)?,
            _ => return Err(KrlError::Format("unsupported KRL certificate section")),
        }
        if !sub.is_empty() {
            return Err(KrlError::Format(
                "KRL certificate section contains unparsed data",
            ));
        }
    }
    // Serial 0 is "no serial" (a CA's default) and is never revoked by serial;
    // `revoked` can only be true for it through a key ID.
    Ok(applies && revoked)
}

/// sshd refuses serial 0 and inverted ranges in a KRL.
fn check_serials(lo: u64, hi: u64) -> Result<(), KrlError> {
    if lo == 0 || lo > hi {
        return Err(KrlError::Format("KRL has an invalid serial range"));
    }
    Ok(())
}

/// A serial bitmap: bit N (counting from the least significant bit of the last
/// byte) revokes serial `offset + N`. Validated as sshd does: no serial 0, no
/// wrap past 2^64 - 1.
fn bitmap(offset: u64, bits: &[u8], serial: u64) -> Result<bool, KrlError> {
    let nbits = highest_bit(bits);
    if nbits == 0 {
        return Ok(false);
    }
    let set = |n: u64| {
        let byte = bits.len() - 1 - (n / 8) as usize;
        bits[byte] & (1 << (n % 8)) != 0
    };
    if offset == 0 && set(0) {
        return Err(KrlError::Format("KRL bitmap revokes serial 0"));
    }
    if offset.checked_add(nbits - 1).is_none() {
        return Err(KrlError::Format("KRL bitmap wraps u64"));
    }
    Ok(serial
        .checked_sub(offset)
        .is_some_and(|n| n < nbits && set(n)))
}

/// One more than the index of the highest set bit (0 for no bit set).
fn highest_bit(bits: &[u8]) -> u64 {
    match bits.iter().position(|b| *b != 0) {
        None => 0,
        Some(i) => ((bits.len() - i) * 8) as u64 - u64::from(bits[i].leading_zeros()),
    }
}

/// A text list of keys (`sshkey_in_file` with CA checking): the first line that is
/// the key (compared as plain keys, so a listed certificate revokes its key and the
/// other way round), or the subject's CA, revokes it.
fn list_revokes(file: &[u8], subject: Subject) -> Result<bool, KrlError> {
    let (key, ca) = match subject {
        Subject::Key(k) => (k, None),
        Subject::Cert(c) => (c.public_key(), Some(c.signature_key())),
    };
    for raw in file.split(|b| *b == b'\n') {
        let line = match raw.iter().position(|b| *b != b' ' && *b != b'\t') {
            None => continue,
            Some(i) => &raw[i..],
        };
        if line[0] == b'#' || line[0] == 0 {
            continue;
        }
        let listed = std::str::from_utf8(line)
            .ok()
            .and_then(parse_listed)
            .ok_or(KrlError::Format("not a public key"))?;
        if let KeyData::Rsa(rsa) = &listed
            && rsa.key_size() < RSA_MIN_BITS
        {
            continue;
        }
        if &listed == key || ca.is_some_and(|ca| &listed == ca) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// One line of a key list: `type base64 [comment]`, a plain key or a certificate
/// (which stands for its key).
fn parse_listed(line: &str) -> Option<KeyData> {
    if let Ok(k) = PublicKey::from_openssh(line) {
        return Some(k.key_data().clone());
    }
    Certificate::from_openssh(line)
        .ok()
        .map(|c| c.public_key().clone())
}
