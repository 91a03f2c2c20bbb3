//! Issue 11, attack 10: the control socket cannot be taken over or deleted. A
//! second rsshd with the same `ControlSocket` refuses to start (and leaves the
//! first one's socket working), a stale socket is replaced, and a stopping daemon
//! removes only the socket file it created.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn rsshd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rsshd"))
}

/// `rsshd sessions --socket P`: whether the daemon behind P answered.
fn sessions(socket: &Path) -> Output {
    rsshd()
        .args(["sessions", "--socket"])
        .arg(socket)
        .output()
        .expect("run rsshd sessions")
}

/// Run a daemon that is expected to refuse to start; if it starts anyway, it is
/// stopped after `limit` and the test sees `None`.
fn run_expecting_exit(config: &Path, limit: Duration) -> Option<(i32, String)> {
    let mut child = rsshd()
        .args(["-D", "-e", "-f"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rsshd");
    let end = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            return Some((st.code().unwrap_or(-1), err));
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn socket_path(srv: &Server) -> std::path::PathBuf {
    srv.dir.join("control.sock")
}

#[test]
fn second_daemon_refuses_and_the_first_keeps_its_socket() {
    let srv = Server::start("");
    let socket = socket_path(&srv);
    let before = std::fs::metadata(&socket).expect("control socket exists");
    assert!(sessions(&socket).status.success());

    // Same config, so the same ControlSocket (and Port 0: its listeners would not
    // collide with the first daemon's).
    let outcome = run_expecting_exit(&srv.config, Duration::from_secs(10));
    let (code, stderr) = outcome.expect("a second rsshd with the same ControlSocket started");
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "control socket {} is in use by a running rsshd",
            socket.display()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Server listening"),
        "the refused daemon opened its ports first: {stderr}"
    );

    // The first daemon's socket is untouched and still answers.
    let after = std::fs::metadata(&socket).expect("control socket still exists");
    assert_eq!((before.dev(), before.ino()), (after.dev(), after.ino()));
    let o = sessions(&socket);
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
}

#[test]
fn stale_socket_is_replaced() {
    let dir = temp_dir("stale-sock");
    let socket = dir.join("ctl.sock");
    // A socket file with nobody listening, as a daemon killed with SIGKILL leaves.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists());
    let o = sessions(&socket);
    assert!(!o.status.success(), "nobody should answer yet");

    let srv = Server::start(&format!("ControlSocket {}", socket.display()));
    let o = sessions(&socket);
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
}

#[test]
fn stopping_daemon_leaves_a_file_it_did_not_create() {
    let mut srv = Server::start("");
    let socket = socket_path(&srv);
    assert!(sessions(&socket).status.success());
    // Someone else now owns the path (here a plain file; in life, a newer daemon's
    // socket).
    std::fs::remove_file(&socket).expect("remove socket");
    std::fs::write(&socket, "someone else's\n").expect("write file");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(srv.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let st = srv.wait_exit(Duration::from_secs(15)).expect("rsshd exits");
    assert!(st.success(), "{}", srv.log());
    assert_eq!(
        std::fs::read_to_string(&socket).ok().as_deref(),
        Some("someone else's\n"),
        "the stopping daemon deleted a file it did not create"
    );
}

#[test]
fn stopping_daemon_removes_its_own_socket() {
    let mut srv = Server::start("");
    let socket = socket_path(&srv);
    // An answer means the daemon is past start-up (its signal handlers are set).
    assert!(sessions(&socket).status.success());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(srv.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    srv.wait_exit(Duration::from_secs(15)).expect("rsshd exits");
    assert!(!socket.exists(), "{}", srv.log());
}

#[test]
fn a_file_at_the_socket_path_is_not_replaced() {
    let dir = temp_dir("file-at-sock");
    let socket = dir.join("ctl.sock");
    std::fs::write(&socket, "keep me\n").expect("write file");
    let host_key = keygen(&dir, "host_key");
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1\nPort 0\nHostKey {}\nPidFile none\nControlSocket {}\n",
            host_key.display(),
            socket.display()
        ),
    )
    .expect("write config");
    let (code, stderr) = run_expecting_exit(&config, Duration::from_secs(10))
        .expect("rsshd started over a regular file at its ControlSocket path");
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("exists and is not a socket"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&socket).ok().as_deref(),
        Some("keep me\n")
    );
}
