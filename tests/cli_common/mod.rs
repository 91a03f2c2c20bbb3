//! Shared by the tests of sshd's command line (`cli_sshd_flags.rs`,
//! `cli_inetd.rs`): a directory with keys and a config usable by rsshd and, where
//! noted, by OpenSSH's sshd too, and an rsshd started with any flags whose log is
//! collected.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{current_user, keygen, temp_dir};

pub const RSSHD: &str = env!("CARGO_BIN_EXE_rsshd");
pub const SSHD: &str = "/usr/sbin/sshd";

/// Host key, client key, `authorized_keys` (with `key_options` in front of the key)
/// and a config naming them, in a fresh directory.
pub struct Setup {
    pub dir: PathBuf,
    pub host_key: PathBuf,
    pub client_key: PathBuf,
    pub config: PathBuf,
}

impl Setup {
    /// `common` is a config both servers accept; `extra` follows it (e.g. `Match`
    /// blocks, which must come last).
    pub fn new(tag: &str, key_options: Option<&str>, extra: &str) -> Setup {
        let dir = temp_dir(tag);
        let host_key = keygen(&dir, "host_key");
        let client_key = keygen(&dir, "client_key");
        let public = std::fs::read_to_string(client_key.with_extension("pub")).unwrap();
        let line = match key_options {
            Some(o) => format!("{o} {public}"),
            None => public,
        };
        std::fs::write(dir.join("authorized_keys"), line).unwrap();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "HostKey {}\nAuthorizedKeysFile {}/authorized_keys\nPermitRootLogin yes\nPidFile none\n{extra}\n",
                host_key.display(),
                dir.display()
            ),
        )
        .unwrap();
        Setup {
            dir,
            host_key,
            client_key,
            config,
        }
    }

    /// The same plus what a listening rsshd needs in a test: loopback, a kernel-chosen
    /// port, a control socket of its own.
    pub fn daemon(tag: &str, extra: &str) -> Setup {
        let s = Setup::new(tag, None, "");
        let text = std::fs::read_to_string(&s.config).unwrap();
        std::fs::write(
            &s.config,
            format!(
                "{extra}\n{text}ListenAddress 127.0.0.1\nPort 0\nControlSocket {}/control.sock\n",
                s.dir.display()
            ),
        )
        .unwrap();
        s
    }

    /// `ssh` through `ProxyCommand`, running `command` as the current user.
    pub fn ssh_via(&self, proxy: &str, command: &str) -> std::process::Output {
        Command::new("ssh")
            .args(crate::support::client_opts(&self.client_key))
            .arg("-o")
            .arg(format!("ProxyCommand={proxy}"))
            .arg(format!("{}@inetd-test", current_user()))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `ssh` to a port on 127.0.0.1, running `command` as the current user.
    pub fn ssh_port(&self, port: u16, command: &str) -> std::process::Output {
        Command::new("ssh")
            .args(crate::support::ssh_base_args(port, &self.client_key))
            .arg(format!("{}@127.0.0.1", current_user()))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

/// A running rsshd (or anything) whose stderr is collected line by line.
pub struct Daemon {
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    pub fn spawn(cmd: &mut Command) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Daemon { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_for(timeout, || self.log().contains(needle))
    }

    /// The port of the first `Server listening on 127.0.0.1 port N.` line.
    pub fn port(&self) -> u16 {
        assert!(
            self.wait_log(
                "Server listening on 127.0.0.1 port ",
                Duration::from_secs(20)
            ),
            "rsshd did not start:\n{}",
            self.log()
        );
        listening_port(&self.log()).unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.stop().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The port in a `Server listening on 127.0.0.1 port N.` line of `text`.
pub fn listening_port(text: &str) -> Option<u16> {
    text.split("Server listening on 127.0.0.1 port ")
        .nth(1)
        .and_then(|r| r.split('.').next())
        .and_then(|p| p.parse().ok())
}

pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// sshd refuses to start without its privilege separation directory.
pub fn sshd_ready() -> Result<(), String> {
    if !Path::new(SSHD).exists() {
        return Err(format!("{SSHD} not installed (openssh-server)"));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("sshd as a reference needs root".into());
    }
    std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
