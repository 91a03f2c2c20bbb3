//! Issue 11, attack 1: a user's authorized_keys file that is not a key file (a
//! symlink to /proc/kmsg or /proc/self/pagemap, a FIFO or /dev/zero swapped in
//! between check and read, a huge file, a root-only file) must not freeze, bloat
//! or inform the daemon. Each test runs a real rsshd as root with two real users:
//! `rsshd-test` attacks with its own key file while `rsshd-test2` keeps a live
//! session, which must keep answering throughout.
//!
//! Key files live in a per-test directory named by `AuthorizedKeysFile
//! DIR/%u/authorized_keys`, owned by each user as sshd's StrictModes wants, so the
//! real home directories are never touched.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Server, TEST_USER, TEST_USER2, skip_unless_root_with};

const ATTACKER: &str = TEST_USER;
const VICTIM: &str = TEST_USER2;

fn skip() -> bool {
    skip_unless_root_with(ATTACKER) || skip_unless_root_with(VICTIM)
}

fn ids(user: &str) -> (nix::unistd::Uid, nix::unistd::Gid) {
    let u = nix::unistd::User::from_name(user)
        .unwrap()
        .expect("test user");
    (u.uid, u.gid)
}

/// A key directory per user under a fresh test directory; returns the base.
fn key_dirs() -> PathBuf {
    let base = support::temp_dir("hostile-keys");
    for user in [ATTACKER, VICTIM] {
        let d = base.join(user);
        std::fs::create_dir(&d).unwrap();
        let (uid, gid) = ids(user);
        nix::unistd::chown(&d, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    base
}

/// Write `text` as `user`'s file `name` in its key directory (owned by the user).
fn user_file(base: &Path, user: &str, name: &str, text: &str) -> PathBuf {
    let p = base.join(user).join(name);
    std::fs::write(&p, text).unwrap();
    let (uid, gid) = ids(user);
    nix::unistd::chown(&p, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// An rsshd reading `base/%u/authorized_keys`; the victim's file lists the
/// client key, the attacker's is left to the test.
fn server(base: &Path, extra: &str) -> Server {
    let srv = Server::start(&format!(
        "AuthorizedKeysFile {}/%u/authorized_keys\n{extra}",
        base.display()
    ));
    let public = std::fs::read_to_string(srv.client_key.with_extension("pub")).unwrap();
    user_file(base, VICTIM, "authorized_keys", &public);
    srv
}

fn public_key(srv: &Server) -> String {
    std::fs::read_to_string(srv.client_key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// A session of the victim that echoes each line back: proof that the daemon
/// still serves other users.
struct Live {
    child: Child,
    input: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Live {
    fn start(srv: &Server) -> Live {
        let mut child = srv
            .ssh(VICTIM)
            .arg("while IFS= read -r l; do echo \"echo:$l\"; done")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut live = Live {
            child,
            input,
            lines,
        };
        assert!(live.echoes("start"), "the victim's session did not start");
        live
    }

    /// Whether the session echoes `token` within 5 s.
    fn echoes(&mut self, token: &str) -> bool {
        if writeln!(self.input, "{token}").is_err() {
            return false;
        }
        let want = format!("echo:{token}");
        let end = Instant::now() + Duration::from_secs(5);
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l == want => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Try `n` key logins as the attacker, `at_once` at a time; each gets 20 s (the
/// daemon's deadline for reading a user's files is 10 s). Returns each exit
/// status, `None` for a client that was still hanging and had to be killed.
fn attack_logins(srv: &Server, n: usize, at_once: usize) -> Vec<Option<ExitStatus>> {
    let mut out = Vec::new();
    let mut left = n;
    while left > 0 {
        let batch = left.min(at_once);
        left -= batch;
        let mut children: Vec<Child> = (0..batch)
            .map(|_| {
                srv.ssh(ATTACKER)
                    .arg("echo in")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let end = Instant::now() + Duration::from_secs(20);
        for c in &mut children {
            let mut status = None;
            while Instant::now() < end {
                if let Ok(Some(st)) = c.try_wait() {
                    status = Some(st);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if status.is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
            out.push(status);
        }
    }
    out
}

/// Every attempt ended on its own, and none got in.
fn assert_all_refused(results: &[Option<ExitStatus>], srv: &Server) {
    for (i, r) in results.iter().enumerate() {
        match r {
            None => panic!("login attempt {i} hung; log:\n{}", srv.log()),
            Some(st) => assert!(!st.success(), "login attempt {i} got in"),
        }
    }
}

/// Whether a new TCP connection gets the SSH banner within 3 s.
fn banner_promptly(srv: &Server) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", srv.port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(8).any(|w| w == b"SSH-2.0-") {
                    return true;
                }
            }
        }
    }
    false
}

/// The daemon's peak resident memory so far (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(u64::MAX)
}

/// What every attack test checks afterwards: the victim's session, a new
/// connection's banner, and (if `memory_budget_kib`) the daemon's peak memory.
fn assert_daemon_unharmed(srv: &Server, live: &mut Live, hwm_before: u64, budget_kib: u64) {
    assert!(
        live.echoes("after"),
        "the victim's live session stopped answering; log:\n{}",
        srv.log()
    );
    assert!(banner_promptly(srv), "no banner for a new connection");
    let hwm = peak_rss_kib(srv.pid());
    eprintln!(
        "daemon peak RSS: {hwm_before} KiB before, {hwm} KiB after (+{} KiB)",
        hwm.saturating_sub(hwm_before)
    );
    assert!(
        hwm.saturating_sub(hwm_before) < budget_kib,
        "the daemon's memory grew from {hwm_before} to {hwm} KiB"
    );
}

/// While `stop` is false, make `link` name `a`, then `b`, then `a` ...: two
/// symlinks exchanged atomically (renameat2 RENAME_EXCHANGE, one system call per
/// swap), the user racing a check by path as fast as the kernel allows.
fn swap_loop(
    link: PathBuf,
    a: PathBuf,
    b: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let spare = link.with_extension("spare");
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_file(&spare);
        std::os::unix::fs::symlink(&a, &link).unwrap();
        std::os::unix::fs::symlink(&b, &spare).unwrap();
        let mut swaps = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let r = nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &link,
                nix::fcntl::AT_FDCWD,
                &spare,
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            );
            if r.is_ok() {
                swaps += 1;
            }
        }
        swaps
    })
}

/// The user's authorized_keys alternates between a harmless key file and `bad`
/// while the attacker logs in again and again; then the daemon must be unharmed.
fn race_attack(bad: &Path, budget_kib: u64) {
    let base = key_dirs();
    let srv = server(&base, "");
    let mut live = Live::start(&srv);
    // The harmless file sits 1000 directories deep: a checker that walks the
    // path (StrictModes by path stats every directory above the file) takes
    // milliseconds between its check and its read, a window the swapping below
    // hits even on a loaded machine, as a real attacker would arrange it.
    let (uid, gid) = ids(ATTACKER);
    let mut deep = base.join(ATTACKER);
    for _ in 0..1000 {
        deep.push("d");
        std::fs::create_dir(&deep).unwrap();
        nix::unistd::chown(&deep, Some(uid), Some(gid)).unwrap();
    }
    let harmless = deep.join("harmless");
    std::fs::write(
        &harmless,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti not-this-one\n",
    )
    .unwrap();
    nix::unistd::chown(&harmless, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&harmless, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = base.join(ATTACKER).join("authorized_keys");
    let before = peak_rss_kib(srv.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = swap_loop(link, harmless, bad.to_path_buf(), Arc::clone(&stop));
    let results = attack_logins(&srv, 60, 6);
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 100, "the file was swapped only {swaps} times");
    assert_all_refused(&results, &srv);
    assert_daemon_unharmed(&srv, &mut live, before, budget_kib);
}

#[test]
fn kmsg_symlink_neither_freezes_the_daemon_nor_stops_sigterm() {
    if skip() {
        return;
    }
    let base = key_dirs();
    let mut srv = server(&base, "");
    let mut live = Live::start(&srv);
    let ak = base.join(ATTACKER).join("authorized_keys");
    std::os::unix::fs::symlink("/proc/kmsg", &ak).unwrap();
    let before = peak_rss_kib(srv.pid());
    // More attempts at once than the daemon has worker threads.
    let results = attack_logins(&srv, 8, 8);
    assert_all_refused(&results, &srv);
    assert_daemon_unharmed(&srv, &mut live, before, 32 * 1024);
    assert!(
        srv.log().contains(&format!(
            "Could not open user '{ATTACKER}' authorized keys '{}': Permission denied",
            ak.display()
        )),
        "{}",
        srv.log()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(srv.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        srv.wait_exit(Duration::from_secs(10)).is_some(),
        "SIGTERM did not stop the daemon"
    );
}

#[test]
fn pagemap_symlink_does_not_bloat_the_daemon() {
    if skip() {
        return;
    }
    let base = key_dirs();
    let srv = server(&base, "");
    let mut live = Live::start(&srv);
    let ak = base.join(ATTACKER).join("authorized_keys");
    // /proc/self is whoever opens it: the daemon itself.
    std::os::unix::fs::symlink("/proc/self/pagemap", &ak).unwrap();
    let before = peak_rss_kib(srv.pid());
    let results = attack_logins(&srv, 4, 4);
    assert_all_refused(&results, &srv);
    assert_daemon_unharmed(&srv, &mut live, before, 32 * 1024);
    // Refused as the user cannot open the daemon's pagemap, or as procfs.
    let log = srv.log();
    assert!(
        log.contains(&format!(
            "Could not open user '{ATTACKER}' authorized keys '{}': Permission denied",
            ak.display()
        )) || log.contains(&format!(
            "User '{ATTACKER}' authorized keys '{}' is not a regular file",
            ak.display()
        )),
        "{log}"
    );
}

#[test]
fn fifo_swapped_in_after_the_check_does_not_block_the_daemon() {
    if skip() {
        return;
    }
    let dir = support::temp_dir("hostile-fifo");
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    race_attack(&fifo, 32 * 1024);
}

#[test]
fn dev_zero_swapped_in_after_the_check_does_not_bloat_the_daemon() {
    if skip() {
        return;
    }
    race_attack(Path::new("/dev/zero"), 32 * 1024);
}

#[test]
fn huge_file_swapped_in_after_the_check_does_not_bloat_the_daemon() {
    if skip() {
        return;
    }
    // 1 GiB, sparse: costs no disk, but a reader that trusts the size it saw a
    // moment before holds it all in memory (one hit is +1 GiB of peak RSS).
    let dir = support::temp_dir("hostile-huge");
    let huge = dir.join("huge");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    std::fs::set_permissions(&huge, std::fs::Permissions::from_mode(0o644)).unwrap();
    race_attack(&huge, 32 * 1024);
}

#[test]
fn root_only_files_named_by_the_user_give_no_login_and_leak_nothing() {
    if skip() {
        return;
    }
    let base = key_dirs();
    let srv = server(&base, "");
    let mut live = Live::start(&srv);
    // A stand-in for root's own authorized_keys: root-only, and listing the very
    // key the attacker holds (so reading it as root would let the attacker
    // probe it), with a line whose options would be quoted in a log line.
    let secret_dir = base.join("root-only");
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = secret_dir.join("authorized_keys");
    std::fs::write(
        &secret,
        format!(
            "environment=\"RSSHD_LEAK_MARKER\" {}\n{}\n",
            public_key(&srv),
            public_key(&srv)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ak = base.join(ATTACKER).join("authorized_keys");
    for target in [secret.as_path(), Path::new("/etc/shadow")] {
        let _ = std::fs::remove_file(&ak);
        std::os::unix::fs::symlink(target, &ak).unwrap();
        let results = attack_logins(&srv, 2, 2);
        assert_all_refused(&results, &srv);
    }
    let before = peak_rss_kib(srv.pid());
    assert_daemon_unharmed(&srv, &mut live, before, 32 * 1024);
    let log = srv.log();
    assert!(
        log.contains(&format!(
            "Could not open user '{ATTACKER}' authorized keys '{}': Permission denied",
            ak.display()
        )),
        "{log}"
    );
    assert!(!log.contains("RSSHD_LEAK_MARKER"), "{log}");
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    for line in shadow.lines() {
        if let Some((_, rest)) = line.split_once(':')
            && rest.len() > 12
        {
            assert!(!log.contains(&rest[..12]), "shadow text in the log:\n{log}");
        }
    }
}

#[test]
fn group_writable_key_directory_is_refused_under_strict_modes() {
    if skip() {
        return;
    }
    let base = key_dirs();
    let dir = base.join(ATTACKER);
    let make = |extra: &str| {
        let srv = server(&base, extra);
        user_file(&base, ATTACKER, "authorized_keys", &public_key(&srv));
        srv
    };
    // Group root (not a private group of the user, which Debian's sshd would
    // tolerate), group-writable.
    let (uid, _) = ids(ATTACKER);
    let srv = make("");
    let mut live = Live::start(&srv);
    assert!(
        srv.ssh_run(ATTACKER, "true", b"").status.success(),
        "{}",
        srv.log()
    );
    nix::unistd::chown(&dir, Some(uid), Some(nix::unistd::Gid::from_raw(0))).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
    let results = attack_logins(&srv, 1, 1);
    assert_all_refused(&results, &srv);
    assert!(
        srv.log().contains(&format!(
            "Authentication refused: bad ownership or modes for directory {}",
            dir.display()
        )),
        "{}",
        srv.log()
    );
    assert!(live.echoes("still"));
    drop(live);
    drop(srv);
    // Without StrictModes the same file is used.
    let lax = make("StrictModes no");
    assert!(
        lax.ssh_run(ATTACKER, "true", b"").status.success(),
        "{}",
        lax.log()
    );
}

/// The identity used to read: a key file only root can open is not used for the
/// user, even in the user's own directory.
#[test]
fn a_file_readable_only_by_root_is_not_read_for_the_user() {
    if skip() {
        return;
    }
    let base = key_dirs();
    let srv = server(&base, "");
    let ak = user_file(&base, ATTACKER, "authorized_keys", &public_key(&srv));
    assert!(
        srv.ssh_run(ATTACKER, "true", b"").status.success(),
        "{}",
        srv.log()
    );
    // Root-owned, mode 0600, in the user's own directory: StrictModes accepts
    // root as owner, but the user cannot open it, so sshd (reading as the user)
    // refuses it.
    nix::unistd::chown(
        &ak,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(nix::unistd::Gid::from_raw(0)),
    )
    .unwrap();
    assert!(!srv.ssh_run(ATTACKER, "true", b"").status.success());
    // The line is written by the daemon's log writer, which may trail the
    // client's refusal by a moment on a loaded machine.
    assert!(
        srv.wait_log("Permission denied", std::time::Duration::from_secs(5)),
        "{}",
        srv.log()
    );
}
