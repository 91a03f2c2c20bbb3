//! The network process's confinement (host::sandbox), through `rsshd
//! __sandbox-check`: the real OpenSSH client logs in to a russh server running
//! inside the sandbox, the test reads the process's /proc entries from outside,
//! and probes make the confined process attempt what the sandbox must stop.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The account contrib/install.sh and .ci/run create for the network process.
const SANDBOX_USER: &str = "rsshd";
const EMPTY_DIR: &str = "/run/rsshd/empty";
const PROBE_SIGSYS: &[&str] = &["exec", "fork", "setuid", "ptrace", "kill", "socket"];

struct Check {
    child: Child,
    port: u16,
    key: PathBuf,
    /// stdout lines up to `ready`.
    lines: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

/// Skipped (a failure under RSSHD_TEST_NO_SKIP) without root, ssh or the
/// `rsshd` account: none of this can be checked otherwise.
fn unusable() -> bool {
    support::skip_without(&["ssh", "ssh-keygen"]) || support::skip_unless_root_with(SANDBOX_USER)
}

/// Start the harness; its stderr as the error when it exited before `ready`.
fn try_start(args: &[&str], env: &[(&str, &str)]) -> Result<Check, String> {
    let dir = support::temp_dir("sandbox");
    let host_key = support::keygen(&dir, "host_key");
    let key = support::keygen(&dir, "client_key");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // The listener goes in as standard input: only the child gets it.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rsshd"));
    cmd.arg("__sandbox-check")
        .args(args)
        .arg("0")
        .arg(&host_key)
        .arg(key.with_extension("pub"))
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(listener)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RSSHD_SANDBOX_DEBUG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn rsshd __sandbox-check");
    let stderr = Arc::new(Mutex::new(String::new()));
    let err_reader = {
        let mut err = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(l) if l == "ready" => break,
            Ok(l) => lines.push(l),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = err_reader.join();
                return Err(stderr.lock().unwrap().clone());
            }
        }
    }
    Ok(Check {
        child,
        port,
        key,
        lines,
        stderr,
    })
}

fn start(args: &[&str], env: &[(&str, &str)]) -> Check {
    try_start(args, env).unwrap_or_else(|e| panic!("harness did not get ready: {e}"))
}

impl Check {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ssh(&self, command: &str) -> Output {
        let mut c = Command::new("ssh");
        c.args(support::ssh_base_args(self.port, &self.key))
            .arg("probe@127.0.0.1")
            .arg(command);
        support::run_with_input(&mut c, b"")
    }

    fn answer(&self, command: &str) -> String {
        let out = self.ssh(command);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether stderr shows `needle` within a few seconds (a reader thread
    /// collects it, so it can lag behind the client's answer).
    fn stderr_shows(&self, needle: &str) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if self.stderr().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn line(&self, prefix: &str) -> String {
        self.lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .cloned()
            .unwrap_or_else(|| panic!("no {prefix} line in {:?}", self.lines))
    }
}

impl Drop for Check {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `Field:` of a /proc status file, whitespace-separated values.
fn field(status: &str, name: &str) -> Vec<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in status"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn limit(limits: &str, name: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in limits"));
    let mut v = line[name.len()..].split_whitespace();
    (
        v.next().unwrap_or_default().to_string(),
        v.next().unwrap_or_default().to_string(),
    )
}

fn sandbox_uid() -> (u32, u32) {
    let u = nix::unistd::User::from_name(SANDBOX_USER)
        .ok()
        .flatten()
        .expect("rsshd user");
    (u.uid.as_raw(), u.gid.as_raw())
}

#[test]
fn confined_process_serves_openssh_and_proc_shows_the_confinement() {
    if unusable() {
        return;
    }
    let mut c = start(&[], &[]);
    assert_eq!(c.answer("hello"), "sandboxed-ok", "{}", c.stderr());
    let (uid, gid) = sandbox_uid();
    let pid = c.pid();
    assert_eq!(c.line("before root="), "before root=/ uid=0");
    // Every thread, not only the main one: credentials and filters are per thread.
    let tasks: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(tasks.len() > 1, "a multi-thread runtime: {tasks:?}");
    for task in &tasks {
        let status = std::fs::read_to_string(task.join("status")).expect("status");
        assert_eq!(field(&status, "Uid"), vec![uid.to_string(); 4], "{task:?}");
        assert_eq!(field(&status, "Gid"), vec![gid.to_string(); 4], "{task:?}");
        assert!(field(&status, "Groups").is_empty(), "{task:?}");
        assert_eq!(field(&status, "NoNewPrivs"), ["1"], "{task:?}");
        assert_eq!(field(&status, "Seccomp"), ["2"], "{task:?}");
        assert_eq!(field(&status, "Seccomp_filters"), ["3"], "{task:?}");
        for set in ["CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"] {
            assert_eq!(field(&status, set), ["0000000000000000"], "{set} {task:?}");
        }
    }
    // What the process saw of itself matches.
    assert!(
        c.lines.iter().any(|l| l == "status Seccomp:\t2"),
        "{:?}",
        c.lines
    );
    assert!(
        c.lines
            .iter()
            .any(|l| l == "status CapEff:\t0000000000000000")
    );
    let root = std::fs::read_link(format!("/proc/{pid}/root")).expect("root link");
    assert_eq!(root, Path::new(EMPTY_DIR));
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    assert_eq!(limit(&limits, "Max processes"), ("0".into(), "0".into()));
    assert_eq!(
        limit(&limits, "Max core file size"),
        ("0".into(), "0".into())
    );

    // Attempts that fail without killing: opening files, starting a thread.
    let denied = "failed: Permission denied (os error 13)";
    assert_eq!(c.answer("probe open"), format!("probe open: {denied}"));
    assert_eq!(
        c.answer("probe open-dir"),
        format!("probe open-dir: {denied}")
    );
    assert_eq!(
        c.answer("probe thread"),
        "probe thread: failed: Resource temporarily unavailable (os error 11)"
    );
    // spawn_blocking still works on the warm pool, the excess queueing.
    assert_eq!(
        c.answer("probe blocking"),
        "probe blocking: 8 of 8 blocking calls done"
    );
    assert!(c.alive());
    assert_eq!(c.answer("hello"), "sandboxed-ok");
    assert!(c.stderr().is_empty(), "{}", c.stderr());
}

#[test]
fn forbidden_calls_kill_the_process_with_sigsys() {
    if unusable() {
        return;
    }
    for probe in PROBE_SIGSYS {
        let mut c = start(&[], &[]);
        let out = c.ssh(&format!("probe {probe}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success() && text.is_empty(), "{probe}: {text}");
        let st = c.wait_exit(Duration::from_secs(10)).expect("exits");
        assert_eq!(st.signal(), Some(libc::SIGSYS), "{probe}: {st:?}");
    }
}

#[test]
fn debugging_mode_reports_forbidden_calls_and_fails_them() {
    if unusable() {
        return;
    }
    let mut c = start(&[], &[("RSSHD_SANDBOX_DEBUG", "1")]);
    assert!(c.lines.iter().any(|l| l == "locked debug=true"));
    let enosys = "failed: Function not implemented (os error 38)";
    for (probe, nr) in [
        ("exec", libc::SYS_execve),
        ("setuid", libc::SYS_setuid),
        ("kill", libc::SYS_kill),
        ("ptrace", libc::SYS_ptrace),
    ] {
        assert_eq!(
            c.answer(&format!("probe {probe}")),
            format!("probe {probe}: {enosys}")
        );
        let line = format!("rsshd: sandbox: unexpected system call {nr} ");
        assert!(c.stderr_shows(&line), "{probe}: {}", c.stderr());
    }
    assert!(c.alive());
    assert_eq!(c.answer("hello"), "sandboxed-ok");
    // A normal login made no call outside the list.
    let before = c.stderr().lines().count();
    assert_eq!(c.answer("hello"), "sandboxed-ok");
    assert_eq!(c.stderr().lines().count(), before, "{}", c.stderr());
}

#[test]
fn without_a_warm_blocking_pool_spawn_blocking_fails_but_the_process_survives() {
    if unusable() {
        return;
    }
    let mut c = start(&["--cold"], &[]);
    // tokio cannot start its first blocking thread (EAGAIN) and panics in the
    // connection's task: that connection is lost, the process is not.
    let out = c.ssh("probe blocking");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("8 of 8"));
    assert!(c.alive());
    assert_eq!(c.answer("hello"), "sandboxed-ok");
}

#[test]
fn a_missing_account_falls_back_to_nobody_with_a_warning() {
    if unusable() {
        return;
    }
    let c = start(&["--user=rsshd-no-such-account"], &[]);
    let nobody = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("nobody");
    assert_eq!(c.line("user "), format!("user nobody uid {}", nobody.uid));
    assert!(
        c.stderr_shows("user rsshd-no-such-account does not exist")
            && c.stderr().contains("runs as nobody instead"),
        "{}",
        c.stderr()
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).expect("status");
    assert_eq!(field(&status, "Uid"), vec![nobody.uid.to_string(); 4]);
    assert_eq!(c.answer("hello"), "sandboxed-ok");
}

#[test]
fn a_bad_chroot_directory_is_refused_and_a_missing_one_created() {
    if unusable() {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let base = support::temp_dir("sandbox-dirs");
    let writable = base.join("writable");
    std::fs::create_dir(&writable).unwrap();
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o777)).unwrap();
    let foreign = base.join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    let (uid, _) = sandbox_uid();
    nix::unistd::chown(&foreign, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
    let full = base.join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("secret"), "x").unwrap();
    for (dir, why) in [
        (&writable, "bad ownership or modes for chroot directory"),
        (&foreign, "bad ownership or modes for chroot directory"),
        (&full, "is not empty"),
    ] {
        let arg = format!("--empty-dir={}", dir.display());
        let err = match try_start(&[&arg], &[]) {
            Ok(c) => panic!("{dir:?} accepted: {:?}", c.lines),
            Err(e) => e,
        };
        assert!(
            err.contains(why) && err.contains(&dir.display().to_string()),
            "{err}"
        );
    }
    let missing = base.join("run").join("empty");
    let c = start(&[&format!("--empty-dir={}", missing.display())], &[]);
    let meta = std::fs::metadata(&missing).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o755));
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/root", c.pid())).unwrap(),
        missing
    );
    assert_eq!(c.answer("hello"), "sandboxed-ok");
    drop(c);
    let _ = std::fs::remove_dir_all(&base);
}
