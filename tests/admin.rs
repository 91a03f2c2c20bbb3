//! Issue 4 end to end: `rsshd sessions`/`kill` over the control socket, reload on
//! SIGHUP (live sessions re-evaluated), SIGTERM, with real ssh clients.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::*;

fn rsshd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rsshd"))
}

fn socket_line(dir: &std::path::Path) -> String {
    format!("ControlSocket {}/ctl.sock", dir.display())
}

/// A `-tt` session on its own terminal that has printed its prompt marker.
fn open_shell(srv: &Server) -> PtyClient {
    let mut cmd = srv.ssh(&current_user());
    cmd.arg("-tt");
    let mut c = PtyClient::spawn(&mut cmd, 24, 80);
    c.send("echo READY$((40+2))\n");
    assert!(
        c.wait_for("READY42", Duration::from_secs(15)),
        "{}\n{}",
        c.text(),
        srv.log()
    );
    c
}

fn sessions_json(socket: &std::path::Path) -> serde_json::Value {
    let o = rsshd()
        .args(["sessions", "--json", "--socket"])
        .arg(socket)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("sessions --json is JSON")
}

#[test]
fn sessions_lists_and_kill_ends_one() {
    if !have("ssh") {
        skip("ssh missing");
        return;
    }
    let dir = temp_dir("admin");
    let socket = dir.join("ctl.sock");
    let srv = Server::start(&format!("{}\nIdleTimeout 1h", socket_line(&dir)));
    let mut a = open_shell(&srv);
    let mut b = open_shell(&srv);
    // Keep b busy so the two IDLE values differ.
    std::thread::sleep(Duration::from_millis(1500));
    b.send("true\n");
    let rows = sessions_json(&socket);
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let me = current_user();
    for r in rows {
        assert_eq!(r["user"], me.as_str());
        assert_eq!(r["from"], "127.0.0.1");
        assert!(r["tty"].as_str().unwrap_or("").starts_with("pts/"), "{r}");
        assert!(r["limit_seconds"].as_f64().unwrap() > 3500.0);
    }
    let idle: Vec<f64> = rows
        .iter()
        .map(|r| r["idle_seconds"].as_f64().unwrap())
        .collect();
    assert!(
        idle.iter().any(|i| *i >= 1.0),
        "one session has been idle: {idle:?}"
    );
    // IDLE grows.
    std::thread::sleep(Duration::from_millis(1100));
    let later = sessions_json(&socket);
    let max_later = later
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["idle_seconds"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(max_later > idle.iter().cloned().fold(0.0, f64::max));

    // The table has w's columns.
    let o = rsshd()
        .args(["sessions", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.starts_with("ID"), "{table}");
    for col in ["USER", "TTY", "FROM", "LOGIN@", "IDLE", "LIMIT", "WHAT"] {
        assert!(table.lines().next().unwrap().contains(col), "{table}");
    }

    // Kill the first listed; its client sees the reason, the other lives on.
    let first = rows[0]["id"].as_u64().unwrap();
    let first_tty = rows[0]["tty"].as_str().unwrap().to_string();
    let o = rsshd()
        .args([
            "kill",
            &first.to_string(),
            "--reason",
            "maintenance window",
            "--socket",
        ])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (killed, alive) = {
        // Which client was it? The one whose terminal shows the reason.
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            a.pump();
            b.pump();
            if a.text().contains("maintenance window") {
                break (&mut a, &mut b);
            }
            if b.text().contains("maintenance window") {
                break (&mut b, &mut a);
            }
            assert!(Instant::now() < end, "no client saw the reason");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(
        killed.wait_exit(Duration::from_secs(5)).is_some(),
        "killed client exits"
    );
    assert!(
        killed.text().contains("Received disconnect")
            && killed.text().contains(":11: rsshd: maintenance window")
    );
    alive.send("echo STILL$((1+1))\n");
    assert!(
        alive.wait_for("STILL2", Duration::from_secs(5)),
        "the other session lives"
    );
    assert!(
        srv.wait_log(
            "ended by the administrator: maintenance window",
            Duration::from_secs(3)
        ),
        "{}",
        srv.log()
    );
    let rows = sessions_json(&socket);
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_ne!(rows[0]["tty"].as_str().unwrap(), first_tty);
}

#[test]
fn control_socket_refuses_other_users() {
    if !is_root() {
        skip("needs root to run the client as another user");
        return;
    }
    if nix::unistd::User::from_name("rsshd-test")
        .ok()
        .flatten()
        .is_none()
    {
        skip("user rsshd-test missing (.ci/run creates it)");
        return;
    }
    let dir = temp_dir("admin");
    let socket = dir.join("ctl.sock");
    let _srv = Server::start(&socket_line(&dir));
    let meta = std::fs::metadata(&socket).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Even with the file mode opened up, SO_PEERCRED refuses the caller.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let bin = env!("CARGO_BIN_EXE_rsshd");
    let o = Command::new("su")
        .args(["rsshd-test", "-s", "/bin/sh", "-c"])
        .arg(format!("{bin} sessions --socket {}", socket.display()))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("denied"), "{err}");
}

#[test]
fn no_daemon_is_a_clear_error() {
    let dir = temp_dir("admin");
    let o = rsshd()
        .args(["sessions", "--socket"])
        .arg(dir.join("none.sock"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no rsshd is listening"));
}

/// `ControlSocket none` turns the socket off, as `PidFile none` turns the PID
/// file off: two such daemons run side by side (on the built-in place the second
/// would refuse to start), logins work, `-T` says `none`, and `rsshd sessions`
/// on that config says why it cannot ask.
#[test]
fn control_socket_none_turns_it_off() {
    if !have("ssh") {
        skip("ssh missing");
        return;
    }
    let a = Server::start("ControlSocket none");
    let b = Server::start("ControlSocket none");
    for srv in [&a, &b] {
        let o = srv.ssh(&current_user()).arg("true").output().unwrap();
        assert!(
            o.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&o.stderr),
            srv.log()
        );
        // The base config's own ControlSocket line comes later and loses.
        assert!(!srv.dir.join("control.sock").exists());
        let t = rsshd()
            .arg("-T")
            .arg("-f")
            .arg(&srv.config)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&t.stdout);
        assert!(out.lines().any(|l| l == "controlsocket none"), "{out}");
        let o = rsshd()
            .arg("-f")
            .arg(&srv.config)
            .arg("sessions")
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("ControlSocket none"), "{err}");
    }
}

#[test]
fn reload_tightens_live_sessions_and_survives_a_broken_config() {
    if !have("ssh") {
        skip("ssh missing");
        return;
    }
    let srv = Server::start("IdleTimeout 1h");
    let mut c = open_shell(&srv);
    let original = std::fs::read_to_string(&srv.config).unwrap();

    // A broken config: logged with file:line, nothing touched, new logins work.
    std::fs::write(
        &srv.config,
        original.replace("IdleTimeout 1h", "IdleTimeout banana"),
    )
    .unwrap();
    kill(Pid::from_raw(srv.pid() as i32), Signal::SIGHUP).unwrap();
    assert!(
        srv.wait_log(
            "IdleTimeout: invalid time value \"banana\"",
            Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
    assert!(
        srv.log().contains(&format!("{}:1:", srv.config.display())),
        "{}",
        srv.log()
    );
    let o = srv.ssh_run(&current_user(), "echo new", b"");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "new\n");
    c.send("echo OK$((2+3))\n");
    assert!(c.wait_for("OK5", Duration::from_secs(5)));

    // Tightened to 3 s: the live idle session ends about 3 s after its last input.
    std::fs::write(
        &srv.config,
        original.replace("IdleTimeout 1h", "IdleTimeout 3s"),
    )
    .unwrap();
    let t = Instant::now();
    kill(Pid::from_raw(srv.pid() as i32), Signal::SIGHUP).unwrap();
    let st = c.wait_exit(Duration::from_secs(10));
    let took = t.elapsed();
    assert!(
        st.is_some(),
        "the live session was not re-evaluated: {}",
        srv.log()
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        c.text()
            .contains("rsshd: disconnected after 3s without input"),
        "{}",
        c.text()
    );
}

#[test]
fn sigterm_ends_every_session_with_a_reason() {
    if !have("ssh") {
        skip("ssh missing");
        return;
    }
    let srv = Server::start("");
    let mut a = open_shell(&srv);
    let o = {
        let mut cmd = srv.ssh(&current_user());
        cmd.arg("sleep 60");
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    std::thread::sleep(Duration::from_millis(800));
    kill(Pid::from_raw(srv.pid() as i32), Signal::SIGTERM).unwrap();
    assert!(a.wait_exit(Duration::from_secs(8)).is_some());
    assert!(
        a.text().contains("rsshd: server shutting down"),
        "{}",
        a.text()
    );
    let out = o.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains(":11: rsshd: server shutting down"));
    let mut srv = srv;
    let status = srv.wait_exit(Duration::from_secs(8)).expect("rsshd exits");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn w_who_and_last_show_pty_sessions() {
    if !have("ssh") || !have("who") {
        skip("ssh or who missing");
        return;
    }
    if !is_root() || !std::path::Path::new("/run/utmp").exists() {
        skip("needs root and /run/utmp (.ci/run creates it) to write login records");
        return;
    }
    let srv = Server::start("IdleTimeout 3s");
    let mut c = open_shell(&srv);
    c.send("tty\n");
    assert!(c.wait_for("/dev/pts/", Duration::from_secs(5)));
    let text = c.text();
    let line = text
        .split("/dev/")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("tty line")
        .to_string();
    let who =
        || String::from_utf8_lossy(&Command::new("who").output().unwrap().stdout).into_owned();
    let w = || {
        String::from_utf8_lossy(&Command::new("w").arg("-h").output().unwrap().stdout).into_owned()
    };
    let listed = |out: &str| {
        out.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(line.as_str()))
    };
    assert!(listed(&who()), "who does not list {line}:\n{}", who());
    assert!(listed(&w()), "w does not list {line}:\n{}", w());
    // The idle timeout ends it; then it is gone from who and w.
    assert!(c.wait_exit(Duration::from_secs(8)).is_some());
    let end = Instant::now() + Duration::from_secs(5);
    while listed(&who()) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !listed(&who()),
        "who still lists {line} after logout:\n{}",
        who()
    );
    assert!(!listed(&w()), "w still lists {line} after logout");
    if std::path::Path::new("/var/log/wtmp").exists() && have("last") {
        let last = String::from_utf8_lossy(
            &Command::new("last")
                .args(["-w", "-n", "2000"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        assert!(
            last.lines()
                .any(|l| l.contains(&line) && l.contains(&current_user())),
            "last does not show the session on {line}:\n{last}"
        );
    }
}
