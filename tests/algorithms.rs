//! The transport keywords, observed from OpenSSH's `ssh`: what `Ciphers`, `MACs`,
//! `KexAlgorithms`, `HostKeyAlgorithms` and `PubkeyAcceptedAlgorithms` leave out
//! fails and what they keep works; `RequiredRSASize`, `Compression`, `RekeyLimit`,
//! `FingerprintHash` and `LogLevel` do what sshd does; names are `ssh -Q`'s.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::*;

fn keygen_type(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-N", ""])
        .args(args)
        .arg("-f")
        .arg(&path)
        .status()
        .expect("run ssh-keygen");
    assert!(st.success());
    path
}

/// `ssh` as the current user with extra `-o` options (or flags such as `-c`),
/// running `command`.
fn ssh(srv: &Server, key: &Path, extra: &[&str], command: &str) -> Output {
    // ssh takes the first value of an option: ours before the shared ones.
    Command::new("ssh")
        .args(extra)
        .args(ssh_base_args(srv.port, key))
        .arg(format!("{}@127.0.0.1", current_user()))
        .arg(command)
        .output()
        .expect("run ssh")
}

fn works(srv: &Server, extra: &[&str]) {
    let o = ssh(srv, &srv.client_key, extra, "echo ok");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "ok\n",
        "{extra:?} must work: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
}

fn fails(srv: &Server, extra: &[&str], client_says: &str) {
    // "Unable to negotiate" is an INFO line.
    let extra = [&["-o", "LogLevel=INFO"], extra].concat();
    let o = ssh(srv, &srv.client_key, &extra, "echo ok");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{extra:?} must fail");
    assert!(
        err.contains(client_says),
        "{extra:?}: expected {client_says:?} from ssh, got: {err}"
    );
}

#[test]
fn configured_lists_decide_what_ssh_can_negotiate() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start(
        "Ciphers aes256-gcm@openssh.com,aes128-ctr\n\
         MACs hmac-sha2-512\n\
         KexAlgorithms ecdh-sha2-nistp384,curve25519-sha256\n",
    );
    works(&srv, &["-c", "aes256-gcm@openssh.com"]);
    fails(
        &srv,
        &["-c", "chacha20-poly1305@openssh.com"],
        "no matching cipher found",
    );
    works(&srv, &["-c", "aes128-ctr", "-m", "hmac-sha2-512"]);
    fails(
        &srv,
        &["-c", "aes128-ctr", "-m", "hmac-sha2-256-etm@openssh.com"],
        "no matching MAC found",
    );
    works(&srv, &["-o", "KexAlgorithms=ecdh-sha2-nistp384"]);
    fails(
        &srv,
        &["-o", "KexAlgorithms=ecdh-sha2-nistp256"],
        "no matching key exchange method found",
    );
}

/// The algorithm lines of ssh-audit's hardening guide for Debian 12's sshd name
/// algorithms russh lacks (sntrup761, umac): rsshd starts, says what it leaves
/// out, applies the rest, and never offers what it left out.
#[test]
fn a_hardening_guides_lists_start_and_apply_what_rsshd_has() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start(
        "KexAlgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org\n\
         Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr\n\
         MACs hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,umac-128-etm@openssh.com\n",
    );
    for line in [
        "KexAlgorithms: sntrup761x25519-sha512@openssh.com is not implemented by rsshd",
        "MACs: umac-128-etm@openssh.com is not implemented by rsshd",
    ] {
        assert!(srv.log().contains(line), "{line:?} in\n{}", srv.log());
    }
    works(&srv, &[]);
    works(
        &srv,
        &["-c", "aes128-ctr", "-m", "hmac-sha2-512-etm@openssh.com"],
    );
    fails(
        &srv,
        &["-c", "aes128-ctr", "-m", "umac-128-etm@openssh.com"],
        "no matching MAC found",
    );
    fails(
        &srv,
        &["-o", "KexAlgorithms=sntrup761x25519-sha512@openssh.com"],
        "no matching key exchange method found",
    );
    fails(
        &srv,
        &["-o", "KexAlgorithms=ecdh-sha2-nistp256"],
        "no matching key exchange method found",
    );
}

#[test]
fn list_forms_add_remove_and_prefer() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    // Not offered by default: CBC and finite-field DH.
    let srv = Server::start("");
    fails(&srv, &["-c", "aes128-cbc"], "no matching cipher found");
    fails(
        &srv,
        &["-o", "KexAlgorithms=diffie-hellman-group14-sha256"],
        "no matching key exchange method found",
    );
    // What a Debian 12 client asks for first (russh has no sntrup), then gets.
    works(
        &srv,
        &[
            "-o",
            "KexAlgorithms=sntrup761x25519-sha512@openssh.com,curve25519-sha256",
        ],
    );
    drop(srv);
    // `+` adds them, `-` (with a wildcard) removes, `^` puts first.
    let srv = Server::start(
        "Ciphers +aes128-cbc\n\
         KexAlgorithms -curve25519*,ecdh-sha2-nistp521\n\
         MACs ^hmac-sha2-512\n",
    );
    works(&srv, &["-c", "aes128-cbc"]);
    works(&srv, &["-c", "chacha20-poly1305@openssh.com"]);
    fails(
        &srv,
        &[
            "-o",
            "KexAlgorithms=curve25519-sha256,curve25519-sha256@libssh.org",
        ],
        "no matching key exchange method found",
    );
    fails(
        &srv,
        &["-o", "KexAlgorithms=ecdh-sha2-nistp521"],
        "no matching key exchange method found",
    );
    works(&srv, &["-o", "KexAlgorithms=ecdh-sha2-nistp256"]);
    // The client's order decides among what both have (RFC 4253), so the
    // server's preference shows in its KEXINIT: hmac-sha2-512 first.
    let o = ssh(
        &srv,
        &srv.client_key,
        &["-vvv", "-o", "LogLevel=DEBUG3"],
        "true",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let peer = err
        .split("peer server KEXINIT proposal")
        .nth(1)
        .unwrap_or_else(|| panic!("no server proposal in: {err}"));
    let macs = peer
        .lines()
        .find(|l| l.contains("MACs ctos:"))
        .expect("MACs line");
    assert!(
        macs.trim_end()
            .ends_with("MACs ctos: hmac-sha2-512,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha2-256"),
        "{macs}"
    );
    let ciphers = peer
        .lines()
        .find(|l| l.contains("ciphers ctos:"))
        .expect("ciphers line");
    assert!(ciphers.trim_end().ends_with(",aes128-cbc"), "{ciphers}");
}

#[test]
fn host_key_algorithms_choose_the_host_key() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let dir = temp_dir("hkalg");
    let ecdsa = keygen_type(&dir, "ecdsa_host", &["-t", "ecdsa"]);
    let srv = Server::start(&format!(
        "HostKey {}\nHostKeyAlgorithms ecdsa-sha2-nistp256",
        ecdsa.display()
    ));
    works(&srv, &["-o", "HostKeyAlgorithms=ecdsa-sha2-nistp256"]);
    fails(
        &srv,
        &["-o", "HostKeyAlgorithms=ssh-ed25519"],
        "no matching host key type found",
    );
    drop(srv);
    // A list that no loaded key can serve stops the start, as `rsshd -t` says.
    let cfg = dir.join("bad.conf");
    let hk = keygen_type(&dir, "ed_host", &["-t", "ed25519"]);
    std::fs::write(
        &cfg,
        format!(
            "HostKey {}\nHostKeyAlgorithms rsa-sha2-512\nPidFile none\nControlSocket {}/c.sock\n",
            hk.display(),
            dir.display()
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_rsshd"))
        .args(["-t", "-f"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("no host key can be used with HostKeyAlgorithms rsa-sha2-512"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pubkey_accepted_algorithms_and_required_rsa_size_decide_user_keys() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    // The client key is ed25519: left out, it is refused with sshd's line.
    let srv = Server::start("PubkeyAcceptedAlgorithms -ssh-ed25519*");
    fails(&srv, &[], "Permission denied");
    assert!(
        srv.wait_log(
            "userauth_pubkey: signature algorithm ssh-ed25519 not in PubkeyAcceptedAlgorithms",
            std::time::Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
    drop(srv);
    // A Match on the address puts it back (relative to the default, as sshd).
    let srv = Server::start_with_tail(
        "PubkeyAcceptedAlgorithms -ssh-ed25519*",
        "Match Address 127.0.0.0/8\n  PubkeyAcceptedAlgorithms ssh-ed25519,rsa-sha2-512",
    );
    works(&srv, &[]);
    drop(srv);

    // RSA: SHA-1 signatures only when added; keys below RequiredRSASize refused.
    let dir = temp_dir("rsa-size");
    let rsa = keygen_type(&dir, "id_rsa", &["-t", "rsa", "-b", "2048"]);
    let public = std::fs::read_to_string(rsa.with_extension("pub")).unwrap();
    let sha1 = ["-o", "PubkeyAcceptedAlgorithms=ssh-rsa"];
    // russh announces HostKeyAlgorithms as server-sig-algs, which OpenSSH clients
    // consult for RSA user keys: ssh-rsa must be in both (docs/keywords.md).
    let srv = Server::start(
        "PubkeyAcceptedAlgorithms +ssh-rsa\nHostKeyAlgorithms +ssh-rsa\nRequiredRSASize 2048",
    );
    std::fs::write(srv.dir.join("authorized_keys"), &public).unwrap();
    let o = ssh(&srv, &rsa, &sha1, "echo ok");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "ok\n",
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    drop(srv);
    let srv = Server::start("RequiredRSASize 3072");
    std::fs::write(srv.dir.join("authorized_keys"), &public).unwrap();
    let o = ssh(&srv, &rsa, &[], "echo ok");
    assert_ne!(o.status.code(), Some(0), "a 2048-bit key must be refused");
    assert!(
        srv.wait_log(
            "refusing RSA key: Invalid key length",
            std::time::Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
    drop(srv);
    // The default refuses SHA-1 signatures.
    let srv = Server::start("");
    std::fs::write(srv.dir.join("authorized_keys"), &public).unwrap();
    let o = ssh(&srv, &rsa, &sha1, "echo ok");
    assert_ne!(
        o.status.code(),
        Some(0),
        "ssh-rsa must be refused by default"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compression_fingerprints_and_log_level() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let negotiated = |srv: &Server| {
        let o = ssh(
            srv,
            &srv.client_key,
            &["-C", "-v", "-o", "LogLevel=DEBUG1"],
            "true",
        );
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        err.lines()
            .find(|l| l.contains("kex: server->client cipher:"))
            .unwrap_or_else(|| panic!("no kex line in {err}"))
            .to_string()
    };
    let srv = Server::start("FingerprintHash md5");
    assert!(negotiated(&srv).ends_with("compression: zlib@openssh.com"));
    // The Accepted line carries the MD5 fingerprint ssh-keygen prints.
    let o = Command::new("ssh-keygen")
        .args(["-l", "-E", "md5", "-f"])
        .arg(srv.client_key.with_extension("pub"))
        .output()
        .unwrap();
    let fp = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string();
    assert!(fp.starts_with("MD5:"), "{fp}");
    let line = format!(
        "Accepted publickey for {} from 127.0.0.1 port ",
        current_user()
    );
    assert!(
        srv.wait_log(&line, std::time::Duration::from_secs(5)),
        "{}",
        srv.log()
    );
    assert!(
        srv.log()
            .lines()
            .any(|l| l.contains(&line) && l.ends_with(&format!("ssh2: ED25519 {fp}"))),
        "{}",
        srv.log()
    );
    drop(srv);
    // Compression no: the client's -C gets none.
    let srv = Server::start("Compression no");
    assert!(negotiated(&srv).ends_with("compression: none"));
    drop(srv);
    // LogLevel: sshd's VERBOSE-and-below lines appear at DEBUG1, not at INFO.
    let refused = |srv: &Server| {
        let other = keygen(&srv.dir, "other_key");
        let o = ssh(srv, &other, &[], "true");
        assert_ne!(o.status.code(), Some(0));
        let line = format!("Failed publickey for {} from 127.0.0.1", current_user());
        srv.wait_log(&line, std::time::Duration::from_secs(2))
    };
    assert!(refused(&Server::start("LogLevel DEBUG1")));
    assert!(!refused(&Server::start("LogLevel INFO")));
}

#[test]
fn rekey_limit_makes_the_server_rekey() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    // 5 MiB down with a 1 MiB limit: the server starts at least three new key
    // exchanges (russh checks the limit between packets, so the exchange due at
    // the last whole MiB may come after the data ends: 5 MiB, not 4); the default
    // (1 GiB) none.
    let kexinits = |srv: &Server| {
        let o = ssh(
            srv,
            &srv.client_key,
            &["-vv", "-o", "LogLevel=DEBUG2"],
            "head -c 5242880 /dev/zero",
        );
        assert_eq!(
            o.stdout.len(),
            5 << 20,
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stderr)
            .matches("SSH2_MSG_KEXINIT received")
            .count()
    };
    let srv = Server::start("RekeyLimit 1M");
    let n = kexinits(&srv);
    assert!(n >= 4, "{n} key exchanges");
    drop(srv);
    let srv = Server::start("");
    assert_eq!(kexinits(&srv), 1);
}

/// Every name `ssh -Q` lists is either one rsshd takes or one it says it lacks
/// (and leaves out, with a warning): never an unknown name.
#[test]
fn names_are_ssh_q_names() {
    if skip_without(&["ssh"]) {
        return;
    }
    let dir = temp_dir("qnames");
    let hk = keygen(&dir, "hk");
    let mut taken = 0;
    for (query, keyword) in [
        ("cipher", "Ciphers"),
        ("mac", "MACs"),
        ("kex", "KexAlgorithms"),
        ("key-sig", "PubkeyAcceptedAlgorithms"),
        ("key-sig", "HostKeyAlgorithms"),
    ] {
        let q = Command::new("ssh").args(["-Q", query]).output().unwrap();
        for name in String::from_utf8_lossy(&q.stdout).lines() {
            let cfg = dir.join("q.conf");
            std::fs::write(
                &cfg,
                format!(
                    "HostKey {}\nPidFile none\nControlSocket {}/c.sock\n{keyword} +{name}\n",
                    hk.display(),
                    dir.display()
                ),
            )
            .unwrap();
            let o = Command::new(env!("CARGO_BIN_EXE_rsshd"))
                .args(["-t", "-f"])
                .arg(&cfg)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{keyword} +{name}: {err}");
            if err.contains(&format!("{name} is not implemented by rsshd")) {
                assert!(err.contains("left out of the list"), "{err}");
            } else {
                assert!(err.is_empty(), "{keyword} +{name}: {err}");
                taken += 1;
            }
        }
    }
    // OpenSSH 9.2 lists 9 ciphers, 16 MACs, 16 key exchanges, 28 key types;
    // russh has most of them.
    assert!(taken >= 60, "only {taken} names taken");
    let _ = std::fs::remove_dir_all(&dir);
}
