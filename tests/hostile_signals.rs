//! Issue 11, attack 4: signals that hit other users' processes or rsshd's own.
//!
//! rsshd signals as root. A client's `signal` request and a channel's close
//! used to signal a session by the number its leader had, after the leader was
//! reaped and the number free for anyone (steered here with
//! /proc/sys/kernel/ns_last_pid); and with `UsePAM yes` the root PAM helper was
//! in the user's process group and session, so `signal KILL` or a hang-up's
//! SIGKILL killed it before it could run pam_close_session. OpenSSH's client has
//! no signal command: paramiko sends the requests.

mod session_common;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use session_common::PamService;
use support::*;

/// Debian's python3 (paramiko from python3-paramiko), not one a user put first
/// on PATH.
const PYTHON: &str = "/usr/bin/python3";

/// A paramiko client holding one session channel, driven line by line: it
/// prints `out LINE` for the channel's output, `signal NAME` for an
/// exit-signal, `closed STATUS` when the channel closes; it reads `signal NAME`
/// (send a signal request) and `close` (close the channel).
const DRIVER: &str = r#"
import sys, threading, paramiko
port, key, user, kind, arg, pty = sys.argv[1:7]
lock = threading.Lock()
def say(*words):
    # One write per line: the reader thread prints too.
    with lock:
        sys.stdout.write(" ".join(str(w) for w in words) + "\n")
        sys.stdout.flush()
handle = paramiko.Channel._handle_request
def spy(self, m):
    at = m.packet.tell()
    if m.get_text() == "exit-signal":
        m.get_boolean()
        say("signal", m.get_text())
    m.packet.seek(at)
    return handle(self, m)
paramiko.Transport._channel_handler_table[paramiko.common.MSG_CHANNEL_REQUEST] = spy
c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
c.connect("127.0.0.1", port=int(port), username=user, key_filename=key,
          look_for_keys=False, allow_agent=False, timeout=20)
t = c.get_transport()
ch = t.open_session()
if pty == "1":
    ch.get_pty()
if kind == "exec":
    ch.exec_command(arg)
elif kind == "subsystem":
    ch.invoke_subsystem(arg)
def read():
    buf = b""
    while True:
        d = ch.recv(4096)
        if not d:
            break
        buf += d
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            say("out", line.decode(errors="replace").rstrip("\r"))
    ch.status_event.wait(30)
    say("closed", ch.exit_status)
threading.Thread(target=read, daemon=True).start()
for line in sys.stdin:
    words = line.split()
    if words[0] == "signal":
        m = paramiko.Message()
        m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
        m.add_int(ch.remote_chanid)
        m.add_string("signal")
        m.add_boolean(False)
        m.add_string(words[1])
        t._send_user_message(m)
    elif words[0] == "close":
        ch.close()
    say("done", words[0])
"#;

struct Driver {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Driver {
    /// `kind` is exec or subsystem, `arg` the command or subsystem name.
    fn start(srv: &Server, user: &str, kind: &str, arg: &str, pty: bool) -> Driver {
        let mut child = Command::new(PYTHON)
            .args(["-c", DRIVER, &srv.port.to_string()])
            .arg(&srv.client_key)
            .args([user, kind, arg, if pty { "1" } else { "0" }])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Driver {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        let verb = command.split(' ').next().unwrap_or_default();
        let done = format!("done {verb}");
        assert!(
            self.wait_for(&done, Duration::from_secs(10)).is_some(),
            "driver did not take {command}: {:?}",
            self.seen
        );
    }

    /// The first line (seen before or arriving within `timeout`) starting with
    /// `prefix`, without it.
    fn wait_for(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
                return Some(l[prefix.len()..].trim().to_string());
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None;
                }
            }
        }
    }

    /// The number after `out NAME ` in the session's output.
    fn pid(&mut self, name: &str) -> i32 {
        let p = self
            .wait_for(&format!("out {name} "), Duration::from_secs(20))
            .unwrap_or_else(|| panic!("no {name} pid: {:?}", self.seen));
        p.parse().unwrap()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready(users: &[&str]) -> bool {
    for u in users {
        if skip_unless_root_with(u) {
            return false;
        }
    }
    if !Path::new(PYTHON).exists()
        || !Command::new(PYTHON)
            .args(["-c", "import paramiko"])
            .status()
            .is_ok_and(|s| s.success())
    {
        skip("python3-paramiko is not installed (run .ci/run)");
        return false;
    }
    true
}

/// `state` field of /proc/PID/stat, if the process exists.
fn proc_state(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().next().map(str::to_string)
}

/// Alive: exists and is not a zombie.
fn running(pid: i32) -> bool {
    proc_state(pid).is_some_and(|s| s != "Z")
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// Kill a process this test caused (by pid, after checking it is still `sleep`
/// owned by `uid`, so a reused number is left alone).
fn kill_sleep(pid: i32, uid: u32) {
    use std::os::unix::fs::MetadataExt;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let owner = std::fs::metadata(format!("/proc/{pid}")).map(|m| m.uid());
    if comm.trim() == "sleep" && owner.is_ok_and(|o| o == uid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn uid_gid(user: &str) -> (u32, u32) {
    let u = nix::unistd::User::from_name(user).unwrap().unwrap();
    (u.uid.as_raw(), u.gid.as_raw())
}

/// Start another user's process on pid `target` (free now), leading its own
/// session and process group there, by steering the kernel's next pid.
/// `None` if the number could not be had (it is still taken, or other processes
/// kept getting it first).
fn steal_pid(target: i32, user: &str) -> Option<Child> {
    let (uid, gid) = uid_gid(user);
    for _ in 0..200 {
        if Path::new(&format!("/proc/{target}")).exists() {
            return None;
        }
        std::fs::write("/proc/sys/kernel/ns_last_pid", (target - 1).to_string()).ok()?;
        // setsid(1) calls setsid() itself when not a group leader, so the
        // victim keeps the pid it was started with.
        let mut victim = Command::new("setsid")
            .args(["sleep", "300"])
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        if victim.id() as i32 == target {
            // Until setsid has run, it is still in our group.
            let sid_is_target = wait_until(Duration::from_secs(5), || {
                nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(target)))
                    == Ok(nix::unistd::Pid::from_raw(target))
            });
            if sid_is_target {
                return Some(victim);
            }
        }
        let _ = victim.kill();
        let _ = victim.wait();
    }
    None
}

/// The attack: the leader of A's session exits and is reaped while A keeps
/// the channel open (a process that left the session holds its output);
/// B's process takes the leader's number, in a session and group of its own;
/// then A sends `signal KILL` and closes the channel.
#[test]
fn signals_and_hang_ups_never_reach_a_process_that_took_the_leaders_number() {
    if !ready(&[TEST_USER, TEST_USER2]) {
        return;
    }
    let srv = Server::start("");
    let mut a = Driver::start(
        &srv,
        TEST_USER,
        "exec",
        "echo leader $$; setsid -f sh -c 'echo escaped $$; exec sleep 60'",
        false,
    );
    let leader = a.pid("leader");
    let escaped = a.pid("escaped");
    let (uid_a, _) = uid_gid(TEST_USER);
    assert!(
        wait_until(Duration::from_secs(10), || !running(leader)),
        "the leader {leader} did not exit"
    );
    // Let the daemon reap it if it is going to.
    std::thread::sleep(Duration::from_millis(300));
    let held = Path::new(&format!("/proc/{leader}")).exists();
    let mut verdicts = Vec::new();
    for step in ["signal KILL", "close"] {
        let victim = steal_pid(leader, TEST_USER2);
        let Some(mut victim) = victim else {
            // The number is still the leader's (a zombie rsshd has not reaped):
            // nobody can be hit by it. Send the request anyway.
            a.send(step);
            std::thread::sleep(Duration::from_secs(3));
            verdicts.push(format!(
                "{step}: leader's pid {leader} still taken, nobody to hit"
            ));
            continue;
        };
        a.send(step);
        // The hang-up's SIGKILL comes after a 2 s grace.
        std::thread::sleep(Duration::from_secs(3));
        let alive = victim.try_wait().unwrap().is_none();
        let _ = victim.kill();
        let _ = victim.wait();
        assert!(
            alive,
            "{step} on {TEST_USER}'s channel killed {TEST_USER2}'s process {leader}, which \
             had taken the number of {TEST_USER}'s reaped session leader\n{}",
            srv.log()
        );
        verdicts.push(format!(
            "{step}: {TEST_USER2}'s process on pid {leader} survived"
        ));
    }
    kill_sleep(escaped, uid_a);
    eprintln!("leader {leader} held as a zombie: {held}; {verdicts:?}");
}

fn pam_ready() -> bool {
    if let Err(e) = rsshd::host::pam::available() {
        skip(&e);
        return false;
    }
    true
}

#[test]
fn signal_kill_and_hang_ups_leave_the_pam_session_to_close() {
    if !ready(&[TEST_USER]) || !pam_ready() {
        return;
    }
    let pam = PamService::new(&temp_dir("sigpam"), "sigpam");
    // `SessionCleanup kill`: a channel's close ends every process of its session.
    let srv = Server::start(&format!(
        "UsePAM yes\nPAMServiceName {}\nSessionCleanup kill",
        pam.name
    ));
    let close = format!("close_session {TEST_USER}");
    let open = format!("open_session {TEST_USER}");

    // The client's signal KILL reaches the program, not the helper.
    let mut d = Driver::start(
        &srv,
        TEST_USER,
        "exec",
        "echo leader $$; exec sleep 100",
        false,
    );
    let program = d.pid("leader");
    assert_eq!(pam.count(&open), 1);
    d.send("signal KILL");
    assert_eq!(
        d.wait_for("signal ", Duration::from_secs(10)).as_deref(),
        Some("KILL"),
        "{:?}\n{}",
        d.seen,
        srv.log()
    );
    assert!(!running(program), "the program survived signal KILL");
    // One PAM session per connection, as sshd: it closes with the connection.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pam.count(&close), 0, "closed before the connection ended");
    drop(d);
    assert!(
        wait_until(Duration::from_secs(10), || pam.count(&close) == 1),
        "signal KILL: pam_close_session never ran\n{}",
        srv.log()
    );

    // A program that ignores SIGHUP is killed after the grace when the channel
    // closes; the helper is not, and closes the PAM session with the connection.
    let mut d = Driver::start(
        &srv,
        TEST_USER,
        "exec",
        "trap '' HUP; echo leader $$; sleep 100; echo never",
        true,
    );
    let program = d.pid("leader");
    d.send("close");
    assert!(
        wait_until(Duration::from_secs(10), || !running(program)),
        "the hang-up left the program running"
    );
    drop(d);
    assert!(
        wait_until(Duration::from_secs(10), || pam.count(&close) == 2),
        "hang-up: pam_close_session never ran\n{}",
        srv.log()
    );
    assert_eq!(pam.count(&open), 2);
}

#[test]
fn signals_to_forced_commands_and_subsystems_are_refused_like_sshd() {
    if !ready(&[TEST_USER, TEST_USER2]) {
        return;
    }
    let dir = temp_dir("sigrefuse");
    let script = dir.join("sleeper.sh");
    std::fs::write(&script, "#!/bin/sh\necho leader $$\nexec sleep 30\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let srv = Server::start_with_tail(
        &format!("Subsystem sleeper {}", script.display()),
        &format!(
            "Match User {TEST_USER2}\n  ForceCommand {}",
            script.display()
        ),
    );
    let (uid_a, _) = uid_gid(TEST_USER);
    let (uid_b, _) = uid_gid(TEST_USER2);
    for (user, uid, kind, arg, words) in [
        (TEST_USER, uid_a, "subsystem", "sleeper", "subsystem"),
        (TEST_USER2, uid_b, "exec", "sleep 1", "forced-command"),
    ] {
        let mut d = Driver::start(&srv, user, kind, arg, false);
        let program = d.pid("leader");
        d.send("signal INT");
        let line = format!("session_signal_req: refusing to send signal INT to {words} session");
        assert!(
            srv.wait_log(&line, Duration::from_secs(10)),
            "no refusal logged: {line}\n{}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            running(program),
            "signal INT reached the {words} session's program"
        );
        kill_sleep(program, uid);
    }
}

#[test]
fn a_client_signal_reaches_the_program() {
    if !ready(&[TEST_USER]) || !pam_ready() {
        return;
    }
    let pam = PamService::new(&temp_dir("sigok"), "sigok");
    for config in [
        "UsePAM no".to_string(),
        format!("UsePAM yes\nPAMServiceName {}", pam.name),
    ] {
        let srv = Server::start(&config);
        for pty in [false, true] {
            let mut d = Driver::start(
                &srv,
                TEST_USER,
                "exec",
                "echo leader $$; exec sleep 100",
                pty,
            );
            let program = d.pid("leader");
            d.send("signal INT");
            assert_eq!(
                d.wait_for("signal ", Duration::from_secs(10)).as_deref(),
                Some("INT"),
                "{config}, pty {pty}: {:?}\n{}",
                d.seen,
                srv.log()
            );
            assert!(d.wait_for("closed", Duration::from_secs(10)).is_some());
            assert!(!running(program));
        }
    }
}
