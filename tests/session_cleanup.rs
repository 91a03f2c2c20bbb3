//! What is left of a session when it ends (`SessionCleanup`), and how soon a
//! program learns of its client's interruption; driven with the real OpenSSH
//! client, `nohup`, `setsid` and rsync, side by side with OpenSSH's sshd.

mod session_common;
mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use session_common::*;
use support::*;

/// Starts three leftover jobs and reports the shell's pid and session:
/// `nohup`, `setsid` and a plain background job.
const JOBS: &str = "nohup sleep 300 >/dev/null 2>&1 </dev/null & echo nohup $!; \
    setsid sleep 301 >/dev/null 2>&1 </dev/null & echo setsid $!; \
    sleep 302 >/dev/null 2>&1 </dev/null & echo plain $!; \
    echo shell $$ $(cut -d' ' -f6 /proc/$$/stat)";

/// `name pid ...` lines of `text`, by name.
fn numbers(text: &str, name: &str) -> Vec<i32> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text:?}"))
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect()
}

fn jobs_on(port: u16, key: &std::path::Path, user: &str) -> (i32, i32, i32, Vec<i32>) {
    let o = run_with_input(
        Command::new("ssh")
            .args(ssh_base_args(port, key))
            .arg(format!("{user}@127.0.0.1"))
            .arg(JOBS),
        b"",
    );
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    (
        numbers(&text, "nohup")[0],
        numbers(&text, "setsid")[0],
        numbers(&text, "plain")[0],
        numbers(&text, "shell"),
    )
}

#[test]
fn leftover_jobs_outlive_a_normal_end_as_with_sshd() {
    if skip_without(&["ssh", "nohup", "setsid", SSHD]) || skip_unless_root_with(TEST_USER) {
        return;
    }
    for pam in ["no", "yes"] {
        if pam == "yes" && rsshd::host::pam::available().is_err() {
            continue;
        }
        let srv = Server::start(&format!("UsePAM {pam}"));
        let reference = RefSshd::start(
            &srv.dir,
            &srv.dir.join("authorized_keys"),
            &format!("UsePAM {pam}"),
        );
        for (name, port) in [("rsshd", srv.port), ("sshd", reference.port)] {
            let (nohup, setsid, plain, shell) = jobs_on(port, &srv.client_key, TEST_USER);
            // A command leads a session of its own, as sshd's.
            assert_eq!(shell[0], shell[1], "{name}, UsePAM {pam}: shell {shell:?}");
            // Past any settling time: a normal end signals nothing.
            std::thread::sleep(LOST_SETTLE_PLUS);
            let alive = [nohup, setsid, plain].map(running);
            kill_all(&[nohup, setsid, plain]);
            assert_eq!(
                alive,
                [true; 3],
                "{name}, UsePAM {pam}: nohup, setsid, plain job alive\n{}",
                srv.log()
            );
        }
    }
}

/// rsshd's settling time after a lost connection (1 s), with room to spare.
const LOST_SETTLE_PLUS: Duration = Duration::from_millis(2500);

#[test]
fn session_cleanup_kill_ends_the_sessions_processes_and_is_matchable() {
    if skip_without(&["ssh", "nohup"])
        || skip_unless_root_with(TEST_USER)
        || skip_unless_root_with(TEST_USER2)
    {
        return;
    }
    let srv = Server::start_with_tail(
        "",
        &format!("Match User {TEST_USER}\n  SessionCleanup kill"),
    );
    let (nohup, setsid, plain, _) = jobs_on(srv.port, &srv.client_key, TEST_USER);
    // SIGHUP, then SIGKILL after a 2 s grace, to every process of the session;
    // nohup ignores the first.
    let gone = wait_until(Duration::from_secs(8), || {
        !running(nohup) && !running(plain)
    });
    kill_all(&[nohup, setsid, plain]);
    assert!(
        gone,
        "SessionCleanup kill left the session's jobs\n{}",
        srv.log()
    );
    // The other user keeps the default.
    let (nohup, setsid, plain, _) = jobs_on(srv.port, &srv.client_key, TEST_USER2);
    std::thread::sleep(LOST_SETTLE_PLUS + Duration::from_secs(2));
    let alive = [nohup, setsid, plain].map(running);
    kill_all(&[nohup, setsid, plain]);
    assert_eq!(alive, [true; 3], "{TEST_USER2} is under hangup");
}

#[test]
fn a_lost_connection_hangs_up_what_is_left_and_nohup_survives() {
    if skip_without(&["ssh", "nohup"]) || skip_unless_root_with(TEST_USER) {
        return;
    }
    for pam in ["no", "yes"] {
        if pam == "yes" && rsshd::host::pam::available().is_err() {
            continue;
        }
        let srv = Server::start(&format!("UsePAM {pam}"));
        let mut ssh = Command::new("ssh")
            .args(ssh_base_args(srv.port, &srv.client_key))
            .arg(format!("{TEST_USER}@127.0.0.1"))
            .arg(
                "nohup sleep 300 >/dev/null 2>&1 </dev/null & echo nohup $!; \
                 sleep 301 >/dev/null 2>&1 </dev/null & echo plain $!; echo leader $$; exec sleep 302",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(ssh.stdout.take().unwrap()).lines();
        let mut text = String::new();
        while !text.contains("leader ") {
            text += &lines.next().unwrap().unwrap();
            text.push('\n');
        }
        let (nohup, plain, leader) = (
            numbers(&text, "nohup")[0],
            numbers(&text, "plain")[0],
            numbers(&text, "leader")[0],
        );
        // The client vanishes without a word.
        ssh.kill().unwrap();
        let _ = ssh.wait();
        let hung_up = wait_until(Duration::from_secs(8), || {
            !running(plain) && !running(leader)
        });
        std::thread::sleep(Duration::from_millis(500));
        let nohup_alive = running(nohup);
        kill_all(&[nohup, plain, leader]);
        assert!(
            hung_up,
            "UsePAM {pam}: the lost session was not hung up\n{}",
            srv.log()
        );
        assert!(nohup_alive, "UsePAM {pam}: the nohup job did not survive");
    }
}

/// Upload a file with `rsync --partial` at a limited rate, interrupt the client
/// (Ctrl-C: SIGINT to its process group) once part of it arrived, and time how
/// long the partial file takes to appear under its name.
fn partial_kept_after(
    port: u16,
    key: &std::path::Path,
    src: &std::path::Path,
    dest: &std::path::Path,
) -> Duration {
    let _ = std::fs::remove_file(dest.join("big"));
    let rsh = format!("ssh {}", ssh_base_args(port, key).join(" "));
    let mut rsync = Command::new("rsync")
        .args(["--partial", "--bwlimit=4000", "-e", &rsh])
        .arg(src)
        .arg(format!("{TEST_USER}@127.0.0.1:{}/", dest.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    // The receiver writes into a temporary `.big.XXXXXX`.
    let temp_grew = || {
        std::fs::read_dir(dest).unwrap().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with(".big.")
                && e.metadata().is_ok_and(|m| m.len() > 1 << 20)
        })
    };
    assert!(
        wait_until(Duration::from_secs(30), temp_grew),
        "no transfer"
    );
    let group = nix::unistd::Pid::from_raw(rsync.id() as i32);
    let t = Instant::now();
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT).unwrap();
    let kept = wait_until(Duration::from_secs(10), || dest.join("big").exists());
    let took = t.elapsed();
    let _ = rsync.wait();
    assert!(kept, "the partial file was not kept");
    took
}

#[test]
fn rsync_partial_keeps_its_file_promptly_after_an_interrupt() {
    if skip_without(&["ssh", "rsync", SSHD]) || skip_unless_root_with(TEST_USER) {
        return;
    }
    let srv = Server::start("");
    let reference = RefSshd::start(&srv.dir, &srv.dir.join("authorized_keys"), "");
    let src = srv.dir.join("big");
    std::fs::write(&src, vec![7u8; 64 << 20]).unwrap();
    let dest = srv.dir.join("dest");
    std::fs::create_dir(&dest).unwrap();
    let (uid, gid) = nix::unistd::User::from_name(TEST_USER)
        .unwrap()
        .map(|u| (u.uid, u.gid))
        .unwrap();
    nix::unistd::chown(&dest, Some(uid), Some(gid)).unwrap();
    // Best of three, on a machine shared with other work.
    let best = |port| {
        (0..3)
            .map(|_| partial_kept_after(port, &srv.client_key, &src, &dest))
            .min()
            .unwrap()
    };
    let ours = best(srv.port);
    let theirs = best(reference.port);
    eprintln!("rsync --partial file kept after: rsshd {ours:?}, sshd {theirs:?}");
    assert!(
        ours < Duration::from_millis(100),
        "rsshd: {ours:?} (sshd: {theirs:?})\n{}",
        srv.log()
    );
}

/// Start a `nohup` job in an interactive login shell on a terminal, then
/// `exit`; the job's pid.
fn nohup_from_a_login_shell(port: u16, key: &std::path::Path) -> i32 {
    use std::io::{Read, Write};
    let mut child = Command::new("ssh")
        .args(ssh_base_args(port, key))
        .arg("-tt")
        .arg(format!("{TEST_USER}@127.0.0.1"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let typist = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        let _ = stdin.write_all(b"nohup sleep 303 >/dev/null 2>&1 & echo job=$!\n");
        std::thread::sleep(Duration::from_millis(500));
        let _ = stdin.write_all(b"exit\n");
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let _ = child.wait();
    let _ = typist.join();
    let text = String::from_utf8_lossy(&out).to_string();
    text.split("job=")
        .filter_map(|w| {
            let digits: String = w.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .next()
        .unwrap_or_else(|| panic!("no job pid in {text:?}"))
}

#[test]
fn a_nohup_job_from_an_interactive_shell_outlives_exit_as_with_sshd() {
    if skip_without(&["ssh", "nohup", SSHD]) || skip_unless_root_with(TEST_USER) {
        return;
    }
    let srv = Server::start("");
    let reference = RefSshd::start(&srv.dir, &srv.dir.join("authorized_keys"), "");
    for (name, port) in [("rsshd", srv.port), ("sshd", reference.port)] {
        let job = nohup_from_a_login_shell(port, &srv.client_key);
        std::thread::sleep(LOST_SETTLE_PLUS);
        let alive = running(job);
        kill_all(&[job]);
        assert!(
            alive,
            "{name}: the nohup job did not outlive exit\n{}",
            srv.log()
        );
    }
    // Under `kill` the terminal's session goes with the shell.
    let srv = Server::start("SessionCleanup kill");
    let job = nohup_from_a_login_shell(srv.port, &srv.client_key);
    let gone = wait_until(Duration::from_secs(8), || !running(job));
    kill_all(&[job]);
    assert!(gone, "SessionCleanup kill left the nohup job");
}
