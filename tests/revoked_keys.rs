//! `RevokedKeys` against the real `ssh` client, with KRLs and key lists made by the
//! real `ssh-keygen` while the test runs. The file is read for every key offered
//! (as sshd does), so each step rewrites it under a running server.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{Server, current_user, keygen, skip_without, temp_dir};

fn ssh_keygen(args: &[&str], files: &[&Path]) {
    let o = Command::new("ssh-keygen")
        .args(args)
        .args(files)
        .output()
        .expect("ssh-keygen");
    assert!(
        o.status.success(),
        "ssh-keygen {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn pub_of(key: &Path) -> PathBuf {
    key.with_extension("pub")
}

/// `ED25519 SHA256:...` as sshd's log lines name a key.
fn key_words(key: &Path) -> String {
    let o = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(pub_of(key))
        .output()
        .expect("ssh-keygen -l");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let fp = text.split_whitespace().nth(1).expect("fingerprint");
    format!("ED25519 {fp}")
}

/// Whether our key logs in (and the command runs).
fn logs_in(srv: &Server) -> bool {
    let o = srv.ssh_run(&current_user(), "echo in", b"");
    String::from_utf8_lossy(&o.stdout).trim() == "in"
}

/// A server whose `RevokedKeys` is `file` (written by the caller later).
fn server(file: &Path) -> Server {
    Server::start(&format!("RevokedKeys {}", file.display()))
}

#[test]
fn krl_from_ssh_keygen_revokes_by_key_and_by_hash() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let dir = temp_dir("revoked-krl");
    let krl = dir.join("revoked.krl");
    let srv = server(&krl);
    let client = srv.client_key.clone();
    let other = keygen(&dir, "other");
    let words = key_words(&client);

    // Missing: every key is refused, as in sshd.
    assert!(!logs_in(&srv), "logged in without a revocation file");
    let want = format!(
        "Error checking authentication key {words} in revoked keys file {}: No such file or directory",
        krl.display()
    );
    assert!(srv.wait_log(&want, Duration::from_secs(5)), "{}", srv.log());

    // A KRL revoking another key only.
    ssh_keygen(
        &["-q", "-k", "-f", krl.to_str().unwrap()],
        &[&pub_of(&other)],
    );
    assert!(
        logs_in(&srv),
        "refused by a KRL of another key:\n{}",
        srv.log()
    );

    // Ours added (`-u` updates the KRL in place): refused with sshd's line.
    ssh_keygen(
        &["-q", "-k", "-u", "-f", krl.to_str().unwrap()],
        &[&pub_of(&client)],
    );
    assert!(!logs_in(&srv), "a revoked key logged in:\n{}", srv.log());
    let want = format!(
        "Authentication key {words} revoked by file {}",
        krl.display()
    );
    assert!(srv.wait_log(&want, Duration::from_secs(5)), "{}", srv.log());

    // By hash only (the KRL holds no key): SHA-256 fingerprint, SHA-1 of the blob,
    // SHA-256 of the blob.
    let public = std::fs::read_to_string(pub_of(&client)).unwrap();
    let fp = words.split(' ').nth(1).unwrap().to_string();
    for spec in [
        format!("hash: {fp}\n"),
        format!("sha1: {public}"),
        format!("sha256: {public}"),
    ] {
        let spec_file = dir.join("spec");
        std::fs::write(&spec_file, &spec).unwrap();
        ssh_keygen(&["-q", "-k", "-f", krl.to_str().unwrap()], &[&spec_file]);
        assert!(!logs_in(&srv), "{spec:?} did not revoke:\n{}", srv.log());
    }
    // The log is read on a thread of its own and can trail the client's exit.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while srv.log().matches(&want).count() < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let n = srv.log().matches(&want).count();
    assert!(n >= 4, "{n} revocation lines:\n{}", srv.log());
}

#[test]
fn krl_with_certificate_sections_still_checks_keys() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let dir = temp_dir("revoked-ca");
    let krl = dir.join("revoked.krl");
    let srv = server(&krl);
    let ca = keygen(&dir, "ca");
    let other = keygen(&dir, "other");
    let spec = dir.join("spec");
    let write_krl = |extra: &Path| {
        let other_pub = std::fs::read_to_string(pub_of(&other)).unwrap();
        let extra_pub = std::fs::read_to_string(extra).unwrap();
        // Serial list, range and key ID sections under a CA, plus explicit keys.
        std::fs::write(
            &spec,
            format!(
                "serial: 7\nserial: 100-200\nserial: 1000\nid: alice@corp\nkey: {other_pub}key: {extra_pub}"
            ),
        )
        .unwrap();
        ssh_keygen(
            &[
                "-q",
                "-k",
                "-s",
                pub_of(&ca).to_str().unwrap(),
                "-f",
                krl.to_str().unwrap(),
            ],
            &[&spec],
        );
    };
    write_krl(&pub_of(&ca));
    assert!(
        logs_in(&srv),
        "certificate sections refused a plain key:\n{}",
        srv.log()
    );
    write_krl(&pub_of(&srv.client_key));
    assert!(!logs_in(&srv), "a revoked key logged in:\n{}", srv.log());
    assert!(srv.log().contains("revoked by file"), "{}", srv.log());
}

#[test]
fn plain_key_lists_and_bad_files() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let dir = temp_dir("revoked-list");
    let list = dir.join("revoked_keys");
    let srv = server(&list);
    let other = keygen(&dir, "other");
    let client_pub = std::fs::read_to_string(pub_of(&srv.client_key)).unwrap();
    let other_pub = std::fs::read_to_string(pub_of(&other)).unwrap();

    std::fs::write(&list, format!("# revoked\n\n{other_pub}")).unwrap();
    assert!(
        logs_in(&srv),
        "refused by a list of another key:\n{}",
        srv.log()
    );
    std::fs::write(&list, format!("{other_pub}  {client_pub}")).unwrap();
    assert!(!logs_in(&srv), "a listed key logged in:\n{}", srv.log());
    assert!(srv.log().contains("revoked by file"), "{}", srv.log());

    // A line that is no key, a truncated KRL, a directory: all refuse every key.
    let before = srv
        .log()
        .matches("Error checking authentication key")
        .count();
    std::fs::write(&list, format!("not a key\n{other_pub}")).unwrap();
    assert!(!logs_in(&srv), "a malformed list let a key in");
    let krl_path = dir.join("k.krl");
    ssh_keygen(
        &["-q", "-k", "-f", krl_path.to_str().unwrap()],
        &[&pub_of(&other)],
    );
    let krl = std::fs::read(&krl_path).unwrap();
    std::fs::write(&list, &krl[..krl.len() - 3]).unwrap();
    assert!(!logs_in(&srv), "a truncated KRL let a key in");
    std::fs::remove_file(&list).unwrap();
    std::fs::create_dir(&list).unwrap();
    assert!(!logs_in(&srv), "a directory let a key in");
    let after = srv
        .log()
        .matches("Error checking authentication key")
        .count();
    assert!(after >= before + 3, "{}", srv.log());

    // And a good file again lets it in: nothing was remembered.
    std::fs::remove_dir(&list).unwrap();
    std::fs::write(&list, other_pub).unwrap();
    assert!(logs_in(&srv), "{}", srv.log());
}
