//! Issue 2 end to end: real OpenSSH and PuTTY clients against a real rsshd.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn exec_output_stdin_and_exit_codes() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("");
    let me = current_user();
    let o = srv.ssh_run(&me, "echo hello; echo oops >&2; exit 7", b"");
    assert_eq!(
        stdout(&o),
        "hello\n",
        "stderr: {}\nlog:\n{}",
        stderr(&o),
        srv.log()
    );
    assert!(stderr(&o).contains("oops"), "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(7));

    let o = srv.ssh_run(&me, "tr a-z A-Z", b"shout\n");
    assert_eq!(stdout(&o), "SHOUT\n");
    assert_eq!(o.status.code(), Some(0));

    // The environment sshd gives every session.
    let o = srv.ssh_run(&me, "echo $USER:$LOGNAME:$HOME:$SSH_CONNECTION", b"");
    let out = stdout(&o);
    assert!(out.starts_with(&format!("{me}:{me}:")), "{out}");
    assert!(
        out.contains(&"127.0.0.1 ".to_string())
            && out.contains(&format!(" 127.0.0.1 {}", srv.port)),
        "{out}"
    );
    assert!(
        srv.log()
            .contains(&format!("Accepted publickey for {me} from 127.0.0.1 port ")),
        "{}",
        srv.log()
    );
    assert!(srv.log().contains("ssh2: ED25519 SHA256:"), "{}", srv.log());
}

#[test]
fn signal_death_is_reported_like_sshd() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("");
    let o = srv.ssh_run(&current_user(), "kill -TERM $$", b"");
    // OpenSSH's client exits 255 when the remote command died of a signal.
    assert_eq!(o.status.code(), Some(255), "stderr: {}", stderr(&o));
}

#[test]
fn fifty_mib_round_trip() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("");
    let mut data = vec![0u8; 50 * 1024 * 1024];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let t = Instant::now();
    let o = srv.ssh_run(&current_user(), "cat", &data);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(o.stdout.len(), data.len());
    assert!(o.stdout == data, "round trip corrupted the data");
    eprintln!("50 MiB round trip in {:?}", t.elapsed());
}

#[test]
fn pty_shell_tty_and_resize() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("");
    let mut cmd = srv.ssh(&current_user());
    cmd.arg("-tt");
    let mut c = PtyClient::spawn(&mut cmd, 30, 100);
    c.send("stty size; tty; echo MARK$((6*7))\n");
    assert!(
        c.wait_for("MARK42", Duration::from_secs(15)),
        "screen:\n{}\nlog:\n{}",
        c.text(),
        srv.log()
    );
    let text = c.text();
    assert!(text.contains("30 100"), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    c.resize(40, 120);
    std::thread::sleep(Duration::from_millis(300));
    c.send("stty size; echo DONE$((1+1))\n");
    assert!(c.wait_for("DONE2", Duration::from_secs(10)), "{}", c.text());
    assert!(c.text().contains("40 120"), "{}", c.text());
    c.send("exit 3\n");
    let st = c
        .wait_exit(Duration::from_secs(10))
        .expect("ssh exits after the shell");
    assert_eq!(st.code(), Some(3));
}

#[test]
fn sftp_and_scp_put_and_get() {
    if skip_without(&["ssh", "sftp", "scp", "ssh-keygen"]) {
        return;
    }
    if !std::path::Path::new("/usr/lib/openssh/sftp-server").exists() {
        skip("/usr/lib/openssh/sftp-server missing (package openssh-sftp-server)");
        return;
    }
    let srv = Server::start("Subsystem sftp /usr/lib/openssh/sftp-server");
    let dir = &srv.dir;
    let src = dir.join("src.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let me = current_user();

    let batch = dir.join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {0}/src.bin {0}/sftp-up.bin\nget {0}/sftp-up.bin {0}/sftp-down.bin\n",
            dir.display()
        ),
    )
    .unwrap();
    let o = Command::new("sftp")
        .args(srv.client_opts())
        .args(["-P", &srv.port.to_string(), "-b"])
        .arg(&batch)
        .arg(format!("{me}@127.0.0.1"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "sftp: {}\nlog:\n{}",
        stderr(&o),
        srv.log()
    );
    assert!(std::fs::read(dir.join("sftp-down.bin")).unwrap() == data);
    assert!(
        srv.log()
            .contains(&format!("subsystem request for sftp by user {me}"))
    );

    let o = Command::new("scp")
        .args(srv.client_opts())
        .args(["-P", &srv.port.to_string()])
        .arg(&src)
        .arg(format!("{me}@127.0.0.1:{}/scp-up.bin", dir.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "scp put: {}", stderr(&o));
    let o = Command::new("scp")
        .args(srv.client_opts())
        .args(["-P", &srv.port.to_string()])
        .arg(format!("{me}@127.0.0.1:{}/scp-up.bin", dir.display()))
        .arg(dir.join("scp-down.bin"))
        .output()
        .unwrap();
    assert!(o.status.success(), "scp get: {}", stderr(&o));
    assert!(std::fs::read(dir.join("scp-down.bin")).unwrap() == data);
}

#[test]
fn accept_env_and_set_env() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("AcceptEnv LC_* RSSHD_OK\nSetEnv FROM_ADMIN=yes");
    let o = srv
        .ssh(&current_user())
        .env("LC_RSSHD", "hello")
        .env("RSSHD_NOT", "leaked")
        .args(["-o", "SendEnv=LC_RSSHD RSSHD_NOT"])
        .arg("echo $LC_RSSHD:${RSSHD_NOT:-unset}:$FROM_ADMIN")
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "hello:unset:yes\n", "stderr: {}", stderr(&o));
}

#[test]
fn refusals_wrong_key_root_login_deny_users() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let me = current_user();
    // A key that is not in authorized_keys.
    let srv = Server::start("");
    let other = keygen(&srv.dir, "other_key");
    let o = Command::new("ssh")
        .args(ssh_base_args(srv.port, &other))
        .arg(format!("{me}@127.0.0.1"))
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(255));
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    drop(srv);

    let srv = Server::start(&format!("DenyUsers {me}"));
    let o = srv.ssh_run(&me, "true", b"");
    assert_eq!(o.status.code(), Some(255));
    assert!(
        srv.wait_log(
            &format!("User {me} from 127.0.0.1 not allowed because listed in DenyUsers"),
            Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
    drop(srv);

    if is_root() {
        let srv = Server::start("PermitRootLogin no");
        let o = srv.ssh_run("root", "true", b"");
        assert_eq!(
            o.status.code(),
            Some(255),
            "root got in with PermitRootLogin no"
        );
        assert!(
            srv.wait_log(
                "ROOT LOGIN REFUSED FROM 127.0.0.1 port",
                Duration::from_secs(5)
            ),
            "{}",
            srv.log()
        );
    } else {
        skip("PermitRootLogin part: not root");
    }
}

#[test]
fn forced_command_from_key() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start_with_keys(
        "",
        Some("command=\"echo forced:$SSH_ORIGINAL_COMMAND\",no-pty"),
    );
    let o = srv.ssh_run(&current_user(), "echo asked", b"");
    assert_eq!(
        stdout(&o),
        "forced:echo asked\n",
        "stderr: {}\nlog:\n{}",
        stderr(&o),
        srv.log()
    );
}

#[test]
fn killed_client_leaves_no_process() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("");
    let mut cmd = srv.ssh(&current_user());
    cmd.arg("-tt").arg("sleep 1001 & echo SID=$$; sleep 1002");
    let mut c = PtyClient::spawn(&mut cmd, 24, 80);
    assert!(c.wait_for("SID=", Duration::from_secs(15)), "{}", c.text());
    std::thread::sleep(Duration::from_millis(300));
    c.pump();
    let text = c.text();
    let sid: i32 = text
        .split("SID=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.trim().parse().ok())
        .expect("session id");
    assert!(
        processes_in_session(sid).len() >= 2,
        "session processes should be running"
    );
    c.child.kill().unwrap();
    let end = Instant::now() + Duration::from_secs(8);
    while Instant::now() < end && !processes_in_session(sid).is_empty() {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        processes_in_session(sid).is_empty(),
        "orphans left: {:?}",
        processes_in_session(sid)
    );
}

#[test]
fn plink_exec_and_exit_code() {
    if skip_without(&["plink", "puttygen", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("");
    let (ppk, fp) = srv.putty_setup();
    let o = Command::new("plink")
        .args(["-batch", "-ssh", "-P", &srv.port.to_string(), "-i"])
        .arg(&ppk)
        .args([
            "-hostkey",
            &fp,
            "-l",
            &current_user(),
            "127.0.0.1",
            "echo plink-ok; exit 5",
        ])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o).trim(),
        "plink-ok",
        "stderr: {}\nlog:\n{}",
        stderr(&o),
        srv.log()
    );
    assert_eq!(o.status.code(), Some(5));
}

#[test]
fn login_as_unprivileged_user_when_root() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    if !is_root() {
        skip("switching users needs root");
        return;
    }
    let Ok(Some(user)) = nix::unistd::User::from_name("rsshd-test") else {
        skip("user rsshd-test does not exist (.ci/run creates it)");
        return;
    };
    let srv = Server::start("");
    let o = srv.ssh_run("rsshd-test", "id -u; id -g; echo $HOME; pwd", b"");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "{out}\nstderr: {}\nlog:\n{}",
        stderr(&o),
        srv.log()
    );
    assert_eq!(lines[0], user.uid.to_string());
    assert_eq!(lines[1], user.gid.to_string());
    assert_eq!(lines[2], user.dir.display().to_string());
    assert_eq!(lines[3], user.dir.display().to_string());
}

#[test]
fn banner_and_motd() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let dir = temp_dir("banner");
    std::fs::write(dir.join("banner"), "Authorized use only.\n").unwrap();
    let srv = Server::start(&format!("Banner {}/banner", dir.display()));
    // The client shows banners at LogLevel INFO, so not through `srv.ssh`.
    let o = srv
        .ssh_talkative(&current_user(), &["-o", "BatchMode=yes"])
        .arg("true")
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("Authorized use only."),
        "{}",
        stderr(&o)
    );
}

#[test]
fn strict_modes_refuse_a_group_writable_key_directory() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let srv = Server::start("StrictModes yes");
    let o = srv.ssh_run(&current_user(), "echo in", b"");
    assert_eq!(stdout(&o), "in\n", "{}", stderr(&o));
    std::fs::set_permissions(&srv.dir, std::fs::Permissions::from_mode(0o775)).unwrap();
    let o = srv.ssh_run(&current_user(), "echo in", b"");
    assert_eq!(o.status.code(), Some(255));
    assert!(
        srv.wait_log(
            "Authentication refused: bad ownership or modes for directory",
            Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
}

#[test]
fn max_auth_tries_disconnects() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("MaxAuthTries 2");
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
    ])
    .args([
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-p",
        &srv.port.to_string(),
    ]);
    for i in 0..4 {
        let k = keygen(&srv.dir, &format!("wrong{i}"));
        cmd.arg("-i").arg(k);
    }
    cmd.arg("-i").arg(&srv.client_key);
    let o = cmd
        .arg(format!("{}@127.0.0.1", current_user()))
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(255),
        "the right key came too late: {}",
        stderr(&o)
    );
}

#[test]
fn max_sessions_limits_channels_per_connection() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("MaxSessions 1");
    let ctl = srv.dir.join("cm");
    let ctl_arg = ctl.display().to_string();
    // A multiplexing master holding the connection, one session through it...
    let mut master = srv.ssh(&current_user());
    master
        .args(["-M", "-S", &ctl_arg, "-N"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut master = master.spawn().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !ctl.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ctl.exists(), "no control socket: {}", srv.log());
    let mut first = srv.ssh(&current_user());
    first
        .args(["-S", &ctl_arg, "sleep 5"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut first = first.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // ...so a second session on the same connection is refused (the client then
    // falls back to a connection of its own, as it does with sshd).
    let o = srv
        .ssh_talkative(&current_user(), &["-S", &ctl_arg, "-o", "BatchMode=yes"])
        .arg("echo second")
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("Session open refused by peer"),
        "{}",
        stderr(&o)
    );
    assert!(
        srv.wait_log("MaxSessions 1 reached", Duration::from_secs(3)),
        "{}",
        srv.log()
    );
    let _ = first.kill();
    let _ = first.wait();
    let _ = master.kill();
    let _ = master.wait();
}

#[test]
fn last_login_is_shown_like_sshd() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    if !is_root() || !std::path::Path::new("/var/log/lastlog").exists() {
        skip("needs root and /var/log/lastlog");
        return;
    }
    let srv = Server::start("PrintLastLog yes");
    // The first login records itself; the second shows it.
    for round in 0..2 {
        let mut cmd = srv.ssh(&current_user());
        cmd.arg("-tt");
        let mut c = PtyClient::spawn(&mut cmd, 24, 80);
        c.send("echo ROUND$((10+1))\n");
        assert!(
            c.wait_for("ROUND11", Duration::from_secs(15)),
            "{}",
            c.text()
        );
        if round == 1 {
            assert!(c.text().contains("Last login: "), "{}", c.text());
            assert!(c.text().contains("from 127.0.0.1"), "{}", c.text());
        }
        c.send("exit\n");
        let _ = c.wait_exit(Duration::from_secs(5));
    }
}
