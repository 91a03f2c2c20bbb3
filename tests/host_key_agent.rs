//! `HostKeyAgent` (issue 16, item 4): host keys whose private halves only a real
//! `ssh-agent` holds. The daemon gets the public key files and nothing else; the
//! real OpenSSH `ssh` connects with `StrictHostKeyChecking yes`, for each key
//! type and both RSA hashes, with a host certificate, in one process and split
//! (where the root monitor signs: the network process is chrooted and could not
//! reach the agent). Failures (the agent lacks the key, the agent died) fail
//! that key exchange only, with the lines OpenSSH's sshd logs in the same
//! situation (checked against `/usr/sbin/sshd` started on the same lines), and
//! `-t` / `-T` answer as sshd's do.

mod host_key_agent_common;
mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use host_key_agent_common::*;
use support::{keygen, temp_dir};

/// Every key type through the agent, both RSA hashes, with only the public
/// key files on disk for the daemon.
fn every_key_type(split: bool) {
    let dir = temp_dir(if split {
        "hka-types-split"
    } else {
        "hka-types"
    });
    let sock = dir.join("agent.sock");
    let agent = Agent::start(&sock);
    let (ed, ed_pub) = host_key(&dir, "hk_ed25519", "ed25519");
    let (ec, ec_pub) = host_key(&dir, "hk_ecdsa", "ecdsa");
    let (rsa, rsa_pub) = host_key(&dir, "hk_rsa", "rsa");
    for k in [&ed, &ec, &rsa] {
        agent.add(k);
    }
    let key = client_key(&dir);
    let publics = [ed_pub.as_path(), ec_pub.as_path(), rsa_pub.as_path()];
    // One process names the socket; split reads it from SSH_AUTH_SOCK, in the
    // monitor's environment.
    let (value, env) = if split {
        (
            "SSH_AUTH_SOCK".to_string(),
            vec![("SSH_AUTH_SOCK", sock.as_path())],
        )
    } else {
        (sock.display().to_string(), Vec::new())
    };
    let srv = rsshd(&dir, &common_lines(&dir, &publics, &value), split, &env);
    if split {
        assert!(has_network_process(srv.pid()), "not split: {}", srv.log());
    }
    let known = known_hosts(&dir, srv.port, &publics);
    for algorithm in [
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "rsa-sha2-512",
        "rsa-sha2-256",
    ] {
        let o = run(srv.port, &key, &known, Some(algorithm));
        assert_ok(&o, algorithm, &srv.log());
    }
    assert!(
        !srv.log().contains("agent sign"),
        "no signature failed: {}",
        srv.log()
    );
}

#[test]
fn every_key_type_signs_through_the_agent() {
    if unusable() {
        return;
    }
    every_key_type(false);
}

/// The same with the split on: the root monitor asks the agent.
#[test]
fn every_key_type_signs_through_the_agent_split() {
    if unusable() || support::skip_unless_root_with("rsshd") {
        return;
    }
    every_key_type(true);
}

/// `HostCertificate` for a key only the agent holds: a client that knows only
/// the host CA (`@cert-authority`) connects with `StrictHostKeyChecking yes`.
fn certificate(split: bool) {
    let dir = temp_dir(if split { "hka-cert-split" } else { "hka-cert" });
    let sock = dir.join("agent.sock");
    let agent = Agent::start(&sock);
    let (ed, ed_pub) = host_key(&dir, "hk_ed25519", "ed25519");
    agent.add(&ed);
    let ca = keygen(&dir, "host_ca");
    let o = Command::new("ssh-keygen")
        .args(["-q", "-h", "-s"])
        .arg(&ca)
        .args(["-I", "agent-host", "-n", "127.0.0.1"])
        .arg(&ed_pub)
        .output()
        .expect("ssh-keygen -s");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cert = dir.join("hk_ed25519-cert.pub");
    let key = client_key(&dir);
    let known = dir.join("known_hosts-ca");
    let ca_pub = std::fs::read_to_string(ca.with_extension("pub")).expect("ca pub");
    std::fs::write(&known, format!("@cert-authority * {ca_pub}")).expect("known");
    let lines = format!(
        "{}HostCertificate {}\n",
        common_lines(&dir, &[&ed_pub], &sock.display().to_string()),
        cert.display()
    );
    let srv = rsshd(&dir, &lines, split, &[]);
    let algorithm = "ssh-ed25519-cert-v01@openssh.com";
    let o = run(srv.port, &key, &known, Some(algorithm));
    assert_ok(&o, algorithm, &srv.log());
    // The plain key is not in known_hosts: without the certificate, refused.
    let o = run(srv.port, &key, &known, Some("ssh-ed25519"));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Host key verification failed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn host_certificate_for_an_agent_key() {
    if unusable() {
        return;
    }
    certificate(false);
}

#[test]
fn host_certificate_for_an_agent_key_split() {
    if unusable() || support::skip_unless_root_with("rsshd") {
        return;
    }
    certificate(true);
}

/// The agent lacks one key, then dies, then comes back: each failure fails
/// only the key exchange that needed it, with sshd's line (sshd started on the
/// same lines logs the same), an open session goes on, the daemon keeps
/// serving, and the next exchange after the agent is back signs again (a
/// connection per signature).
#[test]
fn agent_failures_fail_one_exchange_with_sshds_lines() {
    if unusable() || support::skip_without(&[SSHD]) {
        return;
    }
    let dir = temp_dir("hka-fail");
    let sock = dir.join("agent.sock");
    let agent = Agent::start(&sock);
    let (ed, ed_pub) = host_key(&dir, "hk_ed25519", "ed25519");
    let (_ec, ec_pub) = host_key(&dir, "hk_ecdsa", "ecdsa");
    agent.add(&ed); // and not the ECDSA key
    let key = client_key(&dir);
    let publics = [ed_pub.as_path(), ec_pub.as_path()];
    let lines = common_lines(&dir, &publics, &sock.display().to_string());
    let srv = rsshd(&dir, &lines, false, &[]);
    let reference = RefSshd::start(&dir, &lines);
    let known = known_hosts(&dir, srv.port, &publics);
    let known_ref = known_hosts(&dir, reference.port, &publics);

    // The agent does not hold the ECDSA key.
    let refused = "mm_answer_sign: agent sign: agent refused operation";
    for (port, known) in [(srv.port, &known), (reference.port, &known_ref)] {
        let o = run(port, &key, known, Some("ecdsa-sha2-nistp256"));
        assert!(
            !o.status.success(),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    assert!(
        wait_for(|| reference.log(), refused),
        "sshd: {}",
        reference.log()
    );
    assert!(wait_for(|| srv.log(), refused), "rsshd: {}", srv.log());
    // The other key still serves.
    let o = run(srv.port, &key, &known, Some("ssh-ed25519"));
    assert_ok(&o, "ssh-ed25519", &srv.log());

    // A session opened now outlives the agent.
    let mut held = Held::open(strict_ssh(srv.port, &key, &known, Some("ssh-ed25519")));
    agent.kill();
    let gone = format!(
        "Could not connect to agent \"{}\": Connection refused",
        sock.display()
    );
    for (port, known) in [(srv.port, &known), (reference.port, &known_ref)] {
        let o = run(port, &key, known, Some("ssh-ed25519"));
        assert!(
            !o.status.success(),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    assert!(
        wait_for(|| reference.log(), &gone),
        "sshd: {}",
        reference.log()
    );
    assert!(wait_for(|| srv.log(), &gone), "rsshd: {}", srv.log());
    writeln!(held.stdin, "y").expect("write");
    assert_eq!(held.next(), "got-y", "{}", srv.log());

    // The agent is back on the same socket: the next exchange signs.
    let agent = Agent::start(&sock);
    agent.add(&ed);
    let o = run(srv.port, &key, &known, Some("ssh-ed25519"));
    assert_ok(&o, "ssh-ed25519", &srv.log());
}

/// `-t` and `-T`, next to sshd's: a public-only HostKey needs an agent; the
/// agent must accept a connection (whether it holds the keys is not asked,
/// as sshd does not ask); `SSH_AUTH_SOCK` unset is "agent not present"; `-T`
/// prints the socket as sshd does.
#[test]
fn test_mode_checks_what_sshd_checks() {
    if unusable() || support::skip_without(&[SSHD]) {
        return;
    }
    let dir = temp_dir("hka-check");
    let sock = dir.join("agent.sock");
    let (_ed, ed_pub) = host_key(&dir, "hk_ed25519", "ed25519");
    let write = |name: &str, agent: Option<&str>| {
        let p = dir.join(name);
        let mut text = format!("HostKey {}\nPidFile none\n", ed_pub.display());
        if let Some(a) = agent {
            text.push_str(&format!("HostKeyAgent {a}\n"));
        }
        std::fs::write(&p, text).expect("config");
        p
    };
    let rsshd = env!("CARGO_BIN_EXE_rsshd");
    let both = |config: &Path, flag: &str, env: &[(&str, &Path)]| {
        (
            check(rsshd, config, flag, env, &dir),
            check(SSHD, config, flag, env, &dir),
        )
    };
    let text = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // No agent configured: a public key is no host key.
    let plain = write("plain.conf", None);
    let (ours, theirs) = both(&plain, "-t", &[]);
    assert!(!ours.status.success() && !theirs.status.success());
    // (rsshd refuses the file before reading it: a world-readable "private" key.)
    assert!(
        text(&ours).contains(&ed_pub.display().to_string()),
        "{}",
        text(&ours)
    );

    // An agent named but not there (no socket).
    let named = write("named.conf", Some(&sock.display().to_string()));
    let (ours, theirs) = both(&named, "-t", &[]);
    assert!(!ours.status.success() && !theirs.status.success());
    for line in [
        format!(
            "Could not connect to agent \"{}\": No such file or directory",
            sock.display()
        ),
        format!("Unable to load host key: {}", ed_pub.display()),
    ] {
        assert!(text(&theirs).contains(&line), "sshd: {}", text(&theirs));
        assert!(text(&ours).contains(&line), "rsshd: {}", text(&ours));
    }

    // SSH_AUTH_SOCK named, the variable unset.
    let env_conf = write("env.conf", Some("SSH_AUTH_SOCK"));
    let (ours, theirs) = both(&env_conf, "-t", &[]);
    assert!(!ours.status.success() && !theirs.status.success());
    let line = "Could not connect to agent \"SSH_AUTH_SOCK\": agent not present";
    assert!(text(&theirs).contains(line), "sshd: {}", text(&theirs));
    assert!(text(&ours).contains(line), "rsshd: {}", text(&ours));

    // A running agent without the key: both accept the configuration.
    let _agent = Agent::start(&sock);
    let relative = write("relative.conf", Some("agent.sock"));
    for (config, env) in [
        (&named, vec![]),
        (&env_conf, vec![("SSH_AUTH_SOCK", sock.as_path())]),
        (&relative, vec![]),
    ] {
        let (ours, theirs) = both(config, "-t", &env);
        assert!(theirs.status.success(), "sshd: {}", text(&theirs));
        assert!(ours.status.success(), "rsshd: {}", text(&ours));
        // -T prints the same hostkeyagent line (a relative path made absolute).
        let (ours, theirs) = both(config, "-T", &env);
        let line = |o: &Output| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.starts_with("hostkeyagent "))
                .map(str::to_string)
        };
        assert!(line(&theirs).is_some(), "sshd: {}", text(&theirs));
        assert_eq!(line(&ours), line(&theirs), "{}", config.display());
    }
    let (ours, _) = both(&relative, "-T", &[]);
    assert!(
        String::from_utf8_lossy(&ours.stdout)
            .contains(&format!("hostkeyagent {}\n", sock.display())),
        "{}",
        text(&ours)
    );
}

/// Split: the monitor's refusal line, and the network process neither dies
/// nor is replaced; the key the agent holds still serves.
#[test]
fn agent_refusal_in_the_monitor_leaves_the_network_process_serving() {
    if unusable() || support::skip_unless_root_with("rsshd") {
        return;
    }
    let dir = temp_dir("hka-fail-split");
    let sock = dir.join("agent.sock");
    let agent = Agent::start(&sock);
    let (ed, ed_pub) = host_key(&dir, "hk_ed25519", "ed25519");
    let (_ec, ec_pub) = host_key(&dir, "hk_ecdsa", "ecdsa");
    agent.add(&ed);
    let key = client_key(&dir);
    let publics = [ed_pub.as_path(), ec_pub.as_path()];
    let lines = common_lines(&dir, &publics, &sock.display().to_string());
    let srv = rsshd(&dir, &lines, true, &[]);
    let net = network_process(srv.pid()).expect("not split");
    let known = known_hosts(&dir, srv.port, &publics);
    let o = run(srv.port, &key, &known, Some("ecdsa-sha2-nistp256"));
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let refused = "mm_answer_sign: agent sign: agent refused operation";
    assert!(wait_for(|| srv.log(), refused), "{}", srv.log());
    let o = run(srv.port, &key, &known, Some("ssh-ed25519"));
    assert_ok(&o, "ssh-ed25519", &srv.log());
    assert_eq!(
        network_process(srv.pid()),
        Some(net),
        "the network process was replaced: {}",
        srv.log()
    );
}

/// `HostKey` naming a private key the daemon cannot decrypt (a passphrase):
/// as sshd, its public half is taken from the file and the agent signs, with
/// sshd's line about the key (checked next to `sshd -t`).
#[test]
fn encrypted_private_key_is_signed_for_by_the_agent() {
    if unusable() || support::skip_without(&[SSHD]) {
        return;
    }
    let dir = temp_dir("hka-encrypted");
    let sock = dir.join("agent.sock");
    let agent = Agent::start(&sock);
    let (ed, ed_pub) = host_key(&dir, "hk_ed25519", "ed25519");
    agent.add(&ed);
    // The daemon's copy of the private key, encrypted, with no .pub beside it.
    let encrypted = dir.join("hk_encrypted");
    std::fs::copy(&ed, &encrypted).expect("copy");
    let o = Command::new("ssh-keygen")
        .args(["-q", "-p", "-P", "", "-N", "not-for-the-daemon", "-f"])
        .arg(&encrypted)
        .output()
        .expect("ssh-keygen -p");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let key = client_key(&dir);
    let lines = common_lines(&dir, &[&encrypted], &sock.display().to_string());
    let line = format!(
        "Unable to load host key \"{}\": incorrect passphrase supplied to decrypt private key",
        encrypted.display()
    );
    let config = dir.join("sshd_t.conf");
    std::fs::write(&config, &lines).expect("config");
    let theirs = check(SSHD, &config, "-t", &[], &dir);
    let theirs_text = String::from_utf8_lossy(&theirs.stderr);
    assert!(theirs.status.success(), "sshd: {theirs_text}");
    assert!(theirs_text.contains(&line), "sshd: {theirs_text}");
    let srv = rsshd(&dir, &lines, false, &[]);
    assert!(srv.wait_log(&line, Duration::from_secs(5)), "{}", srv.log());
    let known = known_hosts(&dir, srv.port, &[&ed_pub]);
    let o = run(srv.port, &key, &known, Some("ssh-ed25519"));
    assert_ok(&o, "ssh-ed25519", &srv.log());
}
