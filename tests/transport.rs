//! Transport: modern algorithms only, every host key type sshd uses, strict KEX,
//! and flat memory under bulk transfer.

mod support;

use std::process::Command;

use support::*;

fn keygen_type(dir: &std::path::Path, name: &str, t: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", t, "-N", "", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    path
}

fn ssh_with(srv: &Server, opts: &[&str]) -> std::process::Output {
    let mut c = Command::new("ssh");
    c.args(ssh_base_args(srv.port, &srv.client_key));
    for o in opts {
        c.args(["-o", o]);
    }
    c.arg(format!("{}@127.0.0.1", current_user()))
        .arg("echo ok");
    c.output().unwrap()
}

#[test]
fn host_key_types_and_modern_algorithms_only() {
    if !have("ssh") {
        skip("ssh missing");
        return;
    }
    let dir = temp_dir("keys");
    let rsa = keygen_type(&dir, "rsa_host", "rsa");
    let ecdsa = keygen_type(&dir, "ecdsa_host", "ecdsa");
    let srv = Server::start(&format!(
        "HostKey {}\nHostKey {}",
        rsa.display(),
        ecdsa.display()
    ));
    for alg in [
        "ssh-ed25519",
        "rsa-sha2-512",
        "rsa-sha2-256",
        "ecdsa-sha2-nistp256",
    ] {
        let o = ssh_with(&srv, &[&format!("HostKeyAlgorithms={alg}")]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "ok\n",
            "{alg}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    for cipher in [
        "chacha20-poly1305@openssh.com",
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-ctr",
    ] {
        let o = ssh_with(&srv, &[&format!("Ciphers={cipher}")]);
        assert_eq!(String::from_utf8_lossy(&o.stdout), "ok\n", "{cipher}");
    }
    // SHA-1 signatures, CBC and SHA-1 key exchange are refused.
    for refused in [
        "HostKeyAlgorithms=ssh-rsa",
        "Ciphers=aes128-cbc",
        "KexAlgorithms=diffie-hellman-group14-sha1",
    ] {
        let o = ssh_with(&srv, &[refused]);
        assert_ne!(o.status.code(), Some(0), "{refused} must be refused");
    }
    // A SHA-1 MAC only matters with a non-AEAD cipher.
    {
        let o = ssh_with(&srv, &["Ciphers=aes128-ctr", "MACs=hmac-sha1"]);
        let refused = "hmac-sha1";
        assert_ne!(o.status.code(), Some(0), "{refused} must be refused");
    }
}

#[test]
fn strict_kex_is_offered() {
    if !have("ssh") {
        skip("ssh missing");
        return;
    }
    let srv = Server::start("");
    let o = srv
        .ssh_talkative(&current_user(), &["-vv", "-o", "BatchMode=yes"])
        .arg("true")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("kex-strict-s-v00@openssh.com"),
        "server KEXINIT lacks strict kex"
    );
}

#[test]
fn rsa_user_key_with_sha2_signatures() {
    if !have("ssh") {
        skip("ssh missing");
        return;
    }
    let dir = temp_dir("rsa-user");
    let key = keygen_type(&dir, "id_rsa", "rsa");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let srv = Server::start("");
    std::fs::write(srv.dir.join("authorized_keys"), public).unwrap();
    let o = Command::new("ssh")
        .args(ssh_base_args(srv.port, &key))
        .arg(format!("{}@127.0.0.1", current_user()))
        .arg("echo ok")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "ok\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The same key with a SHA-1 signature is refused.
    let o = Command::new("ssh")
        .args(ssh_base_args(srv.port, &key))
        .args(["-o", "PubkeyAcceptedAlgorithms=ssh-rsa"])
        .arg(format!("{}@127.0.0.1", current_user()))
        .arg("echo ok")
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
}

/// Peak resident memory of a process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn one_gib_each_way_keeps_memory_flat() {
    if !have("ssh") {
        skip("ssh missing");
        return;
    }
    let srv = Server::start("");
    let user = current_user();
    // Warm up so allocator pools exist before measuring.
    let o = srv.ssh_run(&user, "head -c 10000000 /dev/zero", b"");
    assert_eq!(o.stdout.len(), 10_000_000);
    let before = peak_kib(srv.pid());

    // Upload: the client pushes 1 GiB; the remote side consumes it slowly at first.
    let mut c = Command::new("sh");
    c.arg("-c").arg(format!(
        "head -c 1073741824 /dev/zero | ssh {} {user}@127.0.0.1 'sleep 1; wc -c'",
        ssh_base_args(srv.port, &srv.client_key).join(" ")
    ));
    let o = c.output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "1073741824",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Download: the server produces 1 GiB; the client reads it.
    let mut c = Command::new("sh");
    c.arg("-c").arg(format!(
        "ssh {} {user}@127.0.0.1 'head -c 1073741824 /dev/zero' | wc -c",
        ssh_base_args(srv.port, &srv.client_key).join(" ")
    ));
    let o = c.output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1073741824");

    // Echo: both directions at once through one channel.
    let mut c = Command::new("sh");
    c.arg("-c").arg(format!(
        "head -c 268435456 /dev/zero | ssh {} {user}@127.0.0.1 cat | wc -c",
        ssh_base_args(srv.port, &srv.client_key).join(" ")
    ));
    let o = c.output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "268435456");

    let after = peak_kib(srv.pid());
    eprintln!("rsshd peak RSS: {before} KiB before, {after} KiB after 2 GiB");
    assert!(
        after < before + 48 * 1024,
        "memory grew from {before} KiB to {after} KiB"
    );
}
