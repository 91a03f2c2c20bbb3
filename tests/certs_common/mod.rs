//! Shared by the certificate tests (`certs.rs`, `key_commands.rs`): CAs and
//! certificates made by the real `ssh-keygen`, an rsshd and a reference OpenSSH
//! sshd on the same config lines, and the real `ssh` client.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::{self, Server, client_opts, keygen, run_with_input};

pub const SSHD: &str = "/usr/sbin/sshd";

/// A CA made by ssh-keygen in `dir`; returns the private key's path.
pub fn ca(dir: &Path, name: &str) -> PathBuf {
    keygen(dir, name)
}

/// A fresh user key `name` and its certificate `name-cert.pub`, signed by `ca`
/// with `ssh-keygen -s ca -I id ARGS`; returns the private key's path (ssh picks
/// the certificate up beside it).
pub fn cert(dir: &Path, name: &str, ca: &Path, id: &str, args: &[&str]) -> PathBuf {
    let key = keygen(dir, name);
    let o = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(ca)
        .args(["-I", id])
        .args(args)
        .arg(key.with_extension("pub"))
        .output()
        .expect("ssh-keygen -s");
    assert!(
        o.status.success(),
        "ssh-keygen -s: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    key
}

pub fn fingerprint(pub_file: &Path) -> String {
    let o = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(pub_file)
        .output()
        .expect("ssh-keygen -l");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string()
}

/// rsshd with `lines` (its own config, no key accepted unless `lines` say so).
pub fn rsshd(dir: &Path, lines: &str) -> Server {
    rsshd_with_tail(dir, lines, "")
}

/// [`rsshd`] with `tail` after the test's own global lines (`Match` blocks).
pub fn rsshd_with_tail(dir: &Path, lines: &str, tail: &str) -> Server {
    let config = write_config(dir, lines);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(tail);
    std::fs::write(&config, text).unwrap();
    Server::spawn(dir.to_path_buf(), config, dir.join("unused"))
}

/// The config `rsshd` runs on (its host key made unless the test made one).
pub fn write_config(dir: &Path, lines: &str) -> PathBuf {
    let host_key = dir.join("host_key");
    if !host_key.exists() {
        keygen(dir, "host_key");
    }
    let config = dir.join("rsshd_config");
    std::fs::write(
        &config,
        format!(
            "{lines}\nPerSourcePenalties no\nListenAddress 127.0.0.1\nPort 0\nHostKey {}\nPermitRootLogin yes\nPidFile none\nControlSocket {}/control.sock\n",
            host_key.display(),
            dir.display()
        ),
    )
    .unwrap();
    config
}

pub type RefSshd = crate::support::SshdReference;

/// OpenSSH's sshd with the same `lines`, logging to a file.
impl RefSshd {
    pub fn start(dir: &Path, lines: &str) -> RefSshd {
        RefSshd::start_with_tail(dir, lines, "")
    }

    /// [`RefSshd::start`] with `tail` after the global lines (`Match` blocks).
    pub fn start_with_tail(dir: &Path, lines: &str, tail: &str) -> RefSshd {
        let host_key = keygen(dir, "ref_host_key");
        RefSshd::spawn(
            dir,
            &format!(
                "{lines}\nListenAddress 127.0.0.1\nHostKey {}\nPermitRootLogin yes\nPidFile none\nLogLevel VERBOSE\n{tail}",
                host_key.display()
            ),
        )
    }
}

/// `ssh -i key user@127.0.0.1 -p port ARGS...` (the certificate beside the key is
/// offered first, then the plain key).
pub fn ssh(port: u16, key: &Path, user: &str, args: &[&str]) -> Output {
    let mut c = Command::new("ssh");
    c.args(client_opts(key))
        .args(["-p", &port.to_string()])
        .arg(format!("{user}@127.0.0.1"))
        .args(args);
    run_with_input(&mut c, b"")
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

pub fn needs_tools() -> bool {
    support::skip_without(&["ssh", "ssh-keygen"])
}

/// Write an executable script (root's, mode 0755, as sshd requires of the
/// command) into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}
