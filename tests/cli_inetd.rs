//! `-i` (inetd mode) and socket activation, each against the real OpenSSH client and,
//! for `-i`, side by side with OpenSSH's own `sshd -i` run the same way.

mod cli_common;
mod support;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use cli_common::*;
use support::*;

/// What the remote command prints: the connection as the session sees it, and
/// which Match blocks applied.
const PROBE: &str = "echo \"$SSH_CONNECTION|$MATCHED_HOST\"; exit 7";

/// sshd's UNKNOWN peer under a ProxyCommand (pipes, no socket): `Match Address`
/// matches nothing (not even `*`), `Match Host` and `from=` see the name `UNKNOWN`.
const MATCHES: &str = "Match Address *\n    ForceCommand echo address-matched\n\
                       Match Host UNKNOWN\n    SetEnv MATCHED_HOST=yes\n";

#[test]
fn inetd_mode_under_proxy_command_is_sshd_s() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    if let Err(why) = sshd_ready() {
        skip(&why);
        return;
    }
    let s = Setup::new("inetd", Some("from=\"UNKNOWN\""), MATCHES);
    let log = s.dir.join("rsshd.log");
    let ours = s.ssh_via(
        &format!("{RSSHD} -i -f {} -E {}", s.config.display(), log.display()),
        PROBE,
    );
    let theirs = s.ssh_via(&format!("{SSHD} -i -f {}", s.config.display()), PROBE);
    let show = |o: &std::process::Output| {
        format!("{:?} {} {}", o.status, text(&o.stdout), text(&o.stderr))
    };
    assert_eq!(
        theirs.status.code(),
        Some(7),
        "the sshd reference itself: {}",
        show(&theirs)
    );
    assert_eq!(text(&theirs.stdout), "UNKNOWN 65535 UNKNOWN 65535|yes\n");
    assert_eq!(ours.status.code(), Some(7), "rsshd -i: {}", show(&ours));
    assert_eq!(text(&ours.stdout), text(&theirs.stdout));
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains(&format!(
            "Accepted publickey for {} from UNKNOWN port 65535 ssh2",
            current_user()
        )),
        "-E log: {logged}"
    );
}

/// No address pattern matches the UNKNOWN peer, as in sshd: a key restricted to
/// `from="0.0.0.0/0"` is refused under a ProxyCommand by both (rsshd stood for
/// UNKNOWN with 0.0.0.0 and let it in).
#[test]
fn inetd_unknown_peer_matches_no_address_pattern() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    if let Err(why) = sshd_ready() {
        skip(&why);
        return;
    }
    let s = Setup::new("inetd-cidr", Some("from=\"0.0.0.0/0\""), "");
    let ours = s.ssh_via(&format!("{RSSHD} -i -f {}", s.config.display()), "echo in");
    let theirs = s.ssh_via(&format!("{SSHD} -i -f {}", s.config.display()), "echo in");
    assert_eq!(
        theirs.status.code(),
        Some(255),
        "the sshd reference refuses"
    );
    assert_eq!(
        ours.status.code(),
        Some(255),
        "rsshd -i: {} {}",
        text(&ours.stdout),
        text(&ours.stderr)
    );
    assert_eq!(text(&ours.stdout), "");
}

/// Garbage instead of a version line, and end-of-file before one: both exit 255,
/// as sshd does, after sending the server's version line.
#[test]
fn inetd_mode_protocol_errors_exit_255() {
    if skip_without(&["ssh-keygen"]) {
        return;
    }
    let s = Setup::new("inetd", None, "");
    let mut servers = vec![(RSSHD, "SSH-2.0-rsshd_")];
    match sshd_ready() {
        Ok(()) => servers.push((SSHD, "SSH-2.0-OpenSSH_")),
        Err(why) => skip(&why),
    }
    for (server, banner) in servers {
        for input in [&b"garbage\r\n"[..], b""] {
            let mut child = Command::new(server)
                .args(["-i", "-f"])
                .arg(&s.config)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input).unwrap();
            drop(stdin);
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            let st = child.wait().unwrap();
            assert!(out.starts_with(banner), "{server}: {out:?}");
            assert_eq!(st.code(), Some(255), "{server} given {input:?}");
        }
    }
}

/// Accept inetd-style: the test accepts the TCP connection and starts the server
/// with the socket as its stdin and stdout (what inetd and systemd `Accept=yes` do).
fn inetd_on_socket(server: &str, s: &Setup) -> (Option<i32>, String, u16, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (cfg, key) = (s.config.clone(), s.client_key.clone());
    let client = std::thread::spawn(move || {
        Command::new("ssh")
            .args(ssh_base_args(port, &key))
            .arg(format!("{}@127.0.0.1", current_user()))
            .arg(PROBE)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    let (conn, peer) = listener.accept().unwrap();
    let fd: OwnedFd = conn.into();
    let mut child = Command::new(server)
        .args(["-i", "-f"])
        .arg(&cfg)
        .stdin(Stdio::from(fd.try_clone().unwrap()))
        .stdout(Stdio::from(fd))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = client.join().unwrap();
    let _ = child.wait();
    let stderr = text(&out.stderr);
    assert!(stderr.is_empty(), "{server}: {stderr}");
    (out.status.code(), text(&out.stdout), peer.port(), port)
}

#[test]
fn inetd_mode_on_a_socket_sees_the_peer() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let s = Setup::new("inetd", Some("from=\"127.0.0.1\""), MATCHES);
    // On a socket, Match Address sees 127.0.0.1, so its ForceCommand applies.
    let (code, ours, ..) = inetd_on_socket(RSSHD, &s);
    assert_eq!((code, ours.as_str()), (Some(0), "address-matched\n"));
    let plain = Setup::new("inetd", Some("from=\"127.0.0.1\""), "");
    let (code, ours, cport, lport) = inetd_on_socket(RSSHD, &plain);
    assert_eq!(code, Some(7));
    assert_eq!(ours, format!("127.0.0.1 {cport} 127.0.0.1 {lport}|\n"));
    match sshd_ready() {
        Ok(()) => {
            let (code, theirs, cport, lport) = inetd_on_socket(SSHD, &plain);
            assert_eq!(code, Some(7));
            assert_eq!(theirs, format!("127.0.0.1 {cport} 127.0.0.1 {lport}|\n"));
            // And the same Match verdict as ours.
            let (code, theirs, ..) = inetd_on_socket(SSHD, &s);
            assert_eq!((code, theirs.as_str()), (Some(0), "address-matched\n"));
        }
        Err(why) => skip(&why),
    }
}

/// Debian's `ssh.socket` + `ssh@.service` way, with systemd's own tool.
#[test]
fn inetd_mode_under_systemd_socket_activate() {
    if skip_without(&["ssh", "ssh-keygen", "systemd-socket-activate"]) {
        return;
    }
    let s = Setup::new("inetd", None, "");
    let port = free_port();
    let mut activator = Daemon::spawn(
        Command::new("systemd-socket-activate")
            .args(["--accept", "--inetd", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args([RSSHD, "-i", "-f"])
            .arg(&s.config),
    );
    assert!(
        activator.wait_log("Listening on", Duration::from_secs(10)),
        "{}",
        activator.log()
    );
    let out = s.ssh_port(port, PROBE);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    assert!(
        line.starts_with("127.0.0.1 ") && line.ends_with(&format!(" 127.0.0.1 {port}|\n")),
        "{line}"
    );
    activator.stop();
}

/// A port that was free a moment ago (for tools that want a number).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `rsshd args...` the way a service manager does for `Accept=no`: the
/// listening socket on fd 3, `LISTEN_FDS=1`, `LISTEN_PID` = its PID.
fn socket_activated(listener: &std::net::TcpListener, args: &[&str]) -> Daemon {
    passing_fd3(listener, "$$", args)
}

/// As [`socket_activated`] with `LISTEN_PID` set to `pid` (shell syntax).
fn passing_fd3(listener: &std::net::TcpListener, pid: &str, args: &[&str]) -> Daemon {
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!(
            "export LISTEN_PID={pid} LISTEN_FDS=1; exec \"$0\" \"$@\""
        ))
        .arg(RSSHD)
        .args(args);
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Daemon::spawn(&mut cmd)
}

#[test]
fn socket_activation_uses_the_passed_listener() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let s = Setup::daemon("activation", "");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let d = socket_activated(&listener, &["-D", "-e", "-f", s.config.to_str().unwrap()]);
    drop(listener);
    assert_eq!(d.port(), port, "{}", d.log());
    let out = s.ssh_port(port, "echo $SSH_CONNECTION");
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), d.log());
    // The config's own `ListenAddress 127.0.0.1` / `Port 0` was not bound as well
    // (it would have been announced before the login above).
    assert_eq!(
        d.log().matches("Server listening on").count(),
        1,
        "{}",
        d.log()
    );
    assert!(
        text(&out.stdout)
            .trim_end()
            .ends_with(&format!("127.0.0.1 {port}")),
        "{}",
        text(&out.stdout)
    );
}

/// Sockets meant for another process (`LISTEN_PID` is not ours) are not taken: the
/// configured address is bound instead, as sd_listen_fds(3) requires.
#[test]
fn socket_activation_checks_listen_pid() {
    if skip_without(&["ssh-keygen"]) {
        return;
    }
    let s = Setup::daemon("activation", "");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let d = passing_fd3(
        &listener,
        "1",
        &["-D", "-e", "-f", s.config.to_str().unwrap()],
    );
    drop(listener);
    assert_ne!(d.port(), port, "{}", d.log());
}

/// `-q` logs nothing at all, while the server works (the port is known because
/// the test passes the socket).
#[test]
fn quiet_mode_logs_nothing() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let s = Setup::daemon("quiet", "");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut d = socket_activated(
        &listener,
        &["-D", "-e", "-q", "-f", s.config.to_str().unwrap()],
    );
    drop(listener);
    let out = s.ssh_port(port, "echo hello");
    assert_eq!(text(&out.stdout), "hello\n", "{}", text(&out.stderr));
    d.stop();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(d.log(), "", "-q must log nothing");
}

#[test]
fn systemd_socket_activate_accept_no() {
    if skip_without(&["ssh", "ssh-keygen", "systemd-socket-activate"]) {
        return;
    }
    let s = Setup::daemon("activation", "");
    let port = free_port();
    let mut d = Daemon::spawn(
        Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(format!("127.0.0.1:{port}"))
            .args([RSSHD, "-D", "-e", "-f"])
            .arg(&s.config),
    );
    assert!(
        d.wait_log("Listening on", Duration::from_secs(10)),
        "{}",
        d.log()
    );
    // The first connection makes the tool start rsshd with the socket.
    let out = s.ssh_port(port, "echo activated");
    assert_eq!(
        text(&out.stdout),
        "activated\n",
        "{}\n{}",
        text(&out.stderr),
        d.log()
    );
    assert!(
        d.log()
            .contains(&format!("Server listening on 127.0.0.1 port {port}.")),
        "{}",
        d.log()
    );
    assert_eq!(
        d.log().matches("Server listening on").count(),
        1,
        "{}",
        d.log()
    );
    d.stop();
}
