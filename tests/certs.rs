//! OpenSSH user and host certificates and KRLs, made by the real `ssh-keygen` at
//! test time, presented by the real `ssh`: `TrustedUserCAKeys`,
//! `AuthorizedPrincipalsFile`, `cert-authority` lines, validity, critical options,
//! extensions, `CASignatureAlgorithms`, `RevokedKeys`, `HostCertificate`; refusals
//! and the accepted line compared with OpenSSH's sshd.

mod certs_common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use certs_common::*;
use support::{Server, current_user, keygen, run_with_input, temp_dir};

#[test]
fn trusted_ca_certificate_logs_in_with_sshds_accepted_line() {
    if needs_tools() {
        return;
    }
    let dir = temp_dir("certs-ok");
    let user = current_user();
    let ca = ca(&dir, "ca");
    let key = cert(
        &dir,
        "alice",
        &ca,
        "alice@corp",
        &["-n", &user, "-z", "42", "-V", "-5m:+1h"],
    );
    let srv = rsshd(
        &dir,
        &format!(
            "AuthorizedKeysFile none\nTrustedUserCAKeys {}",
            ca.with_extension("pub").display()
        ),
    );
    let o = ssh(srv.port, &key, &user, &["echo", "in-by-cert"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "in-by-cert",
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    let (kfp, cafp) = (
        fingerprint(&key.with_extension("pub")),
        fingerprint(&ca.with_extension("pub")),
    );
    let accepted = format!("ssh2: ED25519-CERT {kfp} ID alice@corp (serial 42) CA ED25519 {cafp}");
    assert!(
        srv.wait_log(
            &format!("Accepted publickey for {user} from 127.0.0.1 port "),
            Duration::from_secs(5)
        ) && srv.log().contains(&accepted),
        "{}",
        srv.log()
    );
    assert!(
        srv.log().contains(&format!(
            "Accepted certificate ID \"alice@corp\" (serial 42) signed by ED25519 CA {cafp} via {}",
            ca.with_extension("pub").display()
        )),
        "{}",
        srv.log()
    );
    // Without the CA file, the same certificate is refused.
    let dir2 = temp_dir("certs-noca");
    let srv2 = rsshd(&dir2, "AuthorizedKeysFile none");
    assert!(!ssh(srv2.port, &key, &user, &["true"]).status.success());
}

/// Each bad certificate is refused by rsshd with the line sshd logs for it (sshd,
/// run on the same files, must log the same words).
#[test]
fn bad_certificates_are_refused_in_sshds_words() {
    if needs_tools() || support::skip_unless_root_with(support::TEST_USER) {
        return;
    }
    let dir = temp_dir("certs-bad");
    let user = current_user();
    let ca_key = ca(&dir, "ca");
    let other_ca = ca(&dir, "other_ca");
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            cert(
                &dir,
                "expired",
                &ca_key,
                "e",
                &["-n", &user, "-V", "20200101:20200201"],
            ),
            "Certificate invalid: expired",
        ),
        (
            cert(
                &dir,
                "future",
                &ca_key,
                "f",
                &["-n", &user, "-V", "+1d:+2d"],
            ),
            "Certificate invalid: not yet valid",
        ),
        (
            cert(&dir, "nobody", &ca_key, "n", &["-n", "someone-else"]),
            "Certificate invalid: name is not a listed principal",
        ),
        (
            cert(&dir, "noprinc", &ca_key, "np", &[]),
            "Certificate lacks principal list",
        ),
        (
            cert(
                &dir,
                "crit",
                &ca_key,
                "c",
                &["-n", &user, "-O", "critical:frobnicate=yes"],
            ),
            "Certificate critical option \"frobnicate\" is not supported",
        ),
        (
            cert(
                &dir,
                "srcaddr",
                &ca_key,
                "s",
                &["-n", &user, "-O", "source-address=192.0.2.0/24"],
            ),
            "cert: Authentication tried for USER with valid certificate but not from a permitted source address (127.0.0.1).",
        ),
    ];
    let wrong_ca = cert(&dir, "wrongca", &other_ca, "w", &["-n", &user]);
    let lines = format!(
        "AuthorizedKeysFile none\nTrustedUserCAKeys {}",
        ca_key.with_extension("pub").display()
    );
    let srv = rsshd(&dir, &lines);
    let reference = RefSshd::start(&dir, &lines);
    for (key, words) in &cases {
        let words = words.replace("USER", &user);
        for (port, log) in [
            (srv.port, Box::new(|| srv.log()) as Box<dyn Fn() -> String>),
            (reference.port, Box::new(|| reference.log())),
        ] {
            let o = ssh(port, key, &user, &["true"]);
            assert!(
                !o.status.success(),
                "{} let in on port {port}",
                key.display()
            );
            assert!(
                wait_for(&log, &words),
                "port {port} did not log {words:?}:\n{}",
                log()
            );
        }
    }
    // Another CA's certificate: neither logs a reason, both refuse.
    assert!(!ssh(srv.port, &wrong_ca, &user, &["true"]).status.success());
    assert!(
        !ssh(reference.port, &wrong_ca, &user, &["true"])
            .status
            .success()
    );
    assert!(
        srv.log().contains("Refused by certificate options"),
        "{}",
        srv.log()
    );
    // A good certificate: both log the same `Accepted publickey ... ssh2: ...` line.
    let good = cert(
        &dir,
        "good",
        &ca_key,
        "good@corp",
        &["-n", &user, "-z", "77"],
    );
    for port in [srv.port, reference.port] {
        let o = ssh(port, &good, &user, &["true"]);
        assert!(
            o.status.success(),
            "port {port}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert!(wait_for(|| reference.log(), "Accepted publickey for"));
    assert!(wait_for(|| srv.log(), "Accepted publickey for"));
    let accepted = |log: String| {
        log.lines()
            .find(|l| l.contains("Accepted publickey for"))
            .and_then(|l| l.split_once(" ssh2: "))
            .map(|(_, t)| t.to_string())
    };
    let ours = accepted(srv.log());
    assert!(
        ours.as_deref()
            .is_some_and(|t| t.contains("ID good@corp (serial 77) CA ED25519 SHA256:")),
        "{ours:?}"
    );
    assert_eq!(ours, accepted(reference.log()));
}

/// Extensions and critical options become the session's permissions: no
/// `permit-pty`, no terminal; `force-command` runs instead of the client's
/// command; a `source-address` that admits the client lets it in.
#[test]
fn extensions_and_critical_options_apply_to_the_session() {
    if needs_tools() {
        return;
    }
    let dir = temp_dir("certs-ext");
    let user = current_user();
    let ca_key = ca(&dir, "ca");
    let full = cert(&dir, "full", &ca_key, "full", &["-n", &user]);
    let nopty = cert(
        &dir,
        "nopty",
        &ca_key,
        "nopty",
        &["-n", &user, "-O", "no-pty"],
    );
    let forced = cert(
        &dir,
        "forced",
        &ca_key,
        "forced",
        &[
            "-n",
            &user,
            "-O",
            "force-command=echo forced-by-cert",
            "-O",
            "source-address=127.0.0.0/8,::1/128",
        ],
    );
    let srv = rsshd(
        &dir,
        &format!(
            "AuthorizedKeysFile none\nTrustedUserCAKeys {}",
            ca_key.with_extension("pub").display()
        ),
    );
    // `ssh -tt` gives up (255) when the terminal it must have is refused.
    let tty = |key: &Path| {
        let o = ssh(srv.port, key, &user, &["-tt", "tty"]);
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert!(tty(&full).0.contains("/dev/pts/"), "{}", srv.log());
    let (out, err) = tty(&nopty);
    assert!(
        !out.contains("/dev/pts/") && err.contains("PTY allocation request failed"),
        "{out}\n{err}\n{}",
        srv.log()
    );
    let o = ssh(srv.port, &forced, &user, &["echo", "client-command"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "forced-by-cert",
        "{}",
        srv.log()
    );
}

/// `AuthorizedPrincipalsFile` (with `%u`) names the principals a certificate may
/// carry for the user; the options on its line apply.
#[test]
fn authorized_principals_file_chooses_the_principals() {
    if needs_tools() {
        return;
    }
    let dir = temp_dir("certs-princ");
    let user = current_user();
    let ca_key = ca(&dir, "ca");
    std::fs::create_dir_all(dir.join("principals")).unwrap();
    std::fs::write(
        dir.join("principals").join(&user),
        "# who may log in\nweb-admins\ncommand=\"echo via-principals-line\" db-admins\n",
    )
    .unwrap();
    let web = cert(&dir, "web", &ca_key, "web", &["-n", "web-admins"]);
    let db = cert(&dir, "db", &ca_key, "db", &["-n", "db-admins"]);
    let own = cert(&dir, "own", &ca_key, "own", &["-n", &user]);
    let srv = rsshd(
        &dir,
        &format!(
            "AuthorizedKeysFile none\nTrustedUserCAKeys {}\nAuthorizedPrincipalsFile {}/principals/%u",
            ca_key.with_extension("pub").display(),
            dir.display()
        ),
    );
    let out = |key: &Path| {
        let o = ssh(srv.port, key, &user, &["echo", "plain"]);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )
    };
    assert_eq!(out(&web), (true, "plain".to_string()), "{}", srv.log());
    assert_eq!(
        out(&db),
        (true, "via-principals-line".to_string()),
        "{}",
        srv.log()
    );
    // The user's own name is no longer enough once the file is in use.
    assert!(!out(&own).0);
    assert!(
        wait_for(
            || srv.log(),
            "Certificate does not contain an authorized principal"
        ),
        "{}",
        srv.log()
    );
}

/// A `cert-authority` line in authorized_keys, with `principals=` and its own
/// options merged with the certificate's as sshd merges them.
#[test]
fn cert_authority_lines_in_authorized_keys() {
    if needs_tools() {
        return;
    }
    let dir = temp_dir("certs-akca");
    let user = current_user();
    let ca_key = ca(&dir, "ca");
    let ca_pub = std::fs::read_to_string(ca_key.with_extension("pub")).unwrap();
    std::fs::write(
        dir.join("authorized_keys"),
        format!("cert-authority,principals=\"ops,oncall\",no-pty {ca_pub}"),
    )
    .unwrap();
    let ops = cert(
        &dir,
        "ops",
        &ca_key,
        "ops-cert",
        &["-n", "oncall", "-z", "7"],
    );
    let mine = cert(&dir, "mine", &ca_key, "mine", &["-n", &user]);
    let srv = rsshd(
        &dir,
        &format!("AuthorizedKeysFile {}/authorized_keys", dir.display()),
    );
    let o = ssh(srv.port, &ops, &user, &["-tt", "tty"]);
    // Let in, but the line's no-pty wins over the certificate's permit-pty (and
    // `ssh -tt` gives up without its terminal).
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("PTY allocation request failed")
            && wait_for(|| srv.log(), &format!("Accepted publickey for {user} ")),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    let o = ssh(srv.port, &ops, &user, &["echo", "in"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "in",
        "{}",
        srv.log()
    );
    let cafp = fingerprint(&ca_key.with_extension("pub"));
    assert!(
        srv.log().contains(&format!(
            "Accepted certificate ID \"ops-cert\" (serial 7) signed by CA ED25519 {cafp} found at {}/authorized_keys:1",
            dir.display()
        )),
        "{}",
        srv.log()
    );
    // principals= replaces the user's name.
    assert!(!ssh(srv.port, &mine, &user, &["true"]).status.success());
    assert!(
        wait_for(
            || srv.log(),
            "Certificate does not contain an authorized principal"
        ),
        "{}",
        srv.log()
    );
    // The CA key itself is not a user key.
    let ca_as_user = dir.join("ca_copy");
    std::fs::copy(&ca_key, &ca_as_user).unwrap();
    let _ = std::fs::remove_file(dir.join("ca_copy-cert.pub"));
    assert!(
        !ssh(srv.port, &ca_as_user, &user, &["true"])
            .status
            .success()
    );
}

/// `CASignatureAlgorithms` refuses a certificate its CA signed with another
/// algorithm, in sshd's words.
#[test]
fn ca_signature_algorithms_are_enforced() {
    if needs_tools() {
        return;
    }
    let dir = temp_dir("certs-casig");
    let user = current_user();
    let ca_key = ca(&dir, "ca");
    let key = cert(&dir, "k", &ca_key, "k", &["-n", &user]);
    let srv = rsshd(
        &dir,
        &format!(
            "AuthorizedKeysFile none\nTrustedUserCAKeys {}\nCASignatureAlgorithms rsa-sha2-512",
            ca_key.with_extension("pub").display()
        ),
    );
    assert!(!ssh(srv.port, &key, &user, &["true"]).status.success());
    assert!(
        wait_for(
            || srv.log(),
            "userauth_pubkey: certificate signature algorithm ssh-ed25519: signature algorithm not supported"
        ),
        "{}",
        srv.log()
    );
}

/// `ssh-keygen -k` KRLs revoking by serial, by key ID, by the certified key and by
/// the CA key each refuse the certificate, with sshd's line.
#[test]
fn krl_revokes_certificates_by_serial_id_key_and_ca() {
    if needs_tools() {
        return;
    }
    let dir = temp_dir("certs-krl");
    let user = current_user();
    let ca_key = ca(&dir, "ca");
    let ca_pub = ca_key.with_extension("pub");
    let key = cert(&dir, "k", &ca_key, "bob@corp", &["-n", &user, "-z", "1234"]);
    let krl = dir.join("krl");
    let make_krl = |spec: &str, with_ca: bool| {
        let spec_file = dir.join("krl.spec");
        std::fs::write(&spec_file, spec).unwrap();
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-k", "-f"]).arg(&krl);
        if with_ca {
            c.arg("-s").arg(&ca_pub);
        }
        let o = c.arg(&spec_file).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    make_krl("serial: 1\n", true);
    let srv = rsshd(
        &dir,
        &format!(
            "AuthorizedKeysFile none\nTrustedUserCAKeys {}\nRevokedKeys {}",
            ca_pub.display(),
            krl.display()
        ),
    );
    // Another serial: still in.
    let o = ssh(srv.port, &key, &user, &["echo", "ok"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "ok",
        "{}",
        srv.log()
    );
    let kfp = fingerprint(&key.with_extension("pub"));
    let key_pub = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let ca_line = std::fs::read_to_string(&ca_pub).unwrap();
    for (spec, with_ca, revoked) in [
        (
            "serial: 1000-2000\n".to_string(),
            true,
            format!("ED25519-CERT {kfp}"),
        ),
        (
            "id: bob@corp\n".to_string(),
            true,
            format!("ED25519-CERT {kfp}"),
        ),
        (key_pub.clone(), false, format!("ED25519-CERT {kfp}")),
        (ca_line.clone(), false, format!("ED25519-CERT {kfp}")),
    ] {
        make_krl(&spec, with_ca);
        assert!(
            !ssh(srv.port, &key, &user, &["true"]).status.success(),
            "{spec} did not revoke"
        );
        let line = format!(
            "Authentication key {revoked} revoked by file {}",
            krl.display()
        );
        assert!(wait_for(|| srv.log(), &line), "{line}\n{}", srv.log());
    }
}

/// `HostCertificate` (and `-c`): a client that knows only the host CA, through a
/// `@cert-authority` line, connects with `StrictHostKeyChecking yes`; without the
/// certificate it refuses the host.
#[test]
fn host_certificate_satisfies_a_cert_authority_known_hosts_line() {
    if needs_tools() {
        return;
    }
    let dir = temp_dir("certs-host");
    let user = current_user();
    let host_ca = ca(&dir, "host_ca");
    let user_ca = ca(&dir, "user_ca");
    let host_key = keygen(&dir, "host_key");
    let o = Command::new("ssh-keygen")
        .args(["-q", "-h", "-s"])
        .arg(&host_ca)
        .args(["-I", "test-host", "-n", "127.0.0.1,localhost"])
        .arg(host_key.with_extension("pub"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let host_cert = dir.join("host_key-cert.pub");
    let key = cert(&dir, "u", &user_ca, "u", &["-n", &user]);
    let known = dir.join("known_hosts");
    std::fs::write(
        &known,
        format!(
            "@cert-authority * {}",
            std::fs::read_to_string(host_ca.with_extension("pub")).unwrap()
        ),
    )
    .unwrap();
    let strict = |port: u16| {
        let mut c = Command::new("ssh");
        c.args(["-F", "/dev/null", "-i"])
            .arg(&key)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=yes", "-o"])
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .args(["-p", &port.to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .args(["echo", "host-ok"]);
        run_with_input(&mut c, b"")
    };
    let base = format!(
        "AuthorizedKeysFile none\nTrustedUserCAKeys {}",
        user_ca.with_extension("pub").display()
    );
    // Without the certificate: the plain host key is unknown.
    let plain = rsshd(&dir, &base);
    let o = strict(plain.port);
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Host key verification failed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    drop(plain);
    let with_line = rsshd(
        &dir,
        &format!("{base}\nHostCertificate {}", host_cert.display()),
    );
    let o = strict(with_line.port);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "host-ok",
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        with_line.log()
    );
    drop(with_line);
    // The same with -c on the command line.
    let config = write_config(&dir, &base);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rsshd"));
    cmd.args(["-D", "-e", "-f"])
        .arg(&config)
        .arg("-c")
        .arg(&host_cert);
    let flag = Server::spawn_command(cmd, dir.clone(), config, dir.join("unused"));
    let o = strict(flag.port);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "host-ok",
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        flag.log()
    );
}
