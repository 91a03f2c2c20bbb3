//! Test support: a real rsshd on 127.0.0.1 with a kernel-chosen port, its own host
//! key, config and client key in a private directory, and helpers to run the real
//! OpenSSH and PuTTY clients against it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether the tests run as root (needed to log in as another user).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The account the tests log in as: the current user.
pub fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into())
}

/// The two ordinary accounts `.ci/run` creates for tests that log in as someone
/// other than the caller (and attack each other).
pub const TEST_USER: &str = "rsshd-test";
pub const TEST_USER2: &str = "rsshd-test2";

/// Set by `.ci/run`: any skip is then a failure, so CI can never go green by
/// skipping what it was meant to run.
pub const NO_SKIP_ENV: &str = "RSSHD_TEST_NO_SKIP";

/// Skip the calling test for `reason`. The line goes straight to the real stderr
/// (libtest captures only `print!`-style output), so `cargo test` shows
/// `SKIPPED name: reason` even though the test reports `ok`; under
/// [`NO_SKIP_ENV`] it fails instead.
pub fn skip(reason: &str) {
    use std::io::Write;
    let name = std::thread::current().name().unwrap_or("test").to_string();
    if std::env::var_os(NO_SKIP_ENV).is_some_and(|v| v != "0") {
        panic!("{name} would be skipped ({reason}), and {NO_SKIP_ENV} forbids skips");
    }
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {name}: {reason}");
}

/// Skip (see [`skip`]) unless every program is installed; true if skipped.
pub fn skip_without(programs: &[&str]) -> bool {
    for p in programs {
        if !have(p) {
            skip(&format!(
                "{p} is not installed (run .ci/run to install test tools)"
            ));
            return true;
        }
    }
    false
}

/// Skip unless running as root with the test account `user`; true if skipped.
pub fn skip_unless_root_with(user: &str) -> bool {
    if !is_root() {
        skip("needs root to switch users");
        return true;
    }
    if nix::unistd::User::from_name(user).ok().flatten().is_none() {
        skip(&format!("user {user} missing (.ci/run creates it)"));
        return true;
    }
    false
}

/// Whether a client program is installed; tests that need it skip (see [`skip`]).
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A private directory for one test's keys and configs. Under the target dir when
/// no directory above it is group- or world-writable (StrictModes would refuse keys
/// there, as sshd does: a clone under /tmp is the usual case) and every one lets
/// others through (key files are read with the user's identity, as sshd does, so
/// the test users must reach them: a clone under /root is the usual case); else,
/// as root, under `/var/lib/rsshd-tests`, or `$HOME/.cache/rsshd-tests`.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = tests_base().join(format!("{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn tests_base() -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let usable = |base: &Path| {
        base.ancestors().all(|d| {
            std::fs::metadata(d)
                .map(|m| m.mode() & 0o022 == 0 && m.mode() & 0o001 != 0)
                .unwrap_or(false)
        })
    };
    if usable(&target) {
        return target;
    }
    let base = if is_root() {
        PathBuf::from("/var/lib/rsshd-tests")
    } else {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".cache/rsshd-tests")
    };
    std::fs::create_dir_all(&base).expect("create test base");
    if is_root() {
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    base
}

/// Generate an ed25519 key pair with ssh-keygen; returns the private key path.
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success(), "ssh-keygen failed");
    path
}

/// A fresh directory (`temp_dir(tag)`) with a host key, a client key and an
/// `authorized_keys` that accepts the client key (with `key_options` in front):
/// `(dir, host_key, client_key)`.
pub fn keyed_dir(tag: &str, key_options: Option<&str>) -> (PathBuf, PathBuf, PathBuf) {
    let dir = temp_dir(tag);
    let host_key = keygen(&dir, "host_key");
    let client_key = keygen(&dir, "client_key");
    let public = std::fs::read_to_string(client_key.with_extension("pub")).expect("pub key");
    let line = match key_options {
        Some(o) => format!("{o} {public}"),
        None => public,
    };
    std::fs::write(dir.join("authorized_keys"), line).expect("write authorized_keys");
    (dir, host_key, client_key)
}

/// Every test connects from 127.0.0.1, so sshd 9.8's per-source penalties (on by
/// default) would let one test's failed logins refuse the next connection. Test
/// servers turn them off unless the test's own config sets them: its lines come
/// first, and any `PerSourcePenalties` sub-option there turns penalties on.
const TEST_PENALTIES: &str = "PerSourcePenalties no";

/// A running rsshd and the files around it.
pub struct Server {
    pub dir: PathBuf,
    pub port: u16,
    pub client_key: PathBuf,
    pub config: PathBuf,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Start rsshd with `extra` config lines after a base config that accepts the
    /// client key for every user (via `AuthorizedKeysFile DIR/authorized_keys`).
    pub fn start(extra: &str) -> Server {
        Self::start_with_keys(extra, None)
    }

    /// As [`Server::start`], with the authorized_keys line options given.
    pub fn start_with_keys(extra: &str, key_options: Option<&str>) -> Server {
        let (dir, host_key, client_key) = keyed_dir("rsshd", key_options);
        let config = dir.join("sshd_config");
        let text = format!(
            "{extra}\n{TEST_PENALTIES}\nListenAddress 127.0.0.1\nPort 0\nHostKey {}\nAuthorizedKeysFile {}/authorized_keys\nPermitRootLogin yes\nPidFile none\nControlSocket {}/control.sock\n",
            host_key.display(),
            dir.display(),
            dir.display()
        );
        std::fs::write(&config, text).expect("write config");
        Self::spawn(dir, config, client_key)
    }

    /// As [`Server::start`], with `tail` appended after the base config, for blocks
    /// (like `Match`) that must come last.
    pub fn start_with_tail(extra: &str, tail: &str) -> Server {
        let (dir, host_key, client_key) = keyed_dir("rsshd", None);
        let config = dir.join("sshd_config");
        let text = format!(
            "{extra}\n{TEST_PENALTIES}\nListenAddress 127.0.0.1\nPort 0\nHostKey {}\nAuthorizedKeysFile {}/authorized_keys\nPermitRootLogin yes\nPidFile none\nControlSocket {}/control.sock\n{tail}\n",
            host_key.display(),
            dir.display(),
            dir.display()
        );
        std::fs::write(&config, text).expect("write config");
        Self::spawn(dir, config, client_key)
    }

    /// Start rsshd on a config file written by the caller.
    pub fn spawn(dir: PathBuf, config: PathBuf, client_key: PathBuf) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rsshd"));
        cmd.args(["-D", "-e", "-f"]).arg(&config);
        Self::spawn_command(cmd, dir, config, client_key)
    }

    /// As [`Server::spawn`], with rsshd started by `cmd` (e.g. through a shell that
    /// hands it an extra descriptor first); it must log to stderr (`-D -e`).
    pub fn spawn_command(
        mut cmd: Command,
        dir: PathBuf,
        config: PathBuf,
        client_key: PathBuf,
    ) -> Server {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rsshd");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.strip_prefix("Server listening on 127.0.0.1 port ")
                        && let Ok(p) = rest.trim_end_matches('.').parse::<u16>()
                    {
                        let _ = tx.send(p);
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let port = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "rsshd did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Server {
            dir,
            port,
            client_key,
            config,
            child,
            log,
        }
    }

    /// Everything rsshd logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Wait until the log contains `needle`, up to `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for rsshd itself to exit (after a signal the test sent).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// OpenSSH `ssh` set up for this server: our key only, no known_hosts, batch mode.
    pub fn ssh(&self, user: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(ssh_base_args(self.port, &self.client_key))
            .arg(format!("{user}@127.0.0.1"));
        c
    }

    /// Run `ssh user@server command` with `stdin` and return its output.
    pub fn ssh_run(&self, user: &str, command: &str, stdin: &[u8]) -> Output {
        run_with_input(self.ssh(user).arg(command), stdin)
    }

    /// Options shared by ssh, sftp and scp (`-o` style, no port flag).
    pub fn client_opts(&self) -> Vec<String> {
        client_opts(&self.client_key)
    }

    /// `ssh` with our key but the client's own log level and prompts, for tests
    /// that read what it prints (banners, `-vv`) or that add a password step.
    pub fn ssh_talkative(&self, user: &str, flags: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-F", "/dev/null", "-i"])
            .arg(&self.client_key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "IdentitiesOnly=yes"])
            .args(flags)
            .args(["-p", &self.port.to_string()])
            .arg(format!("{user}@127.0.0.1"));
        c
    }

    /// The client key in PuTTY's format and the host key's SHA256 fingerprint, for
    /// `plink -batch -i KEY -hostkey FP`.
    pub fn putty_setup(&self) -> (PathBuf, String) {
        let ppk = self.dir.join("client.ppk");
        if !ppk.exists() {
            let o = Command::new("puttygen")
                .arg(&self.client_key)
                .args(["-O", "private", "-o"])
                .arg(&ppk)
                .output()
                .expect("puttygen");
            assert!(
                o.status.success(),
                "puttygen: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let fp = Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(self.dir.join("host_key.pub"))
            .output()
            .expect("ssh-keygen -l");
        let fp = String::from_utf8_lossy(&fp.stdout)
            .split_whitespace()
            .nth(1)
            .expect("fingerprint")
            .to_string();
        (ppk, fp)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `-o` options every client invocation uses.
pub fn client_opts(key: &Path) -> Vec<String> {
    vec![
        "-F".into(),
        "/dev/null".into(),
        "-i".into(),
        key.display().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=no".into(),
        "-o".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "-o".into(),
        "ConnectTimeout=10".into(),
    ]
}

/// `ssh` arguments for a port and key.
pub fn ssh_base_args(port: u16, key: &Path) -> Vec<String> {
    let mut v = client_opts(key);
    v.push("-p".into());
    v.push(port.to_string());
    v
}

/// Run a command, feed it `stdin`, and collect its output (with a 60 s limit).
pub fn run_with_input(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
    let out = child.wait_with_output().expect("client output");
    let _ = writer.join();
    drop(watchdog);
    out
}

/// Process ids whose session id is `sid` (every process of a login session).
pub fn processes_in_session(sid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state ppid pgrp session ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(3).and_then(|s| s.parse::<i32>().ok()) == Some(sid) {
            out.push(pid);
        }
    }
    out
}

/// A client program running on a pseudo-terminal we own, so tests can type into it,
/// read what it shows, and resize its window like a real terminal emulator.
pub struct PtyClient {
    pub child: Child,
    master: std::fs::File,
    pub seen: Vec<u8>,
}

impl PtyClient {
    /// Start `cmd` as a session leader with the PTY as its controlling terminal.
    pub fn spawn(cmd: &mut Command, rows: u16, cols: u16) -> PtyClient {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let ws = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
        let slave = pty.slave;
        let slave_fd = slave.as_raw_fd();
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(slave_fd, libc::TIOCSCTTY as _, 0) < 0 {
                    // stdin is the slave too; use it if the original fd is gone.
                    if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn client on pty");
        let master = std::fs::File::from(pty.master);
        let flags = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL).expect("getfl");
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(flags)).expect("setfl");
        PtyClient {
            child,
            master,
            seen: Vec::new(),
        }
    }

    /// Type `text` into the terminal.
    pub fn send(&mut self, text: &str) {
        use std::io::Write;
        self.master.write_all(text.as_bytes()).expect("write pty");
    }

    /// Read what is available now into `seen`.
    pub fn pump(&mut self) -> bool {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let mut any = false;
        loop {
            match self.master.read(&mut buf) {
                Ok(0) => return any,
                Ok(n) => {
                    self.seen.extend_from_slice(&buf[..n]);
                    any = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return any,
                Err(_) => return any,
            }
        }
    }

    /// Wait until the screen output contains `needle`; true if it did in time.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            self.pump();
            if String::from_utf8_lossy(&self.seen).contains(needle) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Resize the terminal; the kernel tells the client with SIGWINCH.
    pub fn resize(&mut self, rows: u16, cols: u16) {
        use std::os::fd::AsRawFd;
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
        unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }

    /// Whether the client has exited, with its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            self.pump();
            if let Ok(Some(st)) = self.child.try_wait() {
                self.pump();
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PtyClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// OpenSSH's `/usr/sbin/sshd` on a whole config file's text and a free port,
/// logging to a file, for tests that compare rsshd with it; stopped on drop.
/// The test families add their own `start` that writes the config text.
pub struct SshdReference {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl SshdReference {
    /// Start it on `config` (written to `dir/ref_sshd_config`), with no
    /// SSH_AUTH_SOCK in its environment, and wait until it listens.
    pub fn spawn(dir: &Path, config: &str) -> SshdReference {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let cfg = dir.join("ref_sshd_config");
        let log = dir.join("ref_sshd.log");
        std::fs::write(&cfg, config).expect("write ref_sshd_config");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-f"])
            .arg(&cfg)
            .args(["-p", &port.to_string(), "-E"])
            .arg(&log)
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd");
        let r = SshdReference { child, port, log };
        let end = Instant::now() + Duration::from_secs(20);
        while !r.log().contains("Server listening on") {
            assert!(
                Instant::now() < end,
                "reference sshd did not start: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SshdReference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
