//! The host verifies every `publickey` signature itself and signs every key
//! exchange hash with keys the network side never holds: the real `ssh` logs in
//! with each key type and signature algorithm (ed25519, rsa-sha2-256,
//! rsa-sha2-512, ECDSA, a certificate) against each host key type, and each
//! login costs exactly one signing request and one verification.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{Server, client_opts, current_user, run_with_input, temp_dir};

/// A key made by ssh-keygen (`-t kind -b bits`); its private key's path.
fn keygen(dir: &Path, name: &str, kind: &str, bits: &str) -> PathBuf {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-b", bits, "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success(), "ssh-keygen {kind}");
    path
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

const SIGNED: &str = "host: signed a key exchange hash with ";
const VERIFIED: &str = "host: verified ";

/// One login with `key`, the client limited to `algo` for its signature and
/// `host_algo` for the host key; returns after the server logged its answer.
fn login(srv: &Server, key: &Path, algo: &str, host_algo: &str, accepted: usize) {
    let user = current_user();
    let mut c = Command::new("ssh");
    c.args(client_opts(key))
        .args(["-o", &format!("PubkeyAcceptedAlgorithms={algo}")])
        .args(["-o", &format!("HostKeyAlgorithms={host_algo}")])
        .args(["-p", &srv.port.to_string()])
        .arg(format!("{user}@127.0.0.1"))
        .arg("echo in-$((40+2))");
    let o = run_with_input(&mut c, b"");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "in-42",
        "{algo} / {host_algo}: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while count(&srv.log(), "Accepted publickey for ") < accepted && std::time::Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_key_type_logs_in_with_one_host_signature_and_one_verification_each() {
    if support::skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let dir = temp_dir("keyverify");
    let host_keys = [
        keygen(&dir, "host_ed25519", "ed25519", "256"),
        keygen(&dir, "host_rsa", "rsa", "3072"),
        keygen(&dir, "host_ecdsa", "ecdsa", "256"),
    ];
    let clients = [
        (keygen(&dir, "ed25519", "ed25519", "256"), "ssh-ed25519"),
        (keygen(&dir, "rsa", "rsa", "3072"), "rsa-sha2-256"),
        (dir.join("rsa"), "rsa-sha2-512"),
        (
            keygen(&dir, "ecdsa256", "ecdsa", "256"),
            "ecdsa-sha2-nistp256",
        ),
        (
            keygen(&dir, "ecdsa384", "ecdsa", "384"),
            "ecdsa-sha2-nistp384",
        ),
    ];
    let mut authorized = String::new();
    for (k, _) in &clients[..] {
        if k.ends_with("rsa") && authorized.contains(" rsa\n") {
            continue;
        }
        authorized.push_str(&std::fs::read_to_string(k.with_extension("pub")).expect("pub"));
    }
    std::fs::write(dir.join("authorized_keys"), authorized).expect("authorized_keys");
    let config = dir.join("rsshd_config");
    let host_lines: String = host_keys
        .iter()
        .map(|k| format!("HostKey {}\n", k.display()))
        .collect();
    std::fs::write(
        &config,
        format!(
            "LogLevel DEBUG\nPerSourcePenalties no\nListenAddress 127.0.0.1\nPort 0\n{host_lines}AuthorizedKeysFile {}/authorized_keys\nPermitRootLogin yes\nPidFile none\nControlSocket {}/control.sock\n",
            dir.display(),
            dir.display()
        ),
    )
    .expect("config");
    let srv = Server::spawn(dir.clone(), config, dir.join("unused"));
    let host_algos = [
        "ssh-ed25519",
        "rsa-sha2-512",
        "rsa-sha2-256",
        "ecdsa-sha2-nistp256",
    ];
    let mut logins = 0;
    for (i, (key, algo)) in clients.iter().enumerate() {
        let host_algo = host_algos[i % host_algos.len()];
        let before = srv.log();
        logins += 1;
        login(&srv, key, algo, host_algo, logins);
        let log = srv.log();
        let new = &log[before.len().min(log.len())..];
        // One key exchange signed by the host, with the host key the client
        // asked for; one signature verified by the host, of the algorithm the
        // client used.
        assert_eq!(count(new, SIGNED), 1, "{algo}/{host_algo}:\n{new}");
        assert_eq!(
            count(new, &format!("{SIGNED}{host_algo}")),
            1,
            "{algo}/{host_algo}:\n{new}"
        );
        assert_eq!(count(new, VERIFIED), 1, "{algo}:\n{new}");
        assert_eq!(
            count(new, &format!("{VERIFIED}{algo} signature")),
            1,
            "{algo}:\n{new}"
        );
    }
    assert_eq!(count(&srv.log(), "Accepted publickey for "), clients.len());
    // No refusal along the way.
    assert!(!srv.log().contains("refused KeyVerify"), "{}", srv.log());
    assert!(!srv.log().contains("refused SignKex"), "{}", srv.log());
}

#[test]
fn a_certificate_login_is_verified_by_the_host_over_the_certified_key() {
    if support::skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let dir = temp_dir("keyverify-cert");
    let user = current_user();
    let ca = keygen(&dir, "ca", "ed25519", "256");
    let key = keygen(&dir, "alice", "rsa", "3072");
    let o = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca)
        .args(["-I", "alice@corp", "-n", &user, "-V", "-5m:+1h"])
        .arg(key.with_extension("pub"))
        .output()
        .expect("ssh-keygen -s");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let host = keygen(&dir, "host_key", "ed25519", "256");
    let config = dir.join("rsshd_config");
    std::fs::write(
        &config,
        format!(
            "LogLevel DEBUG\nPerSourcePenalties no\nListenAddress 127.0.0.1\nPort 0\nHostKey {}\nAuthorizedKeysFile none\nTrustedUserCAKeys {}\nPermitRootLogin yes\nPidFile none\nControlSocket {}/control.sock\n",
            host.display(),
            ca.with_extension("pub").display(),
            dir.display()
        ),
    )
    .expect("config");
    let srv = Server::spawn(dir.clone(), config, dir.join("unused"));
    login(
        &srv,
        &key,
        "rsa-sha2-512-cert-v01@openssh.com",
        "ssh-ed25519",
        1,
    );
    let log = srv.log();
    assert!(
        log.contains("Accepted publickey for ") && log.contains("RSA-CERT"),
        "{log}"
    );
    // The certified RSA key signed with SHA-512, as the request named.
    assert_eq!(
        count(&log, &format!("{VERIFIED}rsa-sha2-512 signature")),
        1,
        "{log}"
    );
    assert_eq!(count(&log, SIGNED), 1, "{log}");
}
