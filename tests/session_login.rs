//! Login messages and the PAM session, side by side with OpenSSH's sshd: a
//! command prints only its output (with or without a terminal), an interactive
//! login shows PAM's messages, the last login and the motd in sshd's order, and
//! a connection has one PAM session however many sessions it runs.

mod session_common;
mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use session_common::*;
use support::*;

const PYTHON: &str = "/usr/bin/python3";

/// paramiko's `exec_command(get_pty=True)`: what the command wrote, as Python's
/// repr of the bytes.
const PARAMIKO_PTY_EXEC: &str = r#"
import sys, paramiko
port, key, user, command = sys.argv[1:5]
c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
c.connect("127.0.0.1", port=int(port), username=user, key_filename=key,
          allow_agent=False, look_for_keys=False, timeout=20)
_, out, _ = c.exec_command(command, get_pty=True)
print(repr(out.read()))
c.close()
"#;

fn pam_ready() -> bool {
    if skip_without(&["ssh", SSHD, PYTHON]) || skip_unless_root_with(TEST_USER) {
        return false;
    }
    if let Err(e) = rsshd::host::pam::available() {
        skip(&e);
        return false;
    }
    true
}

#[test]
fn a_command_with_a_terminal_prints_only_its_output_like_sshd() {
    if !pam_ready() {
        return;
    }
    // Debian's `sshd` PAM service, whose pam_motd shows the motd.
    let srv = Server::start("UsePAM yes");
    let reference = RefSshd::start(&srv.dir, &srv.dir.join("authorized_keys"), "UsePAM yes");
    let mut shells = Vec::new();
    for (name, port) in [("rsshd", srv.port), ("sshd", reference.port)] {
        let o = run_with_input(
            Command::new("ssh")
                .args(ssh_base_args(port, &srv.client_key))
                .arg("-tt")
                .arg(format!("{TEST_USER}@127.0.0.1"))
                .arg("echo X"),
            b"",
        );
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "X\r\n",
            "{name}: ssh -tt\n{}",
            srv.log()
        );
        // A shell without a terminal: PAM's messages, but neither the last
        // login nor the motd (sshd's `do_login` is for terminals).
        let o = run_with_input(
            Command::new("ssh")
                .args(ssh_base_args(port, &srv.client_key))
                .arg("-T")
                .arg(format!("{TEST_USER}@127.0.0.1")),
            b"echo X\n",
        );
        shells.push(String::from_utf8_lossy(&o.stdout).to_string());
        let o = Command::new(PYTHON)
            .args(["-c", PARAMIKO_PTY_EXEC, &port.to_string()])
            .arg(&srv.client_key)
            .args([TEST_USER, "echo X"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim_end(),
            r"b'X\r\n'",
            "{name}: paramiko get_pty\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(
        shells[0], shells[1],
        "ssh -T: rsshd (left) and sshd (right)"
    );
    assert!(shells[0].ends_with("X\n") && !shells[0].contains("Last login"));
}

/// What `ssh -tt` to `port` shows before the login shell's first prompt, with
/// the date of the `Last login` line taken out.
fn login_preamble(port: u16, key: &std::path::Path, extra: &[String]) -> String {
    let mut child = Command::new("ssh")
        .args(ssh_base_args(port, key))
        .args(extra)
        .arg("-tt")
        .arg(format!("{TEST_USER}@127.0.0.1"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Typed only once the messages are out, so that its echo cannot mix in.
    let typist = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        let _ = stdin.write_all(b"exit\n");
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let _ = child.wait();
    let _ = typist.join();
    let text = String::from_utf8_lossy(&out).to_string();
    let prompt = format!("{TEST_USER}@");
    let before = text.split(&prompt).next().unwrap_or_default();
    before
        .split("\r\n")
        .map(|l| {
            if l.starts_with("Last login: ") {
                "Last login: DATE"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn an_interactive_login_shows_pam_messages_last_login_and_motd_as_sshd() {
    if !pam_ready() {
        return;
    }
    let motd = std::fs::read_to_string("/etc/motd").unwrap_or_default();
    let motd_line = motd.lines().find(|l| !l.trim().is_empty());
    let srv = Server::start("UsePAM yes\nPrintMotd yes\nPrintLastLog yes");
    let reference = RefSshd::start(
        &srv.dir,
        &srv.dir.join("authorized_keys"),
        "UsePAM yes\nPrintMotd yes\nPrintLastLog yes",
    );
    // A first login, so that both have a last one to show.
    let _ = login_preamble(reference.port, &srv.client_key, &[]);
    let ours = login_preamble(srv.port, &srv.client_key, &[]);
    let theirs = login_preamble(reference.port, &srv.client_key, &[]);
    eprintln!("login preamble:\n{ours}");
    assert_eq!(ours, theirs, "rsshd (left) and sshd (right) differ");
    // And the order, said plainly: PAM's motd, the last login, then PrintMotd's.
    let last = ours.find("Last login: DATE").expect("no last login");
    if let Some(line) = motd_line {
        let first = ours.find(line).expect("no PAM motd");
        let again = ours.rfind(line).unwrap();
        assert!(first < last && last < again, "order: {ours}");
    }
}

#[test]
fn a_connection_has_one_pam_session_however_many_sessions() {
    if !pam_ready() {
        return;
    }
    let dir = temp_dir("pamconn");
    let pam = PamService::new(&dir, "pamconn");
    let srv = Server::start(&format!("UsePAM yes\nPAMServiceName {}", pam.name));
    let socket = dir.join("ctl");
    let ctl = |extra: &[&str]| {
        let mut c = Command::new("ssh");
        c.args(ssh_base_args(srv.port, &srv.client_key))
            .arg("-o")
            .arg(format!("ControlPath={}", socket.display()))
            .args(extra)
            .arg(format!("{TEST_USER}@127.0.0.1"));
        c
    };
    let st = ctl(&["-o", "ControlMaster=yes", "-fN"])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    for n in 0..5 {
        let o = run_with_input(ctl(&[]).arg(format!("echo run {n}")), b"");
        assert_eq!(String::from_utf8_lossy(&o.stdout), format!("run {n}\n"));
    }
    let o = run_with_input(ctl(&["-tt"]).arg("echo tty"), b"");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).replace('\r', ""),
        "tty\n"
    );
    let open = format!("open_session {TEST_USER}");
    let close = format!("close_session {TEST_USER}");
    assert_eq!(pam.count(&open), 1, "PAM sessions opened\n{}", srv.log());
    assert_eq!(pam.count(&close), 0, "closed before the connection ended");
    let _ = ctl(&["-O", "exit"]).stderr(Stdio::null()).status();
    assert!(
        wait_until(Duration::from_secs(10), || pam.count(&close) == 1),
        "the PAM session did not close with the connection\n{}",
        srv.log()
    );
    assert_eq!(pam.count(&open), 1);
}

#[test]
fn logins_over_a_master_connection_show_what_sshd_shows() {
    if !pam_ready() {
        return;
    }
    let srv = Server::start("UsePAM yes");
    let reference = RefSshd::start(&srv.dir, &srv.dir.join("authorized_keys"), "UsePAM yes");
    let mut seen = Vec::new();
    for (name, port) in [("rsshd", srv.port), ("sshd", reference.port)] {
        let socket = srv.dir.join(format!("ctl-{name}"));
        let ctl = vec![
            "-o".to_string(),
            format!("ControlPath={}", socket.display()),
        ];
        let st = Command::new("ssh")
            .args(ssh_base_args(port, &srv.client_key))
            .args(&ctl)
            .args(["-o", "ControlMaster=yes", "-fN"])
            .arg(format!("{TEST_USER}@127.0.0.1"))
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{name}: master");
        // A command first: the PAM session opens for it.
        let o = run_with_input(
            Command::new("ssh")
                .args(ssh_base_args(port, &srv.client_key))
                .args(&ctl)
                .arg(format!("{TEST_USER}@127.0.0.1"))
                .arg("echo first"),
            b"",
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout), "first\n", "{name}");
        let logins = [
            login_preamble(port, &srv.client_key, &ctl),
            login_preamble(port, &srv.client_key, &ctl),
        ];
        let _ = Command::new("ssh")
            .args(ssh_base_args(port, &srv.client_key))
            .args(&ctl)
            .args(["-O", "exit"])
            .arg(format!("{TEST_USER}@127.0.0.1"))
            .stderr(Stdio::null())
            .status();
        seen.push(logins);
    }
    assert_eq!(seen[0], seen[1], "rsshd (left) and sshd (right) differ");
    assert!(seen[0][1].contains("Last login: DATE"), "{:?}", seen[0]);
}
