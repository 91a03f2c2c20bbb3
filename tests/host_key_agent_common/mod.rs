//! Shared by `host_key_agent.rs`: a real `ssh-agent`, host keys made by
//! `ssh-keygen` whose private halves only the agent gets, rsshd (one process or
//! split) and a reference OpenSSH sshd on the same lines, and the real `ssh`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, Server, current_user, keygen, run_with_input};

pub const SSHD: &str = "/usr/sbin/sshd";

pub fn unusable() -> bool {
    support::skip_without(&["ssh", "ssh-keygen", "ssh-agent", "ssh-add"])
}

/// A real `ssh-agent` in the foreground on `sock`, killed (and reaped) on drop.
pub struct Agent {
    child: Child,
    pub sock: PathBuf,
}

impl Agent {
    pub fn start(sock: &Path) -> Agent {
        let _ = std::fs::remove_file(sock);
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        let end = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(sock).is_err() {
            assert!(Instant::now() < end, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent {
            child,
            sock: sock.to_path_buf(),
        }
    }

    pub fn add(&self, private: &Path) {
        let o = Command::new("ssh-add")
            .arg("-q")
            .arg(private)
            .env("SSH_AUTH_SOCK", &self.sock)
            .output()
            .expect("ssh-add");
        assert!(
            o.status.success(),
            "ssh-add: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Dies as a crashed agent does: the socket stays, nobody listens.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A host key made now: the private key stays in `dir/private/` (for ssh-add
/// only), the daemon's `HostKey` names `dir/NAME.pub`. Returns (private, public).
pub fn host_key(dir: &Path, name: &str, kind: &str) -> (PathBuf, PathBuf) {
    let private_dir = dir.join("private");
    std::fs::create_dir_all(&private_dir).expect("private dir");
    let private = private_dir.join(name);
    let mut c = Command::new("ssh-keygen");
    c.args(["-q", "-N", "", "-C", name, "-t", kind, "-f"])
        .arg(&private);
    if kind == "rsa" {
        c.args(["-b", "2048"]);
    }
    assert!(c.status().expect("ssh-keygen").success());
    let public = dir.join(format!("{name}.pub"));
    std::fs::copy(private.with_extension("pub"), &public).expect("copy pub");
    (private, public)
}

/// `[127.0.0.1]:PORT` known_hosts lines for `publics`.
pub fn known_hosts(dir: &Path, port: u16, publics: &[&Path]) -> PathBuf {
    let mut text = String::new();
    for p in publics {
        let line = std::fs::read_to_string(p).expect("pub");
        let mut fields = line.split_whitespace();
        let (kind, blob) = (fields.next().expect("type"), fields.next().expect("blob"));
        text.push_str(&format!("[127.0.0.1]:{port} {kind} {blob}\n"));
    }
    let file = dir.join(format!("known_hosts-{port}"));
    std::fs::write(&file, text).expect("known_hosts");
    file
}

/// Lines both daemons read: the host keys, the agent, the client key.
pub fn common_lines(dir: &Path, publics: &[&Path], agent: &str) -> String {
    let mut text = String::new();
    for p in publics {
        text.push_str(&format!("HostKey {}\n", p.display()));
    }
    text.push_str(&format!(
        "HostKeyAgent {agent}\nAuthorizedKeysFile {}/authorized_keys\nPermitRootLogin yes\n\
         PidFile none\n",
        dir.display()
    ));
    text
}

/// The client key, accepted for every user.
pub fn client_key(dir: &Path) -> PathBuf {
    let key = keygen(dir, "client_key");
    std::fs::copy(key.with_extension("pub"), dir.join("authorized_keys")).expect("authorized");
    key
}

/// rsshd on `lines`, one process or split (`RSSHD_PRIVSEP=split`), with `env`.
pub fn rsshd(dir: &Path, lines: &str, split: bool, env: &[(&str, &Path)]) -> Server {
    let config = dir.join(format!(
        "rsshd_config-{}",
        if split { "split" } else { "one" }
    ));
    std::fs::write(
        &config,
        format!(
            "{lines}PerSourcePenalties no\nListenAddress 127.0.0.1\nPort 0\n\
             ControlSocket {}/control-{split}.sock\n",
            dir.display()
        ),
    )
    .expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rsshd"));
    cmd.args(["-D", "-e", "-f"]).arg(&config);
    cmd.env_remove("SSH_AUTH_SOCK");
    for (k, v) in env {
        cmd.env(k, v);
    }
    if split {
        cmd.env("RSSHD_PRIVSEP", "split");
    }
    Server::spawn_command(cmd, dir.to_path_buf(), config, dir.join("client_key"))
}

pub type RefSshd = crate::support::SshdReference;

/// OpenSSH's sshd on `lines` and a free port, logging to a file.
impl RefSshd {
    pub fn start(dir: &Path, lines: &str) -> RefSshd {
        RefSshd::spawn(dir, &format!("{lines}ListenAddress 127.0.0.1\nUsePAM no\n"))
    }
}

pub fn wait_for(log: impl Fn() -> String, needle: &str) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if log().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The real `ssh`, strict about the host key, offering only `algorithm` (if
/// given), `-v` so the negotiated host key algorithm shows.
pub fn strict_ssh(port: u16, key: &Path, known: &Path, algorithm: Option<&str>) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-v", "-i"])
        .arg(key)
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .args(["-o", "StrictHostKeyChecking=yes", "-o"])
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args(["-o", "ConnectTimeout=20"]);
    if let Some(a) = algorithm {
        c.arg("-o").arg(format!("HostKeyAlgorithms={a}"));
    }
    c.args(["-p", &port.to_string()])
        .arg(format!("{}@127.0.0.1", current_user()));
    c
}

pub fn run(port: u16, key: &Path, known: &Path, algorithm: Option<&str>) -> Output {
    run_with_input(
        strict_ssh(port, key, known, algorithm).args(["echo", "agent-ok"]),
        b"",
    )
}

pub fn assert_ok(o: &Output, algorithm: &str, log: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "agent-ok",
        "{algorithm}: {err}\n--- daemon:\n{log}"
    );
    assert!(
        err.contains(&format!("kex: host key algorithm: {algorithm}")),
        "{algorithm} not negotiated: {err}"
    );
}

/// The monitor's network process (`rsshd __net`), if it runs split.
pub fn network_process(monitor: u32) -> Option<u32> {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        let found = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let p = e.path();
                let stat = std::fs::read_to_string(p.join("stat")).ok()?;
                let parent: u32 = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                let cmdline = std::fs::read(p.join("cmdline")).ok()?;
                (parent == monitor && String::from_utf8_lossy(&cmdline).contains("__net"))
                    .then_some(pid)
            });
        if found.is_some() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

pub fn has_network_process(monitor: u32) -> bool {
    network_process(monitor).is_some()
}

/// An ssh session kept open across the agent's death.
pub struct Held {
    child: Child,
    pub stdin: ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Held {
    pub fn open(mut cmd: Command) -> Held {
        let mut child = cmd
            .arg("echo ready; read x; echo got-$x")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let held = Held {
            child,
            stdin,
            lines,
        };
        assert_eq!(held.next(), "ready");
        held
    }

    pub fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| "(nothing)".into())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn check(
    program: &str,
    config: &Path,
    flag: &str,
    env: &[(&str, &Path)],
    cwd: &Path,
) -> Output {
    let mut c = Command::new(program);
    c.arg(flag).arg("-f").arg(config).current_dir(cwd);
    c.env_remove("SSH_AUTH_SOCK");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run -t")
}
