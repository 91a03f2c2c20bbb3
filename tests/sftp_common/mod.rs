//! Shared by the `ChrootDirectory` and `internal-sftp` tests (`chroot_sftp.rs`,
//! `internal_sftp.rs`): a jail for the test user, the real OpenSSH clients run
//! against a server, and OpenSSH's sshd started beside rsshd as a reference.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{TEST_USER, client_opts, keygen, run_with_input, skip_unless_root_with};

pub const SSHD: &str = "/usr/sbin/sshd";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The test user's ids.
pub fn test_user() -> nix::unistd::User {
    nix::unistd::User::from_name(TEST_USER)
        .unwrap()
        .expect("test user")
}

/// Skip unless root with the test user and the given programs.
pub fn skip_unless_ready(programs: &[&str]) -> bool {
    skip_unless_root_with(TEST_USER) || crate::support::skip_without(programs)
}

/// A jail as the sftp-only recipe has it: `base/USER` owned by root, mode 0755
/// (so `ChrootDirectory base/%u` names it), with `upload` owned by the user.
/// `base` is a fresh directory under `/srv` (root's, 0755 on Debian), removed at
/// the end.
pub struct Jail {
    pub base: PathBuf,
    pub root: PathBuf,
    pub upload: PathBuf,
}

impl Jail {
    pub fn new(tag: &str) -> Jail {
        let srv = Path::new("/srv");
        let m = std::fs::metadata(srv).expect("/srv");
        assert!(
            m.uid() == 0 && m.mode() & 0o022 == 0,
            "/srv must be root's and not writable by others to hold test jails"
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = srv.join(format!("rsshd-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join(TEST_USER);
        let upload = root.join("upload");
        std::fs::create_dir_all(&upload).unwrap();
        for d in [&base, &root, &upload] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let u = test_user();
        std::os::unix::fs::chown(&upload, Some(u.uid.as_raw()), Some(u.gid.as_raw())).unwrap();
        Jail { base, root, upload }
    }

    /// `ChrootDirectory` naming this jail with sshd's `%u` token.
    pub fn pattern(&self) -> String {
        format!("{}/%u", self.base.display())
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// `sftp -b -` (batch mode: stops at the first failing command unless it starts
/// with `-`) as `user` on `port`, with the script on stdin.
pub fn sftp(port: u16, key: &Path, user: &str, script: &str) -> Output {
    let mut c = Command::new("sftp");
    c.args(client_opts(key))
        .args(["-P", &port.to_string(), "-b", "-"])
        .arg(format!("{user}@127.0.0.1"));
    run_with_input(&mut c, script.as_bytes())
}

/// stdout and stderr of a client, for messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `ssh user@127.0.0.1 command` on `port`.
pub fn ssh(port: u16, key: &Path, user: &str, command: Option<&str>) -> Output {
    let mut c = Command::new("ssh");
    c.args(client_opts(key))
        .args(["-p", &port.to_string()])
        .arg(format!("{user}@127.0.0.1"));
    if let Some(cmd) = command {
        c.arg(cmd);
    }
    run_with_input(&mut c, b"")
}

/// OpenSSH's sshd on a free port, with `config` after a base that names its own
/// host key and rsshd's `authorized_keys`.
pub struct RefSshd {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl RefSshd {
    pub fn start(dir: &Path, authorized_keys: &Path, config: &str) -> RefSshd {
        let host_key = keygen(
            dir,
            &format!("ref_host_key_{}", NEXT.fetch_add(1, Ordering::Relaxed)),
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = host_key.with_extension("conf");
        std::fs::write(
            &cfg,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile none\n{config}\n",
                host_key.display(),
                authorized_keys.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd");
        let err = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines().map_while(Result::ok) {
                    if l.contains("Server listening on") {
                        let _ = tx.send(());
                    }
                    log.lock().unwrap().push(l);
                }
            });
        }
        assert!(
            rx.recv_timeout(Duration::from_secs(20)).is_ok(),
            "reference sshd did not start: {}",
            log.lock().unwrap().join("\n")
        );
        RefSshd { child, port, log }
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for RefSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines sftp's batch mode prints for a script (commands echoed as
/// `sftp> ...`, their output, and the errors), without the connection banner.
pub fn transcript(o: &Output) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.extend(
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| !l.starts_with("Connected to"))
            .map(|l| format!("stderr: {l}")),
    );
    lines
}

/// Processes (pid, exe, cmdline, status) below `ancestor`, read from /proc.
pub fn descendants(ancestor: u32) -> Vec<(u32, String, String, String)> {
    let mut parent = std::collections::HashMap::new();
    let mut info = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        parent.insert(pid, ppid);
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        info.push((pid, exe, cmdline, status));
    }
    info.into_iter()
        .filter(|(pid, ..)| {
            let mut p = *pid;
            for _ in 0..64 {
                match parent.get(&p) {
                    Some(&pp) if pp == ancestor => return true,
                    Some(&pp) if pp > 1 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}
