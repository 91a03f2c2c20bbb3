//! Issue 11, attack 3: one logged-in user must not be able to take the daemon down
//! for everyone. Each test performs the attack with paramiko (tests/limits_flood.py)
//! as `rsshd-test` against a real rsshd running as root, and checks that the excess
//! is refused and logged, that the daemon's memory or descriptors stay bounded, and
//! that `rsshd-test2` can still log in while a session of theirs opened before the
//! attack keeps working.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::*;

/// The environment variables one session may set, as sshd (session.c).
const ENV_MAX: u64 = 128;
/// Channels one connection may have open (src/connection/limits.rs).
const CHANNELS_MAX: u64 = 128;
/// `tcpip-forward` listeners one connection may hold (src/connection/limits.rs).
const FORWARDS_MAX: u64 = 256;

/// Skip unless root with both test users, python3 and paramiko; true if skipped.
fn skip_unless_ready() -> bool {
    if skip_unless_root_with(TEST_USER) || skip_unless_root_with(TEST_USER2) {
        return true;
    }
    if skip_without(&["python3"]) {
        return true;
    }
    let ok = Command::new("python3")
        .args(["-c", "import paramiko"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip("python3 has no paramiko (.ci/run installs it)");
        return true;
    }
    false
}

/// One run of tests/limits_flood.py: its JSON lines, and a way to let it go on.
struct Flood {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Flood {
    fn start(srv: &Server, mode: &str, user: &str, args: &[u64]) -> Flood {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/limits_flood.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(mode)
            .arg(srv.port.to_string())
            .arg(user)
            .arg(&srv.client_key)
            .args(args.iter().map(u64::to_string))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Flood {
            child,
            stdin,
            lines,
        }
    }

    /// The next report, which must name `phase`.
    fn next(&self, phase: &str, srv: &Server, timeout: Duration) -> serde_json::Value {
        let line = self.lines.recv_timeout(timeout).unwrap_or_else(|_| {
            panic!(
                "the flood script reported nothing for {phase}; log:\n{}",
                tail(&srv.log())
            )
        });
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
        assert_eq!(v["phase"], phase, "{v}");
        v
    }

    /// Let the script go on past its current pause.
    fn go(&mut self) {
        let _ = self.stdin.write_all(b"\n");
        let _ = self.stdin.flush();
    }

    fn finish(mut self) {
        self.go();
        let end = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a log, for failure messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// The daemon's descriptor limit (it raises its soft limit to the hard one).
fn fd_limit(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|n| n.parse().ok())
        })
        .expect("Max open files of the daemon")
}

/// A session of `rsshd-test2` running `cat`, opened before an attack: each
/// `echo` must come back through it.
struct OtherSession {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl OtherSession {
    fn open(srv: &Server) -> OtherSession {
        let mut child = srv
            .ssh(TEST_USER2)
            .arg("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh cat");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut s = OtherSession {
            child,
            stdin,
            lines,
        };
        s.echo("before the attack", srv);
        s
    }

    fn echo(&mut self, text: &str, srv: &Server) {
        writeln!(self.stdin, "{text}").expect("write to the other user's session");
        self.stdin.flush().expect("flush");
        let back = self.lines.recv_timeout(Duration::from_secs(20));
        assert_eq!(
            back.as_deref(),
            Ok(text),
            "the other user's session stopped working; log:\n{}",
            tail(&srv.log())
        );
    }
}

impl Drop for OtherSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The other user can still log in and run a command.
fn assert_other_user_logs_in(srv: &Server) {
    let out = srv.ssh_run(TEST_USER2, "echo other-user-ok", b"");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("other-user-ok"),
        "{TEST_USER2} could not log in during the attack: {}; log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&srv.log())
    );
}

#[test]
fn env_flood_keeps_memory_flat_and_a_session_gets_128_variables() {
    if skip_unless_ready() {
        return;
    }
    // Debian's stock line: enough to send any number of LC_ variables.
    let srv = Server::start("AcceptEnv LANG LC_*");
    let pid = srv.pid();
    let mut other = OtherSession::open(&srv);
    let before = rss_kib(pid);
    // 20,000 variables of 16 KiB on one session: 312 MiB if all were kept.
    let mut flood = Flood::start(&srv, "env", TEST_USER, &[20_000, 16 * 1024]);
    let flooded = flood.next("flooded", &srv, Duration::from_secs(240));
    let grown = rss_kib(pid).saturating_sub(before);
    eprintln!("env flood: daemon RSS {before} KiB -> +{grown} KiB");
    assert_eq!(flooded["last_accepted"], false, "{flooded}");
    assert!(
        srv.log().contains("bytes of env vars"),
        "refusal not logged:\n{}",
        tail(&srv.log())
    );
    assert!(
        grown < 48 * 1024,
        "the daemon grew by {grown} KiB under an env flood"
    );
    flood.go();
    let counted = flood.next("counted", &srv, Duration::from_secs(60));
    eprintln!("env one by one: {counted}");
    assert_eq!(counted["accepted"], ENV_MAX, "{counted}");
    assert_eq!(counted["first_refused"], ENV_MAX, "{counted}");
    assert_eq!(counted["refused_after_first"], true, "{counted}");
    assert_eq!(counted["in_session"], ENV_MAX, "{counted}");
    assert_eq!(counted["exit"], 0, "{counted}");
    assert!(
        srv.log().contains(&format!(
            "Ignoring env request LC_V{ENV_MAX}: too many env vars"
        )),
        "refusal not logged:\n{}",
        tail(&srv.log())
    );
    other.echo("after the env flood", &srv);
    assert_other_user_logs_in(&srv);
    flood.finish();
}

#[test]
fn tcpip_forward_flood_is_refused_past_the_caps_and_others_keep_working() {
    if skip_unless_ready() {
        return;
    }
    let srv = Server::start("");
    let pid = srv.pid();
    let mut other = OtherSession::open(&srv);
    let fds_before = open_fds(pid);
    // The per-user share of the daemon's descriptors (src/connection/limits.rs).
    let user_cap = fd_limit(pid) / 4;
    // 10,000 requests, as many as it takes today to use every descriptor.
    let flood = Flood::start(&srv, "forward", TEST_USER, &[34, 300]);
    let r = flood.next("forwarded", &srv, Duration::from_secs(400));
    let fds = open_fds(pid);
    eprintln!(
        "tcpip-forward flood: {r}; daemon descriptors {fds_before} -> {fds} (limit {}, user cap {user_cap})",
        fd_limit(pid)
    );
    let ok = r["ok"].as_u64().unwrap_or(0);
    assert!(
        r["refused"].as_u64().unwrap_or(0) > 0,
        "nothing was refused: {r}"
    );
    assert_eq!(
        r["first_refused_at"],
        FORWARDS_MAX + 1,
        "the first connection must be refused past its cap: {r}"
    );
    assert!(ok > 0 && ok * 2 <= user_cap, "{ok} listeners granted: {r}");
    assert!(
        fds <= fds_before + user_cap + 64,
        "the daemon holds {fds} descriptors (from {fds_before}; user cap {user_cap})"
    );
    let log = srv.log();
    assert!(
        log.contains("refused remote port forward") && log.contains("descriptors"),
        "refusals not logged:\n{}",
        tail(&log)
    );
    assert_other_user_logs_in(&srv);
    other.echo("after the tcpip-forward flood", &srv);
    flood.finish();
    // Once the attacker is gone, its descriptors are too.
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while open_fds(pid) > fds_before + 16 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(open_fds(pid) <= fds_before + 16, "descriptors not released");
}

#[test]
fn channel_open_flood_is_refused_past_the_cap() {
    if skip_unless_ready() {
        return;
    }
    let srv = Server::start("");
    let pid = srv.pid();
    let mut other = OtherSession::open(&srv);
    let fds_before = open_fds(pid);
    let mut flood = Flood::start(&srv, "channels", TEST_USER, &[2000]);
    let r = flood.next("opened", &srv, Duration::from_secs(300));
    let fds = open_fds(pid);
    eprintln!("channel flood: {r}; daemon descriptors {fds_before} -> {fds}");
    assert_eq!(r["opened"], CHANNELS_MAX, "{r}");
    assert_eq!(r["first_refused_at"], CHANNELS_MAX, "{r}");
    assert!(
        fds <= fds_before + CHANNELS_MAX + 16,
        "the daemon holds {fds} descriptors (from {fds_before})"
    );
    assert!(
        srv.log().contains("channels open on this connection"),
        "refusal not logged:\n{}",
        tail(&srv.log())
    );
    assert_other_user_logs_in(&srv);
    other.echo("after the channel flood", &srv);
    flood.go();
    // Closing channels makes room again.
    let again = flood.next("reopened", &srv, Duration::from_secs(60));
    assert_eq!(again["opened"], 10, "{again}");
    flood.finish();
}

#[test]
fn a_client_ignoring_the_window_is_disconnected_and_memory_stays_flat() {
    if skip_unless_ready() {
        return;
    }
    let srv = Server::start("");
    let pid = srv.pid();
    let mut other = OtherSession::open(&srv);
    let before = rss_kib(pid);
    // 256 MiB pushed into a session channel whose data nobody reads.
    let flood = Flood::start(&srv, "window", TEST_USER, &[256]);
    let r = flood.next("pushed", &srv, Duration::from_secs(120));
    let grown = rss_kib(pid).saturating_sub(before);
    eprintln!("window flood: {r}; daemon RSS {before} KiB -> +{grown} KiB");
    assert_eq!(r["active"], false, "the connection was not ended: {r}");
    assert!(grown < 32 * 1024, "the daemon grew by {grown} KiB");
    assert!(
        srv.log().contains("peer ignored channel window"),
        "not logged:\n{}",
        tail(&srv.log())
    );
    other.echo("after the window flood", &srv);
    assert_other_user_logs_in(&srv);
    flood.finish();
}

#[test]
fn many_connections_of_one_user_cannot_queue_without_bound() {
    if skip_unless_ready() {
        return;
    }
    let srv = Server::start("");
    let pid = srv.pid();
    let mut other = OtherSession::open(&srv);
    let before = rss_kib(pid);
    // 48 connections x 10 sessions that never read: 2 MiB of window each at
    // open, 960 MiB in all, more with the top-ups a lone channel gets.
    let flood = Flood::start(&srv, "queue", TEST_USER, &[48, 10]);
    let r = flood.next("queued", &srv, Duration::from_secs(300));
    // What the client sent may still sit in socket buffers, read at the pace of
    // a throttled connection: watch until the daemon stops growing.
    let mut peak = rss_kib(pid);
    let mut still = 0;
    let end = std::time::Instant::now() + Duration::from_secs(120);
    while still < 5 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1));
        let now = rss_kib(pid);
        if now > peak + 2048 {
            still = 0;
        } else {
            still += 1;
        }
        peak = peak.max(now);
    }
    let grown = peak.saturating_sub(before);
    eprintln!("queue flood: {r}; daemon RSS {before} KiB -> +{grown} KiB at the peak");
    // The daemon holds at most 256 MiB for one user (src/connection/limits.rs),
    // plus what the allocator keeps of what it freed.
    assert!(grown < 384 * 1024, "the daemon grew by {grown} KiB");
    assert!(
        srv.log().contains("MiB of data queued for this user"),
        "no connection was ended:\n{}",
        tail(&srv.log())
    );
    other.echo("after the queue flood", &srv);
    assert_other_user_logs_in(&srv);
    flood.finish();
}
