//! The command line as an admin uses it: `-t`, `-T -C`, config errors, and the
//! quick start on built-in defaults.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

fn rsshd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rsshd"))
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn test_mode_accepts_a_good_config_and_names_errors() {
    if !have("ssh-keygen") {
        skip("ssh-keygen missing");
        return;
    }
    let dir = temp_dir("cli");
    let hk = keygen(&dir, "hk");
    let good = write(
        &dir,
        "good.conf",
        &format!("HostKey {}\nClientAliveInterval 5m\n", hk.display()),
    );
    let o = rsshd().arg("-t").arg("-f").arg(&good).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let bad = write(
        &dir,
        "bad.conf",
        &format!(
            "HostKey {}\n# comment\nClientAliveInterval banana\n",
            hk.display()
        ),
    );
    let o = rsshd().arg("-t").arg("-f").arg(&bad).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}:3: ClientAliveInterval: invalid time value \"banana\"",
            bad.display()
        )),
        "{err}"
    );

    let unknown = write(&dir, "unknown.conf", "NoSuchKeyword yes\n");
    let o = rsshd().arg("-t").arg("-f").arg(&unknown).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(":1: NoSuchKeyword"));

    let warn = write(
        &dir,
        "warn.conf",
        &format!("HostKey {}\nX11Forwarding yes\nUseLogin no\n", hk.display()),
    );
    let o = rsshd().arg("-t").arg("-f").arg(&warn).output().unwrap();
    assert!(o.status.success(), "unsupported keywords only warn");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(":2: X11Forwarding"), "{err}");
    assert!(
        err.contains(":3: UseLogin") && err.contains("deprecated"),
        "{err}"
    );

    let missing = write(
        &dir,
        "nokey.conf",
        &format!("HostKey {}/absent\n", dir.display()),
    );
    let o = rsshd().arg("-t").arg("-f").arg(&missing).output().unwrap();
    assert!(!o.status.success(), "a missing host key fails -t");
    assert!(String::from_utf8_lossy(&o.stderr).contains("absent"));
}

#[test]
fn dump_applies_match_for_the_connection_spec() {
    let dir = temp_dir("cli");
    let conf = write(
        &dir,
        "match.conf",
        "IdleTimeout 1h\nClientAliveInterval 300\nClientAliveCountMax 0\n\
         Match User alice Address 10.0.0.0/8\n  IdleTimeout 5m\n  PermitTTY no\n",
    );
    let o = rsshd()
        .args(["-T", "-f"])
        .arg(&conf)
        .args([
            "-C",
            "user=alice,addr=10.0.0.5,host=h,laddr=127.0.0.1,lport=22",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.lines().any(|l| l == "idletimeout 300"), "{out}");
    assert!(out.lines().any(|l| l == "permittty no"), "{out}");
    assert!(out.lines().any(|l| l == "clientalivecountmax 0"), "{out}");
    let o = rsshd()
        .args(["-T", "-f"])
        .arg(&conf)
        .args(["-C", "user=bob,addr=10.0.0.5"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.lines().any(|l| l == "idletimeout 3600"), "{out}");
    assert!(out.lines().any(|l| l == "permittty yes"), "{out}");
}

#[test]
fn quick_start_on_built_in_defaults() {
    if std::path::Path::new("/etc/rsshd/sshd_config").exists() {
        skip("/etc/rsshd/sshd_config exists, so defaults are not used");
        return;
    }
    let state = temp_dir("state");
    let mut cmd = rsshd();
    // Port 0 instead of 2222, and a control socket of its own instead of
    // /run/rsshd.sock (root's default), so the test never collides with a
    // running server.
    let control = format!("ControlSocket {}/rsshd.sock", state.display());
    cmd.args(["-o", "Port 0", "-o", &control])
        .env("XDG_STATE_HOME", &state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < end {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
            if lines.iter().any(|l| l.contains("connect with")) {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(
        text.contains("Server listening on 127.0.0.1 port "),
        "{text}"
    );
    assert!(
        !text.contains("0.0.0.0"),
        "defaults must listen on loopback only: {text}"
    );
    assert!(text.contains("connect with: ssh -p "), "{text}");
    if !is_root() {
        assert!(
            state.join("rsshd/ssh_host_ed25519_key").exists(),
            "host key generated in the state dir"
        );
    }
}

#[test]
fn ipv6_and_ipv4_listeners() {
    if !have("ssh") {
        skip("ssh missing");
        return;
    }
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        skip("no IPv6 loopback here");
        return;
    }
    let srv = Server::start("ListenAddress ::1");
    assert!(
        srv.wait_log("Server listening on ::1 port ", Duration::from_secs(5)),
        "{}",
        srv.log()
    );
    let log = srv.log();
    let port: u16 = log
        .split("Server listening on ::1 port ")
        .nth(1)
        .and_then(|r| r.split('.').next())
        .and_then(|p| p.parse().ok())
        .expect("v6 port");
    let o = Command::new("ssh")
        .args(ssh_base_args(port, &srv.client_key))
        .arg(format!("{}@::1", current_user()))
        .arg("echo $SSH_CONNECTION")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("::1 "),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
}
