//! What a login was made with, as the session and the admin see it:
//! `ExposeAuthInfo` (the `SSH_USER_AUTH` file) compared with OpenSSH's sshd on the
//! same config and the same key, certificate and password, and the key or
//! certificate `rsshd sessions --json` shows for each connection.

mod certs_common;
mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use certs_common::*;
use support::{TEST_USER, TEST_USER2, current_user, temp_dir};

const PASSWORD: &str = "rsshd-test-pw-1";

/// What the session says about its `SSH_USER_AUTH`: the path, then `stat`'s mode
/// and owner, then the file.
const PROBE: &str = r#"printf '%s\n' "${SSH_USER_AUTH-unset}"; [ -n "$SSH_USER_AUTH" ] && stat -c '%a %U %F' "$SSH_USER_AUTH" && cat "$SSH_USER_AUTH"; true"#;

/// `ssh` with `key` (and its certificate) and, after it, `password` through
/// sshpass (AuthenticationMethods publickey,password).
fn ssh_then_password(port: u16, key: &Path, user: &str, command: &str) -> Output {
    let mut c = Command::new("sshpass");
    c.args(["-p", PASSWORD, "ssh", "-F", "/dev/null", "-i"])
        .arg(key)
        .args(["-o", "IdentitiesOnly=yes"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "LogLevel=ERROR"])
        .args(["-o", "ConnectTimeout=10"])
        .args(["-o", "PreferredAuthentications=publickey,password"])
        .args(["-p", &port.to_string()])
        .arg(format!("{user}@127.0.0.1"))
        .arg(command);
    support::run_with_input(&mut c, b"")
}

/// The probe's answer, split: path, `mode owner type`, the file's lines.
fn probe(o: &Output, log: &str) -> (String, String, String) {
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{text}\n{}\n{log}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut lines = text.splitn(3, '\n');
    let path = lines.next().unwrap_or_default().to_string();
    let stat = lines.next().unwrap_or_default().to_string();
    let body = lines.next().unwrap_or_default().to_string();
    (path, stat, body)
}

/// A path as sshd names the file: `/tmp/sshauth.` and mkstemp's 15 characters.
fn is_sshauth_path(p: &str) -> bool {
    p.strip_prefix("/tmp/sshauth.")
        .is_some_and(|t| t.len() == 15 && t.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn gone_soon(path: &str) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if !Path::new(path).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A certificate, then a password (two methods, both listed), for a user whose
/// Match turns ExposeAuthInfo on; another user, for whom it stays off, gets no
/// variable. rsshd's file says what sshd's says, has its mode, owner and kind of
/// name, and is gone once the connection is.
#[test]
fn ssh_user_auth_lists_the_methods_as_sshd_does() {
    if needs_tools()
        || support::skip_unless_root_with(TEST_USER)
        || support::skip_unless_root_with(TEST_USER2)
        || support::skip_without(&["sshpass"])
    {
        return;
    }
    if let Err(e) = rsshd::host::pam::available() {
        support::skip(&format!("PAM unavailable: {e}"));
        return;
    }
    let dir = temp_dir("auth-info");
    let ca = ca(&dir, "ca");
    let key = cert(
        &dir,
        "user",
        &ca,
        "user@corp",
        &["-n", TEST_USER, "-z", "7"],
    );
    let key2 = cert(&dir, "user2", &ca, "user2@corp", &["-n", TEST_USER2]);
    let lines = format!(
        "AuthorizedKeysFile none\nTrustedUserCAKeys {}\nUsePAM yes\nPasswordAuthentication yes\n\
         KbdInteractiveAuthentication no\nExposeAuthInfo no",
        ca.with_extension("pub").display()
    );
    let tail = format!(
        "Match User {TEST_USER}\n  AuthenticationMethods publickey,password\n  ExposeAuthInfo yes\n"
    );
    let srv = rsshd_with_tail(&dir, &lines, &tail);
    let reference = RefSshd::start_with_tail(&dir, &lines, &tail);

    let ours = ssh_then_password(srv.port, &key, TEST_USER, PROBE);
    let theirs = ssh_then_password(reference.port, &key, TEST_USER, PROBE);
    let (path, stat, body) = probe(&ours, &srv.log());
    let (ref_path, ref_stat, ref_body) = probe(&theirs, &reference.log());
    assert!(is_sshauth_path(&ref_path), "sshd's path: {ref_path}");
    assert!(is_sshauth_path(&path), "rsshd's path: {path}");
    assert_eq!(ref_stat, format!("600 {TEST_USER} regular file"));
    assert_eq!(stat, ref_stat);
    let cert_text = std::fs::read_to_string(dir.join("user-cert.pub")).unwrap();
    let mut cert_words = cert_text.split_whitespace();
    let cert_line = format!(
        "publickey {} {}\n",
        cert_words.next().unwrap(),
        cert_words.next().unwrap()
    );
    assert_eq!(ref_body, format!("{cert_line}password\n"), "sshd's file");
    assert_eq!(body, ref_body, "rsshd (left) and sshd (right) differ");
    // The connection is over: the file is gone.
    assert!(gone_soon(&path), "{path} left behind\n{}", srv.log());

    // Outside the Match, no file and no variable (sshd's too).
    let ours2 = ssh(srv.port, &key2, TEST_USER2, &[PROBE]);
    let theirs2 = ssh(reference.port, &key2, TEST_USER2, &[PROBE]);
    assert_eq!(probe(&theirs2, &reference.log()).0, "unset");
    assert_eq!(probe(&ours2, &srv.log()).0, "unset");
}

/// A plain key's line, and the file is removed when the connection ends.
#[test]
fn plain_key_line_and_removal_at_the_connection_end() {
    if needs_tools() {
        return;
    }
    let dir = temp_dir("auth-info-mux");
    let user = current_user();
    let key = support::keygen(&dir, "id");
    let ak = dir.join("authorized_keys");
    std::fs::copy(key.with_extension("pub"), &ak).unwrap();
    let srv = rsshd(
        &dir,
        &format!("AuthorizedKeysFile {}\nExposeAuthInfo yes", ak.display()),
    );
    let mut c = Command::new("ssh");
    c.args(support::client_opts(&key))
        .args(["-p", &srv.port.to_string()])
        .arg(format!("{user}@127.0.0.1"))
        .arg(r#"echo "$SSH_USER_AUTH"; cat "$SSH_USER_AUTH"; test -e "$SSH_USER_AUTH" && echo present"#);
    let o = support::run_with_input(&mut c, b"");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut lines = text.lines();
    let path = lines.next().unwrap_or_default().to_string();
    assert!(is_sshauth_path(&path), "{text}\n{}", srv.log());
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let mut words = pubkey.split_whitespace();
    assert_eq!(
        lines.next().unwrap_or_default(),
        format!(
            "publickey {} {}",
            words.next().unwrap(),
            words.next().unwrap()
        )
    );
    assert_eq!(lines.next(), Some("present"));
    assert!(gone_soon(&path), "{path} left behind\n{}", srv.log());
}

/// `rsshd sessions --json` shows the certificate a connection logged in with:
/// its key's type and fingerprint, its key ID and serial, its CA's fingerprint.
#[test]
fn sessions_json_shows_the_login_certificate() {
    if needs_tools() {
        return;
    }
    let dir = temp_dir("auth-info-sessions");
    let user = current_user();
    let ca = ca(&dir, "ca");
    let key = cert(
        &dir,
        "alice",
        &ca,
        "alice@corp",
        &["-n", &user, "-z", "4242"],
    );
    let plain = support::keygen(&dir, "plain");
    let ak = dir.join("authorized_keys");
    std::fs::copy(plain.with_extension("pub"), &ak).unwrap();
    let srv = rsshd(
        &dir,
        &format!(
            "AuthorizedKeysFile {}\nTrustedUserCAKeys {}",
            ak.display(),
            ca.with_extension("pub").display()
        ),
    );
    let open = |key: &Path| {
        let mut c = Command::new("ssh");
        c.args(support::client_opts(key))
            .args(["-p", &srv.port.to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .args(["echo", "up;", "sleep", "30"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut buf = [0u8; 3];
        use std::io::Read;
        out.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"up\n");
        child
    };
    let mut by_cert = open(&key);
    let mut by_key = open(&plain);
    let o = Command::new(env!("CARGO_BIN_EXE_rsshd"))
        .args(["sessions", "--json", "--socket"])
        .arg(dir.join("control.sock"))
        .output()
        .unwrap();
    let _ = by_cert.kill();
    let _ = by_key.kill();
    let _ = by_cert.wait();
    let _ = by_key.wait();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let keys: Vec<&serde_json::Value> = rows.iter().map(|r| &r["keys"][0]).collect();
    let cert_row = keys
        .iter()
        .find(|k| k["cert"].is_object())
        .expect("a certificate login");
    assert_eq!(cert_row["type"], "ED25519-CERT");
    assert_eq!(
        cert_row["fingerprint"],
        fingerprint(&key.with_extension("pub")).as_str()
    );
    assert_eq!(cert_row["cert"]["key_id"], "alice@corp");
    assert_eq!(cert_row["cert"]["serial"], 4242);
    assert_eq!(cert_row["cert"]["ca_type"], "ED25519");
    assert_eq!(
        cert_row["cert"]["ca_fingerprint"],
        fingerprint(&ca.with_extension("pub")).as_str()
    );
    let key_row = keys
        .iter()
        .find(|k| k["cert"].is_null())
        .expect("a plain key login");
    assert_eq!(key_row["type"], "ED25519");
    assert_eq!(
        key_row["fingerprint"],
        fingerprint(&plain.with_extension("pub")).as_str()
    );
}
