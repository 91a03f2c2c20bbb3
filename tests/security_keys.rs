//! FIDO security keys (`sk-ssh-ed25519@openssh.com`,
//! `sk-ecdsa-sha2-nistp256@openssh.com`) and their certificates, enrolled by the
//! real `ssh-keygen` and used by the real `ssh` through a software authenticator
//! (tests/sk-provider, OpenSSH's SecurityKeyProvider interface, as OpenSSH's own
//! regress suite does with sk-dummy), whose flags byte the test chooses. Each
//! verdict is compared with OpenSSH's sshd on the same config and keys.

mod certs_common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use certs_common::*;
use support::{current_user, temp_dir};

/// User present (a touch).
const UP: u8 = 0x01;
/// User verified (PIN).
const UV: u8 = 0x04;

/// The software authenticator, built once per test binary into target/.
fn provider() -> PathBuf {
    static BUILT: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    let slot = BUILT.get_or_init(|| Mutex::new(None));
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = slot.as_ref() {
        return p.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/sk-provider");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(root.join("tests/sk-provider/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("run cargo");
    assert!(
        o.status.success(),
        "building the test authenticator: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lib = target.join("release/librsshd_test_sk_provider.so");
    *slot = Some(lib.clone());
    lib
}

/// A security key of `kind` (`ed25519-sk`, `ecdsa-sk`) enrolled by ssh-keygen.
fn enroll(dir: &Path, kind: &str, name: &str) -> PathBuf {
    let key = dir.join(name);
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-w"])
        .arg(provider())
        .arg("-f")
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(
        o.status.success(),
        "ssh-keygen -t {kind}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    key
}

/// `ssh` with the security key `key`, the authenticator answering with `flags`.
fn login(port: u16, key: &Path, flags: u8, command: &str) -> Output {
    let mut c = Command::new("ssh");
    c.args(support::client_opts(key))
        .arg("-o")
        .arg(format!("SecurityKeyProvider={}", provider().display()))
        .args(["-p", &port.to_string()])
        .arg(format!("{}@127.0.0.1", current_user()))
        .arg(command)
        .env("RSSHD_SK_FLAGS", flags.to_string())
        .env("RSSHD_SK_COUNTER", "77");
    support::run_with_input(&mut c, b"")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// rsshd and sshd on the same `lines`.
struct Pair {
    ours: support::Server,
    theirs: RefSshd,
}

impl Pair {
    fn start(dir: &Path, lines: &str) -> Pair {
        Pair {
            ours: rsshd(dir, lines),
            theirs: RefSshd::start(dir, lines),
        }
    }

    /// Both let `key` in with `flags`, or both refuse it and both log each of
    /// `refusal`.
    fn check(&self, key: &Path, flags: u8, refusal: Option<&[String]>) {
        for (name, port, log) in [
            (
                "sshd",
                self.theirs.port,
                &(|| self.theirs.log()) as &dyn Fn() -> String,
            ),
            (
                "rsshd",
                self.ours.port,
                &(|| self.ours.log()) as &dyn Fn() -> String,
            ),
        ] {
            let o = login(port, key, flags, "echo in");
            match refusal {
                None => assert_eq!(
                    out(&o),
                    "in",
                    "{name}, flags {flags:#x}, {}: {}\n{}",
                    key.display(),
                    String::from_utf8_lossy(&o.stderr),
                    log()
                ),
                Some(lines) => {
                    assert!(!o.status.success(), "{name} let {flags:#x} in\n{}", log());
                    for line in lines {
                        assert!(
                            wait_for(log, line),
                            "{name}, flags {flags:#x}: no {line:?} in\n{}",
                            log()
                        );
                    }
                }
            }
        }
    }
}

fn key_desc(key: &Path, kind: &str) -> String {
    format!("{kind} {}", fingerprint(&key.with_extension("pub")))
}

/// sshd's refusal line, in the two parts around the client's port.
fn refusal(key: &Path, kind: &str, what: &str) -> Vec<String> {
    vec![
        format!(
            "public key {} signature for {} from 127.0.0.1 port ",
            key_desc(key, kind),
            current_user()
        ),
        format!("rejected: {what} requirement not met"),
    ]
}

/// Plain security keys of both kinds: a touch is required by default; the
/// key's `no-touch-required` waives it unless `PubkeyAuthOptions touch-required`;
/// `verify-required` (key option or PubkeyAuthOptions) wants the verified flag.
#[test]
fn security_keys_and_their_flags_as_sshd() {
    if needs_tools() || support::skip_unless_root_with(support::TEST_USER) {
        return;
    }
    let dir = temp_dir("sk-keys");
    let ed = enroll(&dir, "ed25519-sk", "ed");
    let ec = enroll(&dir, "ecdsa-sk", "ec");
    let notouch = enroll(&dir, "ed25519-sk", "notouch");
    let verify = enroll(&dir, "ecdsa-sk", "verify");
    let public = |k: &Path| std::fs::read_to_string(k.with_extension("pub")).unwrap();
    let ak = dir.join("authorized_keys");
    std::fs::write(
        &ak,
        format!(
            "{}{}no-touch-required {}verify-required {}",
            public(&ed),
            public(&ec),
            public(&notouch),
            public(&verify)
        ),
    )
    .unwrap();
    let pair = Pair::start(&dir, &format!("AuthorizedKeysFile {}", ak.display()));
    let presence = "user presence (authenticator touch)";
    pair.check(&ed, UP, None);
    assert!(
        pair.ours.log().contains(&format!(
            "Accepted publickey for {} from 127.0.0.1 port ",
            current_user()
        )) && pair
            .ours
            .log()
            .contains(&format!("ssh2: {}", key_desc(&ed, "ED25519-SK"))),
        "{}",
        pair.ours.log()
    );
    pair.check(&ed, 0, Some(&refusal(&ed, "ED25519-SK", presence)));
    pair.check(&ec, UP, None);
    pair.check(&ec, UV, Some(&refusal(&ec, "ECDSA-SK", presence)));
    pair.check(&notouch, 0, None);
    pair.check(&verify, UP | UV, None);
    pair.check(
        &verify,
        UP,
        Some(&refusal(&verify, "ECDSA-SK", "user verification")),
    );
    drop(pair);

    // The server's PubkeyAuthOptions outrank the key's waiver.
    let dir2 = temp_dir("sk-keys-strict");
    let pair = Pair::start(
        &dir2,
        &format!(
            "AuthorizedKeysFile {}\nPubkeyAuthOptions touch-required verify-required",
            ak.display()
        ),
    );
    pair.check(
        &notouch,
        UV,
        Some(&refusal(&notouch, "ED25519-SK", presence)),
    );
    pair.check(
        &ed,
        UP,
        Some(&refusal(&ed, "ED25519-SK", "user verification")),
    );
    pair.check(&ed, UP | UV, None);
}

/// A security key's certificate: accepted with sshd's line; its
/// `no-touch-required` extension waives the touch, its `verify-required`
/// critical option asks for verification. ExposeAuthInfo lists the
/// certificate as sshd does.
#[test]
fn security_key_certificates_as_sshd() {
    if needs_tools() || support::skip_unless_root_with(support::TEST_USER) {
        return;
    }
    let dir = temp_dir("sk-certs");
    let user = current_user();
    let ca_key = ca(&dir, "ca");
    let sign = |key: &Path, id: &str, extra: &[&str]| {
        let o = Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(&ca_key)
            .args(["-I", id, "-n", &user, "-z", "9"])
            .args(extra)
            .arg(key.with_extension("pub"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let touch = enroll(&dir, "ed25519-sk", "touch");
    sign(&touch, "touch@corp", &[]);
    let relaxed = enroll(&dir, "ecdsa-sk", "relaxed");
    sign(&relaxed, "relaxed@corp", &["-O", "no-touch-required"]);
    let pin = enroll(&dir, "ed25519-sk", "pin");
    sign(&pin, "pin@corp", &["-O", "verify-required"]);
    let pair = Pair::start(
        &dir,
        &format!(
            "AuthorizedKeysFile none\nTrustedUserCAKeys {}\nExposeAuthInfo yes",
            ca_key.with_extension("pub").display()
        ),
    );
    pair.check(&touch, UP, None);
    let accepted = format!(
        "ssh2: {} ID touch@corp (serial 9) CA ED25519 {}",
        key_desc(&touch, "ED25519-SK-CERT"),
        fingerprint(&ca_key.with_extension("pub"))
    );
    assert!(
        pair.ours.wait_log(&accepted, Duration::from_secs(5)),
        "{}",
        pair.ours.log()
    );
    pair.check(
        &touch,
        0,
        Some(&refusal(
            &touch,
            "ED25519-SK-CERT",
            "user presence (authenticator touch)",
        )),
    );
    pair.check(&relaxed, 0, None);
    pair.check(
        &pin,
        UP,
        Some(&refusal(&pin, "ED25519-SK-CERT", "user verification")),
    );
    pair.check(&pin, UP | UV, None);

    // SSH_USER_AUTH lists the certificate (sshd 9.2 writes no signature
    // counter there).
    let probe = r#"cat "$SSH_USER_AUTH""#;
    let ours = login(pair.ours.port, &touch, UP, probe);
    let theirs = login(pair.theirs.port, &touch, UP, probe);
    let cert = std::fs::read_to_string(dir.join("touch-cert.pub")).unwrap();
    let mut words = cert.split_whitespace();
    assert_eq!(
        out(&theirs),
        format!(
            "publickey {} {}",
            words.next().unwrap(),
            words.next().unwrap()
        ),
        "sshd"
    );
    assert_eq!(out(&ours), out(&theirs), "rsshd (left) and sshd (right)");
}
