//! User certificates, judged as sshd's `user_key_allowed` judges them: the
//! certificate and its CA against `RevokedKeys`, then the `cert-authority` lines of
//! the user's authorized_keys files, then `TrustedUserCAKeys` with the principals of
//! `AuthorizedPrincipalsFile` (or the user's name). Validity interval, principals,
//! critical options and extensions are checked here, in sshd's order and words;
//! russh has only checked the CA's signature on the certificate and the client's
//! signature with the certified key.
//!
//! The CA file is the admin's and is read as root (as sshd does), the way
//! `RevokedKeys` is; the principals and authorized_keys files are the user's and are
//! read with the user's identity (`user_files`).

use std::path::{Path, PathBuf};

use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::ssh_key::{Algorithm, Certificate, HashAlg, PublicKey};

use super::authorized_keys::{
    AuthorizedKey, KeyCommands, KeyLookup, KeyQuery, expand_path, parse_line, type_and_blob,
};
use super::cert_options::{Judged, authorise, from_cert, merge, now_unix};
use super::key_command::run;
use super::key_options::{KeyOptions, parse_options};
use super::revoked_keys::{Revocable, revoked};
use super::user_files::{FileKind, Owner, UserFile, with_reader};
use super::{HostError, revoked_keys};
use crate::config::FingerprintHash;

/// What a certificate is judged against, besides the query's user, files and peer.
#[derive(Debug, Clone)]
pub struct CertPolicy {
    pub cert: Box<Certificate>,
    /// `TrustedUserCAKeys`.
    pub trusted_user_ca_keys: Option<PathBuf>,
    /// `AuthorizedPrincipalsFile`, tokens not yet expanded.
    pub principals_file: Option<String>,
    /// `CASignatureAlgorithms`.
    pub ca_signature_algorithms: Vec<String>,
    /// `RevokedKeys`.
    pub revoked_keys: Option<PathBuf>,
    pub fingerprint_hash: FingerprintHash,
}

impl CertPolicy {
    /// What `s` says about user certificates, for `cert`.
    pub fn new(
        cert: &Certificate,
        s: &crate::config::Settings,
        fingerprint_hash: FingerprintHash,
    ) -> CertPolicy {
        CertPolicy {
            cert: Box::new(cert.clone()),
            trusted_user_ca_keys: s.trusted_user_ca_keys.clone(),
            principals_file: (s.authorized_principals_file.as_ref())
                .map(|p| p.to_string_lossy().into_owned()),
            ca_signature_algorithms: (s.ca_signature_algorithms.iter())
                .map(|a| a.to_string())
                .collect(),
            revoked_keys: s.revoked_keys.clone(),
            fingerprint_hash,
        }
    }
}

/// sshd's `sshkey_type` for a key, or for a certificate of that key (`-CERT`).
pub fn type_name(alg: &Algorithm, cert: bool) -> String {
    let plain = match alg {
        Algorithm::Ed25519 => "ED25519",
        Algorithm::Ecdsa { .. } => "ECDSA",
        Algorithm::Rsa { .. } => "RSA",
        Algorithm::Dsa => "DSA",
        Algorithm::SkEd25519 => "ED25519-SK",
        Algorithm::SkEcdsaSha2NistP256 => "ECDSA-SK",
        _ => "UNKNOWN",
    };
    if cert {
        format!("{plain}-CERT")
    } else {
        plain.to_string()
    }
}

fn fp(key: &KeyData, hash: FingerprintHash) -> String {
    crate::config::algorithms::fingerprint(&PublicKey::new(key.clone(), ""), hash)
}

/// What sshd writes after `ssh2: ` when a certificate logs in:
/// `ED25519-CERT SHA256:... ID alice@corp (serial 42) CA ED25519 SHA256:...`.
pub fn describe(cert: &Certificate, hash: FingerprintHash) -> String {
    format!(
        "{} {} ID {} (serial {}) CA {} {}",
        type_name(&cert.public_key().algorithm(), true),
        fp(cert.public_key(), hash),
        cert.key_id(),
        cert.serial(),
        type_name(&cert.signature_key().algorithm(), false),
        fp(cert.signature_key(), hash)
    )
}

/// sshd's `sshkey_cert_check_authority` for a user certificate, now. `name`: the
/// principal the certificate must list (none when a principals file or line has
/// already chosen); `require_principal`: a certificate without principals is
/// refused (the `TrustedUserCAKeys` path) rather than valid for everyone.
fn authority(
    c: &Certificate,
    require_principal: bool,
    name: Option<&str>,
) -> Result<(), &'static str> {
    if c.cert_type() != CertType::User {
        return Err("Certificate invalid: not a user certificate");
    }
    let now = u64::try_from(now_unix()).unwrap_or(0);
    if now < c.valid_after() {
        return Err("Certificate invalid: not yet valid");
    }
    if now >= c.valid_before() {
        return Err("Certificate invalid: expired");
    }
    if c.valid_principals().is_empty() {
        if require_principal {
            return Err("Certificate lacks principal list");
        }
    } else if let Some(n) = name
        && !c.valid_principals().iter().any(|p| p == n)
    {
        return Err("Certificate invalid: name is not a listed principal");
    }
    Ok(())
}

/// Whether `q`'s certificate may log its user in, and with which options.
pub(super) async fn find_cert(q: KeyQuery, p: CertPolicy) -> Result<KeyLookup, HostError> {
    let cert = &p.cert;
    let key_alg = cert.public_key().algorithm();
    if matches!(
        key_alg,
        Algorithm::SkEd25519 | Algorithm::SkEcdsaSha2NistP256
    ) {
        // Their signatures' flags (touch, verify-required) are not checked by
        // rsshd, so it cannot honour what sshd would demand of them.
        tracing::info!(
            "refusing {} certificate: security keys are not supported",
            type_name(&key_alg, true)
        );
        return Ok(KeyLookup::NotFound);
    }
    let sig_alg = cert.signature().algorithm();
    if !p
        .ca_signature_algorithms
        .iter()
        .any(|a| a == sig_alg.as_str())
    {
        tracing::info!(
            "userauth_pubkey: certificate signature algorithm {}: signature algorithm not supported [preauth]",
            sig_alg.as_str()
        );
        return Ok(KeyLookup::NotFound);
    }
    if is_revoked(&p, Revocable::Cert(cert.clone()), cert.public_key(), true).await?
        || is_revoked(
            &p,
            Revocable::Key(cert.signature_key().clone()),
            cert.signature_key(),
            false,
        )
        .await?
    {
        return Ok(KeyLookup::NotFound);
    }
    if let Some(found) = in_authorized_keys(&q, &p).await? {
        return Ok(KeyLookup::Found(found));
    }
    let by_ca = trusted_ca(&q, &p).await?;
    if matches!(by_ca, KeyLookup::Found(_)) {
        return Ok(by_ca);
    }
    // sshd asks AuthorizedKeysCommand last; its output may hold cert-authority lines.
    if let Some(c) = &q.commands
        && let Some(cmd) = &c.keys
        && let Some(out) = run("AuthorizedKeysCommand", cmd, &cert_tokens(&q, c, &p)).await
        && let Some(found) = ca_in(&out, Path::new(&cmd.command), &q, &p)
    {
        return Ok(KeyLookup::Found(found));
    }
    Ok(KeyLookup::NotFound)
}

/// sshd's `auth_key_is_revoked`, with its log lines; `Err` for a file that could
/// not be read in time (asked again next time).
async fn is_revoked(
    p: &CertPolicy,
    subject: Revocable,
    key: &KeyData,
    cert: bool,
) -> Result<bool, HostError> {
    let Some(file) = &p.revoked_keys else {
        return Ok(false);
    };
    let (kind, fp) = (
        type_name(&key.algorithm(), cert),
        fp(key, p.fingerprint_hash),
    );
    match revoked(file, subject).await {
        Ok(false) => Ok(false),
        Ok(true) => {
            tracing::error!(
                "Authentication key {kind} {fp} revoked by file {}",
                file.display()
            );
            Ok(true)
        }
        Err(e) => {
            tracing::error!(
                "Error checking authentication key {kind} {fp} in revoked keys file {}: {e}",
                file.display()
            );
            if e.is_transient() {
                return Err(HostError::TimedOut(revoked_keys::DEADLINE));
            }
            Ok(true)
        }
    }
}

/// The first `cert-authority` line, in the user's authorized_keys files, that names
/// the certificate's CA and accepts the certificate.
async fn in_authorized_keys(
    q: &KeyQuery,
    p: &CertPolicy,
) -> Result<Option<AuthorizedKey>, HostError> {
    let paths: Vec<PathBuf> = q
        .files
        .iter()
        .filter(|f| !f.eq_ignore_ascii_case("none"))
        .map(|f| expand_path(f, &q.user))
        .collect();
    let (q, p) = (q.clone(), p.clone());
    with_reader(Owner::from(&q.user), move |r| {
        for path in paths {
            let UserFile::Contents(bytes) = r.read(&path, FileKind::AuthorizedKeys, q.strict_modes)
            else {
                continue;
            };
            if let Some(found) = ca_in(&bytes, &path, &q, &p) {
                return Some(found);
            }
        }
        None
    })
    .await
}

/// The first `cert-authority` line of an authorized_keys file's contents (or a
/// command's output) that names the certificate's CA and accepts it.
fn ca_in(bytes: &[u8], path: &Path, q: &KeyQuery, p: &CertPolicy) -> Option<AuthorizedKey> {
    for (idx, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = String::from_utf8_lossy(raw);
        let Some((options, listed)) = parse_line(&line, path, idx + 1) else {
            continue;
        };
        if !options.cert_authority || listed.key_data() != p.cert.signature_key() {
            continue;
        }
        let loc = format!("{}:{}", path.display(), idx + 1);
        if let Some(options) = ca_line(q, p, &loc, &listed, options) {
            return Some(AuthorizedKey {
                file: path.to_path_buf(),
                line: idx + 1,
                options,
            });
        }
    }
    None
}

/// The tokens of a command asked about a certificate: `%f %k %t` of the
/// certificate, `%F %K %T` of its CA, `%i` its key ID, `%s` its serial.
fn cert_tokens(q: &KeyQuery, c: &KeyCommands, p: &CertPolicy) -> Vec<(char, String)> {
    let cert = &p.cert;
    let mut t = c.base_tokens(&q.user);
    let (ct, ck) = type_and_blob(&cert.to_openssh().unwrap_or_default());
    let ca = PublicKey::new(cert.signature_key().clone(), "");
    let (cat, cak) = type_and_blob(&ca.to_openssh().unwrap_or_default());
    t.extend([
        ('f', fp(cert.public_key(), c.fingerprint_hash)),
        ('k', ck),
        ('t', ct),
        ('F', fp(cert.signature_key(), c.fingerprint_hash)),
        ('K', cak),
        ('T', cat),
        ('i', cert.key_id().to_string()),
        ('s', cert.serial().to_string()),
    ]);
    t
}

/// The checks of sshd's `auth_check_authkey_line` for a certificate whose CA a
/// `cert-authority` line names: the line's options, the certificate's, merged;
/// `principals=` or the user's name; the validity interval.
fn ca_line(
    q: &KeyQuery,
    p: &CertPolicy,
    loc: &str,
    ca: &PublicKey,
    line: KeyOptions,
) -> Option<KeyOptions> {
    let cert = &p.cert;
    let j = Judged {
        loc,
        user: &q.user.name,
        remote_host: &q.remote_host,
        remote_ip: q.remote_ip,
    };
    let refuse = |reason: &str| {
        tracing::error!("{reason}");
        None
    };
    if !authorise(&line, true, &j) {
        return refuse("Refused by key options");
    }
    let Some(cert_opts) = from_cert(cert) else {
        return refuse("Invalid certificate options");
    };
    if !authorise(&cert_opts, false, &j) {
        return refuse("Refused by certificate options");
    }
    let merged = match merge(&line, &cert_opts) {
        Ok(m) => m,
        Err(reason) => return refuse(reason),
    };
    if let Some(list) = &line.principals {
        let listed = |pr: &String| list.split(',').any(|l| l == pr);
        if !cert.valid_principals().iter().any(listed) {
            return refuse("Certificate does not contain an authorized principal");
        }
    }
    let name = line.principals.is_none().then_some(q.user.name.as_str());
    if let Err(reason) = authority(cert, false, name) {
        return refuse(reason);
    }
    tracing::info!(
        "Accepted certificate ID \"{}\" (serial {}) signed by CA {} {} found at {loc}",
        cert.key_id(),
        cert.serial(),
        type_name(&ca.algorithm(), false),
        ca.fingerprint(HashAlg::Sha256)
    );
    Some(merged)
}

/// sshd's `user_cert_trusted_ca`.
async fn trusted_ca(q: &KeyQuery, p: &CertPolicy) -> Result<KeyLookup, HostError> {
    let Some(ca_file) = p.trusted_user_ca_keys.clone() else {
        return Ok(KeyLookup::NotFound);
    };
    let cert = &p.cert;
    let ca = cert.signature_key().clone();
    let ca_fp = fp(&ca, p.fingerprint_hash);
    let ca_type = type_name(&ca.algorithm(), false);
    if !ca_listed(&ca_file, &ca).await? {
        tracing::debug!(
            "CA {ca_type} {ca_fp} is not listed in {}",
            ca_file.display()
        );
        return Ok(KeyLookup::NotFound);
    }
    let refuse = |reason: &str| {
        tracing::error!("{reason}");
        Ok(KeyLookup::NotFound)
    };
    let mut principals_opts = None;
    if let Some(pattern) = &p.principals_file {
        let path = expand_path(pattern, &q.user);
        principals_opts = principals_in_file(q, cert, path).await?;
    }
    let command = q
        .commands
        .as_ref()
        .and_then(|c| Some((c, c.principals.as_ref()?)));
    if principals_opts.is_none()
        && let Some((c, cmd)) = command
        && let Some(out) = run("AuthorizedPrincipalsCommand", cmd, &cert_tokens(q, c, p)).await
    {
        let text = String::from_utf8_lossy(&out);
        principals_opts = principals_in(&text, Path::new(&cmd.command), cert.valid_principals());
    }
    if principals_opts.is_none() && (p.principals_file.is_some() || command.is_some()) {
        return refuse("Certificate does not contain an authorized principal");
    }
    let name = principals_opts.is_none().then_some(q.user.name.as_str());
    if let Err(reason) = authority(cert, true, name) {
        return refuse(reason);
    }
    let Some(cert_opts) = from_cert(cert) else {
        return refuse("Invalid certificate options");
    };
    let judged = |loc| Judged {
        loc,
        user: &q.user.name,
        remote_host: &q.remote_host,
        remote_ip: q.remote_ip,
    };
    if !authorise(&cert_opts, false, &judged("cert")) {
        return refuse("Refused by certificate options");
    }
    let options = match principals_opts {
        None => cert_opts,
        Some(line) => {
            if !authorise(&line, false, &judged("principals")) {
                return refuse("Refused by certificate principals options");
            }
            match merge(&line, &cert_opts) {
                Ok(m) => m,
                Err(reason) => return refuse(reason),
            }
        }
    };
    tracing::info!(
        "Accepted certificate ID \"{}\" (serial {}) signed by {ca_type} CA {ca_fp} via {}",
        cert.key_id(),
        cert.serial(),
        ca_file.display()
    );
    Ok(KeyLookup::Found(AuthorizedKey {
        file: ca_file,
        line: 0,
        options,
    }))
}

/// Whether the CA file lists `ca` (sshd's `sshkey_in_file`, types compared
/// strictly): lines are keys, blank or comments; the first line that is none of
/// these ends the search, unlisted.
async fn ca_listed(file: &Path, ca: &KeyData) -> Result<bool, HostError> {
    let path = file.to_path_buf();
    let work = tokio::task::spawn_blocking(move || revoked_keys::read(&path));
    let bytes = match tokio::time::timeout(revoked_keys::DEADLINE, work).await {
        Ok(Ok(Ok(b))) => b,
        Ok(Ok(Err(e))) => {
            tracing::debug!("TrustedUserCAKeys {}: {e}", file.display());
            return Ok(false);
        }
        Ok(Err(e)) => return Err(HostError::Io(std::io::Error::other(e))),
        Err(_) => return Err(HostError::TimedOut(revoked_keys::DEADLINE)),
    };
    for raw in bytes.split(|b| *b == b'\n') {
        let line = String::from_utf8_lossy(raw);
        let line = line.trim_start_matches([' ', '\t']).trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match PublicKey::from_openssh(line) {
            Ok(k) if k.key_data() == ca => return Ok(true),
            Ok(_) => {}
            Err(_) => return Ok(false),
        }
    }
    Ok(false)
}

/// The options of the first line of the principals file that names one of the
/// certificate's principals (sshd's `auth_process_principals`), read as the user.
async fn principals_in_file(
    q: &KeyQuery,
    cert: &Certificate,
    path: PathBuf,
) -> Result<Option<KeyOptions>, HostError> {
    let strict = q.strict_modes;
    let principals = cert.valid_principals().to_vec();
    with_reader(Owner::from(&q.user), move |r| {
        tracing::debug!("trying authorized principals file {}", path.display());
        let UserFile::Contents(bytes) = r.read(&path, FileKind::AuthorizedPrincipals, strict)
        else {
            return None;
        };
        let text = String::from_utf8_lossy(&bytes);
        principals_in(&text, &path, &principals)
    })
    .await
}

/// The first line of a principals file (`[options] principal`) naming one of
/// `principals`, with its options; a line whose options do not parse is skipped.
pub(crate) fn principals_in(text: &str, path: &Path, principals: &[String]) -> Option<KeyOptions> {
    for (idx, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        let line = line.trim_matches([' ', '\t', '\r']);
        if line.is_empty() {
            continue;
        }
        // Internal whitespace: options, then the principal after the last blank.
        let (opts, name) = match line.rfind([' ', '\t']) {
            Some(i) => (Some(line[..i].trim_end()), line[i + 1..].trim_start()),
            None => (None, line),
        };
        let loc = format!("{}:{}", path.display(), idx + 1);
        let options = match opts.map(parse_options).transpose() {
            Ok(o) => o.unwrap_or_default(),
            Err(e) => {
                tracing::debug!("{loc}: bad principals options: {e}");
                continue;
            }
        };
        if principals.iter().any(|p| p == name) {
            tracing::debug!("{loc}: matched principal \"{name}\"");
            return Some(options);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::authorized_keys::find_authorized_key;
    use super::*;

    /// A user certificate for a security key (`sk-ssh-ed25519@openssh.com`), made
    /// by ssh-keygen 9.2 (`ssh-keygen -s ca -I sk-user -n root sk.pub`), and its CA.
    const SK_CERT: &str = "sk-ssh-ed25519-cert-v01@openssh.com AAAAI3NrLXNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIAwAotDX/oz9HSDeb1wIOPzNBAcJLwr8elBVWYSSBDnNAAAAIEjYISEbbuj4scH6dFOKUk5gyMLcxcYpqrZFpr2dC3jJAAAABHNzaDoAAAAAAAAAAAAAAAEAAAAHc2stdXNlcgAAAAgAAAAEcm9vdAAAAAAAAAAA//////////8AAAAAAAAAggAAABVwZXJtaXQtWDExLWZvcndhcmRpbmcAAAAAAAAAF3Blcm1pdC1hZ2VudC1mb3J3YXJkaW5nAAAAAAAAABZwZXJtaXQtcG9ydC1mb3J3YXJkaW5nAAAAAAAAAApwZXJtaXQtcHR5AAAAAAAAAA5wZXJtaXQtdXNlci1yYwAAAAAAAAAAAAAAMwAAAAtzc2gtZWQyNTUxOQAAACAUNbMI9QpXrxh5J85n2ho9hfLww+/yOWDMbaATZqzD2AAAAFMAAAALc3NoLWVkMjU1MTkAAABAiJVs4YoEl1lXvx9H1LCzK005p/OhhX6XzUf0aAb71gcAV/VDp24WifMfkpNT9pPdVzyRaTjzxMDoyTG3VGX0Bg== sk";
    const SK_CA: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBQ1swj1ClevGHknzmfaGj2F8vDD7/I5YMxtoBNmrMPY ca";

    #[test]
    fn security_key_certificates_are_refused_cleanly() {
        let dir = std::env::temp_dir().join(format!("rsshd-sk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pub");
        std::fs::write(&ca_file, SK_CA).unwrap();
        let cert = Certificate::from_openssh(SK_CERT).unwrap();
        let mut q = KeyQuery {
            user: super::super::UserInfo {
                name: "root".into(),
                uid: nix::unistd::geteuid().as_raw(),
                gid: 0,
                home: dir.clone(),
                shell: "/bin/sh".into(),
                group_names: vec![],
                gids: vec![],
            },
            files: vec![],
            strict_modes: false,
            key: PublicKey::new(cert.public_key().clone(), ""),
            remote_host: "127.0.0.1".into(),
            remote_ip: "127.0.0.1".parse().unwrap(),
            cert: None,
            commands: None,
        };
        let p = CertPolicy {
            cert: Box::new(cert),
            trusted_user_ca_keys: Some(ca_file),
            principals_file: None,
            ca_signature_algorithms: vec!["ssh-ed25519".into()],
            revoked_keys: None,
            fingerprint_hash: FingerprintHash::Sha256,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let verdict = rt.block_on(find_cert(q.clone(), p.clone())).unwrap();
        assert_eq!(verdict, KeyLookup::NotFound);
        // The plain security key, listed in authorized_keys, is refused too.
        let plain = PublicKey::new(p.cert.public_key().clone(), "");
        let ak = dir.join("authorized_keys");
        std::fs::write(&ak, plain.to_openssh().unwrap()).unwrap();
        q.files = vec![ak.display().to_string()];
        q.key = plain;
        let verdict = rt.block_on(find_authorized_key(q)).unwrap();
        assert_eq!(verdict, KeyLookup::NotFound);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn principals_lines() {
        let p = Path::new("f");
        let names = vec!["alice".to_string(), "ops".to_string()];
        assert!(principals_in("# c\n\nbob\n", p, &names).is_none());
        assert!(principals_in("bob\nops # team\n", p, &names).is_some());
        let o = principals_in("no-pty,command=\"x y\" alice\n", p, &names).unwrap();
        assert!(o.no_pty);
        assert_eq!(o.command.as_deref(), Some("x y"));
        // Bad options skip the line, not the file.
        assert!(principals_in("bogus alice\nops\n", p, &names).is_some());
        assert!(principals_in("bogus alice\n", p, &names).is_none());
    }
}
