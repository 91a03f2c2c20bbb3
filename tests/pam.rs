//! Issue 5 end to end: password and keyboard-interactive logins through PAM with
//! the real OpenSSH client (via sshpass) and PuTTY's plink.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::*;

const USER: &str = "rsshd-test";
const PASSWORD: &str = "rsshd-test-pw-1";
const LOCKED: &str = "rsshd-locked";
const LOCKED_PASSWORD: &str = "rsshd-locked-pw-1";

/// PAM tests need root (to authenticate other users and switch to them), the
/// accounts `.ci/run` creates, sshpass, and libpam.
fn ready() -> bool {
    if !is_root() {
        skip("PAM logins as another user need root");
        return false;
    }
    if nix::unistd::User::from_name(USER).ok().flatten().is_none() {
        skip(&format!("user {USER} missing (.ci/run creates it)"));
        return false;
    }
    if !have("sshpass") || !have("ssh") {
        skip("sshpass or ssh missing");
        return false;
    }
    if let Err(e) = rsshd::host::pam::available() {
        skip(&e);
        return false;
    }
    // Keep the test account's password known even outside CI.
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("echo '{USER}:{PASSWORD}' | chpasswd"))
        .status();
    true
}

const PAM_CONFIG: &str = "UsePAM yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication yes";

fn pw_ssh(srv: &Server, user: &str, password: &str, method: &str, command: &str) -> Output {
    Command::new("sshpass")
        .args(["-p", password, "ssh"])
        .args(srv_opts_info(srv))
        .args(["-o", &format!("PreferredAuthentications={method}")])
        .args(["-o", "LogLevel=ERROR"])
        .arg(format!("{user}@127.0.0.1"))
        .arg(command)
        .output()
        .unwrap()
}

/// Password-login options at the client's default log level.
fn srv_opts_info(srv: &Server) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "NumberOfPasswordPrompts=1",
        "-p",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([srv.port.to_string()])
    .collect()
}

#[test]
fn password_login_runs_as_the_user() {
    if !ready() {
        return;
    }
    let srv = Server::start(PAM_CONFIG);
    let o = pw_ssh(&srv, USER, PASSWORD, "password", "id -un");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("{USER}\n"),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    assert!(srv.log().contains(&format!(
        "Accepted password for {USER} from 127.0.0.1 port "
    )));
    assert!(!srv.log().contains(PASSWORD), "a password reached the log");
}

#[test]
fn keyboard_interactive_login() {
    if !ready() {
        return;
    }
    let srv = Server::start(PAM_CONFIG);
    let o = pw_ssh(&srv, USER, PASSWORD, "keyboard-interactive", "echo kbd-ok");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "kbd-ok\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        srv.log()
            .contains(&format!("Accepted keyboard-interactive/pam for {USER}"))
    );
}

#[test]
fn wrong_password_is_delayed_without_blocking_others() {
    if !ready() {
        return;
    }
    let srv = Server::start(PAM_CONFIG);
    let t = Instant::now();
    let slow = {
        let port = srv.port;
        std::thread::spawn(move || {
            let o = Command::new("sshpass")
                .args(["-p", "not-the-password", "ssh", "-F", "/dev/null"])
                .args([
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                ])
                .args([
                    "-o",
                    "PubkeyAuthentication=no",
                    "-o",
                    "NumberOfPasswordPrompts=1",
                ])
                .args([
                    "-o",
                    "PreferredAuthentications=password",
                    "-p",
                    &port.to_string(),
                ])
                .arg(format!("{USER}@127.0.0.1"))
                .arg("true")
                .output()
                .unwrap();
            (o, t.elapsed())
        })
    };
    // Meanwhile another client is served at once.
    std::thread::sleep(Duration::from_millis(200));
    let quick = Instant::now();
    let o = srv.ssh_run(&current_user(), "echo fast", b"");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "fast\n");
    let quick = quick.elapsed();
    let (o, took) = slow.join().unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(took >= Duration::from_secs(1), "refusal took only {took:?}");
    assert!(
        quick < Duration::from_secs(1),
        "parallel login waited {quick:?}"
    );
    assert!(srv.wait_log(
        &format!("Failed password for {USER} from 127.0.0.1 port "),
        Duration::from_secs(3)
    ));
    // An unknown user is refused the same way, and logged as sshd does.
    let o = pw_ssh(&srv, "no-such-user-rsshd", "x", "password", "true");
    assert_ne!(o.status.code(), Some(0));
    assert!(srv.wait_log(
        "Invalid user no-such-user-rsshd from 127.0.0.1 port ",
        Duration::from_secs(3)
    ));
    assert!(
        srv.log()
            .contains("Failed password for invalid user no-such-user-rsshd from 127.0.0.1 port ")
    );
}

#[test]
fn locked_account_is_refused() {
    if !ready() {
        return;
    }
    if nix::unistd::User::from_name(LOCKED)
        .ok()
        .flatten()
        .is_none()
    {
        skip(&format!(
            "user {LOCKED} missing (.ci/run creates and locks it)"
        ));
        return;
    }
    let srv = Server::start(PAM_CONFIG);
    let o = pw_ssh(&srv, LOCKED, LOCKED_PASSWORD, "password", "true");
    assert_ne!(o.status.code(), Some(0), "a locked account got in");
}

#[test]
fn authentication_methods_demand_both() {
    if !ready() {
        return;
    }
    let srv = Server::start(&format!(
        "{PAM_CONFIG}\nAuthenticationMethods publickey,password"
    ));
    // Key alone: not enough.
    let o = srv.ssh_run(USER, "true", b"");
    assert_ne!(o.status.code(), Some(0), "publickey alone was accepted");
    // Key, then password: in.
    let o = Command::new("sshpass")
        .args(["-p", PASSWORD, "ssh", "-F", "/dev/null", "-i"])
        .arg(&srv.client_key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "NumberOfPasswordPrompts=1",
        ])
        .args(["-o", "PreferredAuthentications=publickey,password"])
        .args(["-p", &srv.port.to_string()])
        .arg(format!("{USER}@127.0.0.1"))
        .arg("echo both")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "both\n",
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    assert!(
        srv.log().contains(&format!("Partial publickey for {USER}")),
        "{}",
        srv.log()
    );
    assert!(srv.log().contains(&format!("Accepted password for {USER}")));
}

#[test]
fn plink_with_password() {
    if !ready() || !have("plink") {
        skip("plink missing or not ready");
        return;
    }
    let srv = Server::start(PAM_CONFIG);
    let (_, fp) = srv.putty_setup();
    let o = Command::new("plink")
        .args([
            "-batch",
            "-ssh",
            "-P",
            &srv.port.to_string(),
            "-pw",
            PASSWORD,
            "-hostkey",
            &fp,
        ])
        .args(["-l", USER, "127.0.0.1", "id -un"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        USER,
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
}

#[test]
fn pam_environment_reaches_the_session() {
    if !ready() {
        return;
    }
    // A PAM service of our own whose pam_env reads a file of ours.
    let dir = temp_dir("pamenv");
    let envfile = dir.join("environment");
    std::fs::write(&envfile, "RSSHD_PAM_VAR=from-pam-env\n").unwrap();
    let service = format!("rsshd-test-{}", std::process::id());
    let pam_file = std::path::PathBuf::from("/etc/pam.d").join(&service);
    std::fs::write(
        &pam_file,
        format!(
            "auth required pam_unix.so\naccount required pam_unix.so\n\
             session required pam_env.so readenv=1 envfile={}\nsession required pam_unix.so\n",
            envfile.display()
        ),
    )
    .unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Cleanup(pam_file);
    let srv = Server::start(&format!("{PAM_CONFIG}\nPAMServiceName {service}"));
    let o = pw_ssh(&srv, USER, PASSWORD, "password", "echo $RSSHD_PAM_VAR");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "from-pam-env\n",
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    // Key logins under UsePAM get the PAM session (and its environment) too.
    let o = srv.ssh_run(USER, "echo $RSSHD_PAM_VAR", b"");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "from-pam-env\n");
}

#[test]
fn expired_account_is_refused_even_with_a_key() {
    if !ready() {
        return;
    }
    if nix::unistd::User::from_name("rsshd-expired")
        .ok()
        .flatten()
        .is_none()
    {
        skip("user rsshd-expired missing (.ci/run creates it)");
        return;
    }
    let srv = Server::start(PAM_CONFIG);
    let o = srv.ssh_run("rsshd-expired", "true", b"");
    assert_ne!(
        o.status.code(),
        Some(0),
        "an expired account got in with a key"
    );
    assert!(
        srv.wait_log("PAM: ", Duration::from_secs(3)),
        "{}",
        srv.log()
    );
    // Keyboard-interactive can say why.
    let _ = Command::new("sh")
        .arg("-c")
        .arg("echo 'rsshd-expired:rsshd-expired-pw-1' | chpasswd")
        .status();
    // (The client shows such text at LogLevel INFO.)
    let o = Command::new("sshpass")
        .args(["-p", "rsshd-expired-pw-1"])
        .arg("ssh")
        .args(srv_opts_info(&srv))
        .args(["-o", "PreferredAuthentications=keyboard-interactive"])
        .arg("rsshd-expired@127.0.0.1")
        .arg("true")
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("ask your administrator"),
        "no reason shown: {err}"
    );
    // Without UsePAM, the same key login is PAM's business no more.
    let srv = Server::start("");
    let o = srv.ssh_run(USER, "true", b"");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn max_auth_tries_is_logged_like_sshd() {
    if !ready() {
        return;
    }
    let srv = Server::start(&format!("{PAM_CONFIG}\nMaxAuthTries 1"));
    let o = Command::new("sshpass")
        .args(["-p", "wrong-1", "ssh"])
        .args(srv_opts_info(&srv))
        .args([
            "-o",
            "NumberOfPasswordPrompts=3",
            "-o",
            "PreferredAuthentications=password",
        ])
        .arg(format!("{USER}@127.0.0.1"))
        .arg("true")
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(
        srv.wait_log(
            &format!("maximum authentication attempts exceeded for {USER} from 127.0.0.1 port "),
            Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
}
