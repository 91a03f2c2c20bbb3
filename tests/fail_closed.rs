//! Issue 11, attack 8: a malformed restriction denies, as in sshd, and
//! `AuthenticationMethods publickey,publickey` needs two different keys. Real
//! OpenSSH `ssh` against a real rsshd.

mod support;

use std::process::{Command, Output};

use support::*;

fn out(o: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_malformed_from_pattern_denies() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let me = current_user();
    // The same list well formed: 127.0.0.1 is in `*` and not in 10.0.0.0/8.
    let ok = Server::start_with_keys("", Some(r#"from="*,!10.0.0.0/8""#));
    let o = ok.ssh_run(&me, "echo in", b"");
    assert!(o.status.success(), "{}\n{}", out(&o), ok.log());

    // sshd denies this whole list; reading `!10.0.0.0/99` as "no match" let
    // 127.0.0.1 in, although the list goes on to exclude 127.0.0.0/8.
    let list = "*,!10.0.0.0/99,!127.0.0.0/8";
    let srv = Server::start_with_keys("", Some(&format!("from=\"{list}\"")));
    let o = srv.ssh_run(&me, "echo in", b"");
    assert!(!o.status.success(), "got in: {}", out(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("in"));
    let log = srv.log();
    assert!(log.contains("invalid from criteria"), "{log}");
    assert!(
        log.contains(&format!(
            "Authentication tried for {me} with correct key but not from a permitted host (host=127.0.0.1, ip=127.0.0.1, required={list})."
        )),
        "{log}"
    );
}

#[test]
fn a_malformed_allow_users_host_part_denies() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let me = current_user();
    let ok = Server::start(&format!("AllowUsers {me}@*,!10.0.0.0/8"));
    let o = ok.ssh_run(&me, "echo in", b"");
    assert!(o.status.success(), "{}\n{}", out(&o), ok.log());

    // A network with bits set past its prefix (or a prefix length over 32): sshd
    // refuses it (addr_pton_cidr), and so does rsshd, when the configuration is
    // loaded, so no daemon ever runs on a list that could admit the wrong client.
    // (The check at connection time denies too: `pattern` unit tests.)
    let dir = temp_dir("fail-closed");
    let conf = dir.join("c.conf");
    let pattern = format!("{me}@*,!10.0.0.1/8");
    std::fs::write(&conf, format!("AllowUsers {pattern}\n")).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rsshd"))
        .arg("-t")
        .arg("-f")
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "-t accepted {pattern}: {err}");
    assert!(
        err.contains(&format!(
            "c.conf:1: AllowUsers: invalid pattern \"{pattern}\""
        )),
        "{err}"
    );
}

#[test]
fn a_malformed_permitopen_voids_its_key_line() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let me = current_user();
    let ok = Server::start_with_keys("", Some(r#"permitopen="localhost:8080""#));
    let o = ok.ssh_run(&me, "echo in", b"");
    assert!(o.status.success(), "{}\n{}", out(&o), ok.log());
    // No host: read loosely it would allow port 8080 on every host; sshd
    // refuses the line ("invalid permission port"), and so the key.
    let srv = Server::start_with_keys("", Some(r#"permitopen="8080""#));
    let o = srv.ssh_run(&me, "echo in", b"");
    assert!(!o.status.success(), "got in: {}", out(&o));
}

/// `ssh` with the server's key and `extra` identities, asking for `echo in`.
fn ssh_with_keys(srv: &Server, extra: &[&std::path::Path]) -> Output {
    let mut c = Command::new("ssh");
    c.args(client_opts(&srv.client_key));
    for k in extra {
        c.arg("-i").arg(k);
    }
    c.args(["-p", &srv.port.to_string()])
        .arg(format!("{}@127.0.0.1", current_user()))
        .arg("echo in");
    run_with_input(&mut c, b"")
}

#[test]
fn publickey_twice_needs_two_different_keys() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("AuthenticationMethods publickey,publickey");
    // One key: the client offers it again after the partial success, and sshd
    // refuses a key already used.
    let o = ssh_with_keys(&srv, &[]);
    assert!(!o.status.success(), "one key was enough: {}", out(&o));
    let log = srv.log();
    assert!(log.contains("Partial publickey for"), "{log}");
    assert!(
        log.contains("refusing previously-used ED25519 key"),
        "{log}"
    );
    assert!(!log.contains("Accepted publickey"), "{log}");

    // Two keys, both listed: the second completes the login.
    let second = keygen(&srv.dir, "second_key");
    let mut keys = std::fs::read_to_string(srv.dir.join("authorized_keys")).unwrap();
    keys.push_str(&std::fs::read_to_string(second.with_extension("pub")).unwrap());
    std::fs::write(srv.dir.join("authorized_keys"), keys).unwrap();
    let o = ssh_with_keys(&srv, &[&second]);
    assert!(o.status.success(), "{}\n{}", out(&o), srv.log());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "in\n");
    assert!(srv.log().contains("Accepted publickey for"));
}
