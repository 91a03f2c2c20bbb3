//! Per-channel flow control, driven by the real OpenSSH client:
//!
//! - traffic in both directions through one channel (`ssh -T host cat < 100MB |
//!   sha256sum`) is not slowed down: measured against the reference
//!   `/usr/sbin/sshd` in the same test, on the same data;
//! - a channel whose reader stops holds back its own channel only: a 1 GiB upload
//!   into it stops at about a window, the daemon's memory stays flat, and other
//!   sessions over the same connection (an OpenSSH ControlMaster) keep moving in
//!   both directions meanwhile.

mod session_common;
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::*;

use session_common::{RefSshd, SSHD};
const DUPLEX_BYTES: usize = 100 * 1024 * 1024;

/// `len` bytes that gzip cannot shrink much and that differ along the file, so a
/// reordered or lost chunk changes the checksum (xorshift64).
fn write_input(path: &Path, len: usize) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(len);
    std::fs::write(path, buf).expect("write input");
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `ssh -T host cat < input | sha256sum` against `port`: the time it took, or a
/// failure if the echoed data was not the input.
fn duplex(port: u16, key: &Path, input: &Path, want: &str) -> Duration {
    let ssh: Vec<String> = ssh_base_args(port, key)
        .into_iter()
        .map(|a| format!("'{a}'"))
        .collect();
    let script = format!(
        "ssh {} -T {TEST_USER}@127.0.0.1 cat < '{}' | sha256sum",
        ssh.join(" "),
        input.display()
    );
    let t = Instant::now();
    let out = Command::new("timeout")
        .args(["300", "sh", "-c", &script])
        .output()
        .expect("run ssh");
    let took = t.elapsed();
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        got.split_whitespace().next(),
        Some(want),
        "port {port}: echoed data differs; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

#[test]
fn duplex_through_one_channel_is_as_fast_as_sshd() {
    if skip_without(&["ssh", "ssh-keygen", SSHD, "sha256sum", "timeout"])
        || skip_unless_root_with(TEST_USER)
    {
        return;
    }
    let srv = Server::start("PrintMotd no\nPrintLastLog no");
    let dir = temp_dir("flow-duplex");
    let reference = RefSshd::start(
        &dir,
        &srv.dir.join("authorized_keys"),
        "UsePAM no\nPrintMotd no\nPrintLastLog no",
    );
    let input = dir.join("input");
    write_input(&input, DUPLEX_BYTES);
    let want = sha256_of(&input);
    // Interleaved, best of two each: the machine is shared, so a single run of
    // either can be slowed by something else.
    let (mut ours, mut theirs) = (Duration::MAX, Duration::MAX);
    for _ in 0..2 {
        theirs = theirs.min(duplex(reference.port, &srv.client_key, &input, &want));
        ours = ours.min(duplex(srv.port, &srv.client_key, &input, &want));
    }
    eprintln!("100 MiB duplex: rsshd {ours:?}, sshd {theirs:?}");
    // Loose: rsshd measured 0.8-0.85x sshd's time here, on a loaded machine
    // (5.2 s against 6.2 s). Pausing the connection per packet while the channel
    // was backed up, it took 16.7 s against sshd's 5.8 s on the same machine
    // (8-11 s against 0.9-1.5 s unloaded), outside this bound.
    assert!(
        ours <= theirs * 2 + Duration::from_secs(1),
        "rsshd took {ours:?} for what sshd did in {theirs:?}"
    );
}

/// rsshd's resident memory in KiB (one process carries every connection).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// An OpenSSH ControlMaster connection to `srv`, and sessions over it.
struct Master {
    child: Child,
    socket: PathBuf,
    args: Vec<String>,
}

impl Master {
    fn start(srv: &Server, dir: &Path) -> Master {
        let socket = dir.join("ctl");
        let mut args = ssh_base_args(srv.port, &srv.client_key);
        args.extend(["-S".into(), socket.display().to_string()]);
        let child = Command::new("ssh")
            .args(&args)
            .args(["-M", "-N", "-o", "ControlPersist=no"])
            .arg(format!("{TEST_USER}@127.0.0.1"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ControlMaster");
        let m = Master {
            child,
            socket,
            args,
        };
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            let ok = m
                .session(&["-O", "check"], None)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return m;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("ControlMaster did not come up; log:\n{}", srv.log());
    }

    /// `ssh -S socket [flags] user@host [command]`.
    fn session(&self, flags: &[&str], command: Option<&str>) -> Command {
        let mut c = Command::new("ssh");
        c.args(&self.args)
            .args(flags)
            .arg(format!("{TEST_USER}@127.0.0.1"));
        if let Some(cmd) = command {
            c.arg(cmd);
        }
        c
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bytes that `ssh` sends from a 1 GiB upload, counted as it takes them.
struct Upload {
    child: Child,
    sent: Arc<AtomicU64>,
}

impl Drop for Upload {
    fn drop(&mut self) {
        // The writer thread's blocked write then fails and it ends.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn upload(mut cmd: Command) -> Upload {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start upload");
    let mut stdin = child.stdin.take().expect("stdin");
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    std::thread::spawn(move || {
        let chunk = vec![0x5au8; 64 * 1024];
        for _ in 0..(1u64 << 30) / chunk.len() as u64 {
            if stdin.write_all(&chunk).is_err() {
                return;
            }
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });
    Upload { child, sent }
}

#[test]
fn a_stalled_reader_holds_back_its_own_channel_only() {
    if skip_without(&["ssh", "ssh-keygen"]) || skip_unless_root_with(TEST_USER) {
        return;
    }
    let srv = Server::start("PrintMotd no\nPrintLastLog no");
    let dir = temp_dir("flow-stalled");
    let master = Master::start(&srv, &dir);
    let base = rss_kib(srv.pid());

    // Reads 1 MiB, then keeps its stdin open and never reads again.
    let mut stalled =
        upload(master.session(&["-T"], Some("head -c 1048576 >/dev/null; exec sleep 600")));
    // Wait until the upload stops moving.
    let end = Instant::now() + Duration::from_secs(60);
    let mut last = (0, Instant::now());
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        let now = stalled.sent.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if now > 0 && last.1.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let held = stalled.sent.load(Ordering::Relaxed);
    assert!(
        held >= 1 << 20,
        "the reader's first MiB did not get through"
    );
    // What the client could send: the 1 MiB read, the channel's 2 MiB window,
    // and pipe and socket buffers on both ends; far from the 1 GiB offered.
    assert!(
        held < 64 << 20,
        "{held} bytes of the upload went out to a reader that stopped"
    );
    let stalled_rss = rss_kib(srv.pid());

    // The same connection still carries other sessions, both ways, at full speed.
    let t = Instant::now();
    let down = master
        .session(&["-T"], Some("head -c 20000000 /dev/zero"))
        .output()
        .expect("download");
    assert_eq!(down.stdout.len(), 20_000_000, "download over the master");
    let up = run_with_input(
        &mut master.session(&["-T"], Some("wc -c")),
        &vec![7u8; 20_000_000],
    );
    assert_eq!(
        String::from_utf8_lossy(&up.stdout).trim(),
        "20000000",
        "upload over the master"
    );
    let other = t.elapsed();
    assert!(
        other < Duration::from_secs(30),
        "other channels of the connection were held back: {other:?}"
    );

    // Still stalled, still flat.
    std::thread::sleep(Duration::from_secs(2));
    let later = stalled.sent.load(Ordering::Relaxed);
    let rss = rss_kib(srv.pid());
    eprintln!(
        "stalled upload: {held} then {later} bytes sent; rsshd RSS {base} KiB idle, \
         {stalled_rss} KiB stalled, {rss} KiB after 40 MB on other channels"
    );
    assert!(
        later - held < 1 << 20,
        "the stalled channel kept taking data: {held} then {later}"
    );
    assert!(
        rss.saturating_sub(base) < 48 * 1024,
        "rsshd grew from {base} KiB to {rss} KiB"
    );
    assert!(
        matches!(stalled.child.try_wait(), Ok(None)),
        "the stalled session ended"
    );
}
