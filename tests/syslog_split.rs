//! A split daemon that logs to syslog. The confined network process cannot
//! reconnect to syslog (no socket(2), no /dev/log in its chroot), so its lines go
//! to the monitor, which writes them with its own. Checked with a syslog of the
//! test's own: a datagram socket that the daemon sees as /dev/log, in a mount
//! namespace of its own, "restarted" (replaced by a new socket) while the daemon
//! runs, as `systemctl restart rsyslog` does.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::TEST_USER;

/// The daemon, killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test's syslog: a datagram socket at `path`, bound anew by `restart`.
struct Syslog {
    path: PathBuf,
    socket: UnixDatagram,
    /// Every message received so far, as syslog(3) sent it
    /// (`<PRI>Mmm dd hh:mm:ss rsshd[PID]: text`).
    seen: Vec<String>,
}

impl Syslog {
    fn bind(path: &Path) -> Syslog {
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path).expect("bind the test's syslog socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        Syslog {
            path: path.to_path_buf(),
            socket,
            seen: Vec::new(),
        }
    }

    /// What `systemctl restart rsyslog` does to /dev/log: the old socket goes, a
    /// new one takes its path. A sender connected to the old one gets
    /// ECONNREFUSED and must connect again.
    fn restart(&mut self) {
        let fresh = Syslog::bind(&self.path);
        self.socket = fresh.socket;
    }

    /// The first message received from now on (or already seen since the last
    /// restart) that contains `needle`.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if let Some(m) = self.seen.iter().find(|m| m.contains(needle)) {
                return Some(m.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    fn forget(&mut self) {
        self.seen.clear();
    }
}

/// In a private mount namespace, /dev becomes a fresh tmpfs with the few devices
/// rsshd uses bound from the real one and `log` a link to the test's socket; then
/// the daemon is exec'd (so the child's PID is the monitor's).
const NAMESPACE: &str = r#"set -e
d="$1"; shift
mkdir -p "$d/realdev"
mount --rbind /dev "$d/realdev"
mount -t tmpfs -o mode=755 rsshd-test-dev /dev
for n in null zero full random urandom tty ptmx; do
    touch "/dev/$n"; mount --bind "$d/realdev/$n" "/dev/$n"
done
mkdir /dev/pts; mount --rbind "$d/realdev/pts" /dev/pts
ln -s /proc/self/fd /dev/fd
ln -s "$d/log" /dev/log
exec "$@"
"#;

fn network_process(monitor: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{monitor}/task/{monitor}/children")).ok()?;
    text.split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"__net"))
        })
}

/// `ssh TEST_USER@127.0.0.1 true`, which must succeed (killed after 60 s).
fn login(port: u16, key: &Path) {
    let mut ssh = Command::new("ssh");
    ssh.args(support::ssh_base_args(port, key))
        .arg(format!("{TEST_USER}@127.0.0.1"))
        .arg("true");
    let out = support::run_with_input(&mut ssh, b"");
    assert!(
        out.status.success(),
        "login failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The PID syslog(3) put in a message (`rsshd[PID]:`).
fn sender(message: &str) -> Option<u32> {
    let rest = &message[message.find("rsshd[")? + 6..];
    rest[..rest.find(']')?].parse().ok()
}

#[test]
fn network_process_lines_reach_syslog_through_the_monitor_across_a_syslog_restart() {
    if support::skip_without(&["ssh", "ssh-keygen", "unshare", "mount"])
        || support::skip_unless_root_with(TEST_USER)
        || support::skip_unless_root_with("rsshd")
    {
        return;
    }
    let (dir, host_key, client_key) = support::keyed_dir("syslog-split", None);
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1\nPort 0\nHostKey {}\nAuthorizedKeysFile {}/authorized_keys\nPidFile none\nControlSocket none\nPerSourcePenalties no\n",
            host_key.display(),
            dir.display()
        ),
    )
    .expect("write config");
    let mut syslog = Syslog::bind(&dir.join("log"));
    // What does not reach syslog (a failure before logging is set up, or of the
    // namespace set-up itself), for the failure messages.
    let stderr_path = dir.join("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("create stderr file");
    let stderr_text = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    // -D without -e, and as under systemd (INVOCATION_ID): sshd's choice is
    // syslog then.
    let daemon = Daemon(
        Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                NAMESPACE,
                "sh",
            ])
            .arg(&dir)
            .arg(env!("CARGO_BIN_EXE_rsshd"))
            .args(["-D", "-f"])
            .arg(&config)
            .env("INVOCATION_ID", "rsshd-syslog-test")
            .env_remove("RSSHD_PRIVSEP")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start rsshd in a mount namespace"),
    );
    let monitor = daemon.0.id();
    let listening = syslog
        .wait_for(
            "Server listening on 127.0.0.1 port ",
            Duration::from_secs(20),
        )
        .unwrap_or_else(|| {
            panic!(
                "rsshd logged no 'Server listening' line to syslog; its stderr:\n{}",
                stderr_text()
            )
        });
    let port: u16 = listening
        .rsplit("port ")
        .next()
        .and_then(|p| p.trim_end_matches('.').trim().parse().ok())
        .expect("port in the listening line");
    // The monitor logs "Server listening" before it starts the network process.
    let deadline = Instant::now() + Duration::from_secs(10);
    let net = loop {
        match network_process(monitor) {
            Some(p) => break p,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            None => panic!("no network process under the monitor"),
        }
    };

    // A login's `Disconnected from user` line is the network process's; it must
    // come through the monitor, before the syslog restart and after it.
    let disconnected = format!("Disconnected from user {TEST_USER} ");
    for when in ["before the syslog restart", "after the syslog restart"] {
        if when.starts_with("after") {
            syslog.forget();
            syslog.restart();
        }
        login(port, &client_key);
        let line = syslog
            .wait_for(&disconnected, Duration::from_secs(10))
            .unwrap_or_else(|| {
                panic!(
                    "{when}: the network process's line never reached syslog; got {:?}",
                    syslog.seen
                )
            });
        assert_eq!(
            sender(&line),
            Some(monitor),
            "{when}: the network process's line was not sent by the monitor: {line}"
        );
    }
    assert_eq!(
        network_process(monitor),
        Some(net),
        "the network process did not survive the syslog restart; got {:?}",
        syslog.seen
    );
    assert!(
        !syslog.seen.iter().any(|m| m.contains("network process")),
        "{:?}",
        syslog.seen
    );
}
