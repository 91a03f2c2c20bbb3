//! Shared by the session tests (`session_login.rs`, `session_cleanup.rs`,
//! `session_env.rs`, `flow_control.rs`): the reference OpenSSH sshd started next to an rsshd, sharing its authorized_keys,
//! and small helpers about processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::keygen;

pub const SSHD: &str = "/usr/sbin/sshd";

/// OpenSSH's sshd on a free port, with its own host key and `extra` config lines.
pub struct RefSshd {
    child: Child,
    pub port: u16,
}

impl RefSshd {
    pub fn start(dir: &Path, keys: &Path, extra: &str) -> RefSshd {
        let host_key = keygen(dir, "ref_host_key");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = dir.join("ref_sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "{extra}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile none\n",
                host_key.display(),
                keys.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&cfg)
            .args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if l.contains("Server listening on") {
                    let _ = tx.send(());
                }
            }
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(20)).is_ok(),
            "reference sshd did not start"
        );
        RefSshd { child, port }
    }
}

impl Drop for RefSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Alive: exists and is not a zombie.
pub fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|s| s != "Z")
}

pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL to processes a test started on the server (its leftovers).
pub fn kill_all(pids: &[i32]) {
    for &p in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A PAM service of the test's own, whose session hook logs `open_session USER`
/// and `close_session USER` lines; removed on drop.
pub struct PamService {
    pub name: String,
    file: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl PamService {
    pub fn new(dir: &Path, tag: &str) -> PamService {
        let log = dir.join("pam.log");
        let hook = dir.join("hook.sh");
        std::fs::write(
            &hook,
            format!("echo \"$PAM_TYPE $PAM_USER\" >> {}\n", log.display()),
        )
        .unwrap();
        let name = format!("rsshd-{tag}-{}", std::process::id());
        let file = std::path::PathBuf::from("/etc/pam.d").join(&name);
        std::fs::write(
            &file,
            format!(
                "auth required pam_permit.so\naccount required pam_permit.so\n\
                 session required pam_exec.so /bin/sh {}\n",
                hook.display()
            ),
        )
        .unwrap();
        PamService { name, file, log }
    }

    pub fn count(&self, line: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == line)
            .count()
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}
