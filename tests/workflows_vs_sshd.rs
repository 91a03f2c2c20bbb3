//! Everyday workflows checked side by side with OpenSSH's own sshd, started by
//! the test on a free port with the same authorized_keys: the terminal a
//! `ssh -tt` session gets (`stty -a`), the answer to an SSH-1 client, and
//! authentication retries (password re-prompts, MaxAuthTries) with sshd's log
//! words.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

const SSHD: &str = "/usr/sbin/sshd";

/// The reference sshd, sharing rsshd's authorized_keys, with its log kept.
struct RefSshd {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl RefSshd {
    fn start(dir: &Path, extra: &str) -> RefSshd {
        let host_key = keygen(dir, "ref_host_key");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let cfg = dir.join("ref_sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "{extra}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile none\nUsePAM yes\n",
                host_key.display(),
                dir.join("authorized_keys").display()
            ),
        )
        .expect("write sshd config");
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&cfg)
            .args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd");
        let err = child.stderr.take().expect("stderr");
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
            "reference sshd did not start"
        );
        RefSshd { child, port, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for RefSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Both servers on the same config lines, the same users and keys.
fn both(extra: &str) -> Option<(Server, RefSshd)> {
    if skip_unless_root_with(TEST_USER) || skip_without(&["ssh", "ssh-keygen", SSHD]) {
        return None;
    }
    let srv = Server::start(&format!("{extra}\nUsePAM yes"));
    let reference = RefSshd::start(&srv.dir, extra);
    Some((srv, reference))
}

/// Wait until `log()` has a line containing `needle` (logs trail the client).
fn wait_for(log: impl Fn() -> String, needle: &str) -> String {
    for _ in 0..100 {
        let l = log();
        if l.contains(needle) {
            return l;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    log()
}

/// Log lines about connections from `port`, with the port taken out so the two
/// servers' lines compare.
fn lines_for(log: &str, port: u16) -> Vec<String> {
    let tag = format!("port {port}");
    log.lines()
        .filter(|l| l.contains(&tag))
        .map(|l| l.replace(&tag, "port P"))
        .collect()
}

/// The terminal of `ssh -tt host stty -a` typed into a terminal whose modes
/// `stty_args` set first; the `stty -a` text.
fn remote_stty(port: u16, key: &Path, stty_args: &str) -> String {
    let ssh = format!(
        "stty {stty_args} && exec ssh -tt {} {TEST_USER}@127.0.0.1 stty -a",
        ssh_base_args(port, key).join(" ")
    );
    let mut client = PtyClient::spawn(Command::new("/bin/sh").args(["-c", &ssh]), 24, 80);
    let status = client.wait_exit(Duration::from_secs(30));
    let text = client.text();
    assert!(
        status.is_some_and(|s| s.success()),
        "ssh -tt stty -a failed: {status:?}\n{text}"
    );
    // Whatever came before (a motd) is not the terminal's.
    let start = text
        .find("speed ")
        .unwrap_or_else(|| panic!("no stty output:\n{text}"));
    text[start..]
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Item 3: the client sends 255 for a disabled control character; rsshd set it
/// to the byte 0xFF (`eol = M-^?`), so a typed 0xFF ended a line. Now every
/// character and flag is what sshd gives for the same client terminal: kernel
/// defaults, and a terminal with unusual characters, flags and speed (a
/// pseudo-terminal, as the client's is here, keeps its own size and parity
/// bits and one speed for both directions; the unit tests cover those).
#[test]
fn stty_under_ssh_tt_is_sshds() {
    let Some((srv, reference)) = both("") else {
        return;
    };
    for modes in [
        "sane",
        "intr ^G quit undef erase ^H kill ^U eol ^X eol2 undef susp undef \
         -ixon ixany iutf8 -echoctl tostop -iexten -opost 19200",
    ] {
        let ours = remote_stty(srv.port, &srv.client_key, modes);
        let theirs = remote_stty(reference.port, &srv.client_key, modes);
        assert_eq!(
            ours, theirs,
            "stty -a differs from sshd's for client modes `{modes}`\nrsshd:\n{ours}\nsshd:\n{theirs}"
        );
        // The disabled characters the client sent as 255.
        assert!(theirs.contains("eol2 = <undef>"), "{theirs}");
    }
}

/// What a server answers an SSH-1.5 client: everything it sends until it
/// closes.
fn answer_to_ssh1(port: u16) -> (String, u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let local = s.local_addr().expect("addr").port();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"SSH-1.5-OldClient_1.0\r\n").expect("write");
    let mut got = Vec::new();
    let r = s.read_to_end(&mut got);
    assert!(r.is_ok(), "not closed: {r:?}, got {got:?}");
    (String::from_utf8_lossy(&got).into_owned(), local)
}

/// Item 7: an SSH-1 banner is answered "Protocol major versions differ." and
/// the connection closed, with sshd's two log lines.
#[test]
fn ssh1_client_is_told_protocol_versions_differ() {
    let Some((srv, reference)) = both("") else {
        return;
    };
    let (ours, our_port) = answer_to_ssh1(srv.port);
    let (theirs, their_port) = answer_to_ssh1(reference.port);
    let after_id = |s: &str| s.split_once("\r\n").map(|(_, r)| r.to_string());
    assert!(ours.starts_with("SSH-2.0-"), "{ours:?}");
    assert_eq!(
        after_id(&theirs).as_deref(),
        Some("Protocol major versions differ.\r\n")
    );
    assert_eq!(after_id(&ours), after_id(&theirs), "{ours:?} vs {theirs:?}");
    let needle = "could not read protocol version";
    let our_log = wait_for(|| srv.log(), needle);
    let their_log = wait_for(|| reference.log(), needle);
    let differ = "Protocol major versions differ: 2 vs. 1";
    assert!(our_log.contains(differ), "{our_log}");
    assert!(their_log.contains(differ), "{their_log}");
    assert_eq!(
        lines_for(&our_log, our_port),
        lines_for(&their_log, their_port),
        "rsshd:\n{our_log}\nsshd:\n{their_log}"
    );
    // A version-2 client is still served after it.
    let out = srv.ssh_run(TEST_USER, "echo ok", b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

/// `ssh -v` offering `keys` in order (identities only), so its key offers and
/// its disconnect message show.
fn offer_keys(port: u16, keys: &[PathBuf]) -> Output {
    let mut c = Command::new("ssh");
    c.args(["-v", "-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o"])
        .args(["BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o"])
        .args(["UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10"]);
    for k in keys {
        c.arg("-i").arg(k);
    }
    c.args(["-p", &port.to_string()])
        .arg(format!("{TEST_USER}@127.0.0.1"))
        .arg("echo in");
    run_with_input(&mut c, b"")
}

/// Item 9: with sshd's default MaxAuthTries 6, the sixth refused key ends the
/// connection (a seventh, good key never gets a turn), with sshd's disconnect
/// and log words; five refused keys and a good sixth log in.
#[test]
fn max_auth_tries_stops_key_offers_as_sshd() {
    let Some((srv, reference)) = both("") else {
        return;
    };
    let dir = temp_dir("maxauth-keys");
    let bad: Vec<PathBuf> = (0..6).map(|i| keygen(&dir, &format!("bad{i}"))).collect();
    for (name, port, log) in [
        (
            "rsshd",
            srv.port,
            Box::new(|| srv.log()) as Box<dyn Fn() -> String>,
        ),
        ("sshd", reference.port, Box::new(|| reference.log())),
    ] {
        let mut keys = bad[..5].to_vec();
        keys.push(srv.client_key.clone());
        let ok = offer_keys(port, &keys);
        assert_eq!(
            String::from_utf8_lossy(&ok.stdout),
            "in\n",
            "{name}: five refused keys, then the good one: {ok:?}\n{}",
            log()
        );
        let mut keys = bad.clone();
        keys.push(srv.client_key.clone());
        let out = offer_keys(port, &keys);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "{name}: logged in with the seventh key: {out:?}"
        );
        // The sixth refusal is the DISCONNECT itself, so the client offers six
        // keys and never the seventh (before, rsshd answered the sixth with a
        // USERAUTH_FAILURE and the client offered the seventh too).
        assert_eq!(
            err.matches("Offering public key: ").count(),
            6,
            "{name}: {err}"
        );
        let end: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("disconnect") || l.contains("Disconnected"))
            .collect();
        assert_eq!(
            end,
            [
                format!(
                    "Received disconnect from 127.0.0.1 port {port}:2: Too many authentication failures"
                ),
                format!("Disconnected from 127.0.0.1 port {port}"),
            ],
            "{name}: {err}"
        );
        let l = wait_for(&log, "Too many authentication failures [preauth]");
        for words in [
            format!(
                "maximum authentication attempts exceeded for {TEST_USER} from 127.0.0.1 port "
            ),
            format!("Disconnecting authenticating user {TEST_USER} 127.0.0.1 port "),
        ] {
            assert!(l.contains(&words), "{name}: no `{words}` in\n{l}");
        }
        assert!(
            !l.contains(&format!(
                "Connection closed by authenticating user {TEST_USER}"
            )),
            "{name}: {l}"
        );
    }
}

/// `ssh` logging in by password only, its answers to the prompts coming from
/// an askpass program: wrong ones until the `good_at`th. Returns the output and
/// how many times the client asked.
fn password_logins(port: u16, dir: &Path, good_at: u32, prompts: u32) -> (Output, u32) {
    let count = dir.join(format!("asked-{port}-{good_at}-{prompts}"));
    let askpass = dir.join(format!("askpass-{port}-{good_at}-{prompts}"));
    std::fs::write(
        &askpass,
        format!(
            "#!/bin/sh\nn=$(( $(cat {c} 2>/dev/null || echo 0) + 1 ))\necho $n > {c}\n\
             if [ $n -ge {good_at} ]; then echo rsshd-test-pw-1; else echo wrong-$n; fi\n",
            c = count.display()
        ),
    )
    .expect("write askpass");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o"])
        .args([
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PubkeyAuthentication=no",
        ])
        .args(["-o", "PreferredAuthentications=password", "-o"])
        .arg(format!("NumberOfPasswordPrompts={prompts}"))
        .args(["-o", "ConnectTimeout=10", "-p", &port.to_string()])
        .arg(format!("{TEST_USER}@127.0.0.1"))
        .arg("echo in")
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0");
    let out = run_with_input(&mut c, b"");
    let asked = std::fs::read_to_string(&count)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    (out, asked)
}

/// Item 9: after a wrong password the client may ask again, as with sshd
/// (before, the password method was withdrawn after one try), until its
/// NumberOfPasswordPrompts or the server's MaxAuthTries.
#[test]
fn wrong_passwords_are_asked_again_as_sshd() {
    let Some((srv, reference)) = both("MaxAuthTries 4") else {
        return;
    };
    let dir = temp_dir("password-retries");
    for (name, port, log) in [
        (
            "rsshd",
            srv.port,
            Box::new(|| srv.log()) as Box<dyn Fn() -> String>,
        ),
        ("sshd", reference.port, Box::new(|| reference.log())),
    ] {
        // Right on the third prompt.
        let (out, asked) = password_logins(port, &dir, 3, 3);
        assert_eq!(
            (String::from_utf8_lossy(&out.stdout).as_ref(), asked),
            ("in\n", 3),
            "{name}: {out:?}\n{}",
            log()
        );
        let l = wait_for(&log, &format!("Accepted password for {TEST_USER}"));
        assert!(
            l.matches(&format!("Failed password for {TEST_USER} from 127.0.0.1"))
                .count()
                >= 2,
            "{name}: {l}"
        );
        // Never right: the client gives up after its three prompts.
        let (out, asked) = password_logins(port, &dir, 99, 3);
        assert!(
            !out.status.success() && asked == 3,
            "{name}: {asked} {out:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stderr)
                .matches("Permission denied, please try again.")
                .count(),
            2,
            "{name}: {out:?}"
        );
        // MaxAuthTries 4 ends it at the fourth wrong password of ten prompts:
        // the DISCONNECT comes instead of the fourth failure, so the client
        // asks exactly four times (rsshd used to answer that failure first and
        // the client asked a fifth time).
        let failed = || log().matches("Failed password for ").count();
        let before = failed();
        let (out, asked) = password_logins(port, &dir, 99, 10);
        let err = String::from_utf8_lossy(&out.stderr);
        let l = wait_for(&log, "Too many authentication failures [preauth]");
        assert!(!out.status.success(), "{name}: {out:?}");
        // The failure lines and the disconnect's are written by different
        // processes (sshd's monitor and child; rsshd's monitor and network
        // process), so the last failure may follow the disconnect in the log.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while failed() - before < 4 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(failed() - before, 4, "{name}: {l}");
        assert_eq!(asked, 4, "{name}: asked {asked} times: {err}\n{l}");
        // What the user sees, word for word.
        let seen: Vec<&str> = err
            .lines()
            .filter(|l| !l.starts_with("Warning: Permanently added"))
            .collect();
        assert_eq!(
            seen,
            [
                "Permission denied, please try again.".to_string(),
                "Permission denied, please try again.".to_string(),
                "Permission denied, please try again.".to_string(),
                format!(
                    "Received disconnect from 127.0.0.1 port {port}:2: Too many authentication failures"
                ),
                format!("Disconnected from 127.0.0.1 port {port}"),
            ],
            "{name}: {err}"
        );
        assert!(
            l.contains(&format!(
                "maximum authentication attempts exceeded for {TEST_USER} from 127.0.0.1 port "
            )),
            "{name}: {l}"
        );
    }
}

/// `tests/auth_retries_clients.py MODE PORT USER [ARGS]`: its JSON line.
fn retries_client(mode: &str, port: u16, extra: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/auth_retries_clients.py");
    let mut c = Command::new("python3");
    c.arg(script)
        .args([mode, &port.to_string(), TEST_USER])
        .args(extra);
    let out = run_with_input(&mut c, b"");
    assert!(out.status.success(), "{mode}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The SHA256 fingerprint of the public key at `path`, for `plink -hostkey`.
fn fingerprint(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen -l");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string()
}

/// Item 9 with paramiko and PuTTY's plink: wrong passwords until MaxAuthTries
/// ends the connection. Both clients are refused and asked as often as by
/// sshd, and see sshd's disconnect (reason 2, its words).
#[test]
fn max_auth_tries_with_paramiko_and_plink_as_sshd() {
    if skip_without(&["python3", "plink"]) {
        return;
    }
    let Some((srv, reference)) = both("MaxAuthTries 4") else {
        return;
    };
    let ours = fingerprint(&srv.dir.join("host_key.pub"));
    let theirs = fingerprint(&srv.dir.join("ref_host_key.pub"));
    let paramiko = (
        retries_client("paramiko", srv.port, &[]),
        retries_client("paramiko", reference.port, &[]),
    );
    // paramiko sends a password first (no free `none`): three failures, and
    // the fourth wrong password is answered with the disconnect (which
    // paramiko also reports as a refusal).
    assert_eq!(
        paramiko.1,
        r#"{"refused": 4, "failures": 3, "ended": "SSHException", "disconnect": ["Disconnect (code 2): Too many authentication failures"]}"#,
        "sshd"
    );
    assert_eq!(paramiko.0, paramiko.1, "rsshd vs sshd\n{}", srv.log());
    let plink = (
        retries_client("plink", srv.port, &[&ours]),
        retries_client("plink", reference.port, &[&theirs]),
    );
    assert!(
        plink
            .1
            .starts_with(r#"{"asked": 4, "fatal": "FATAL ERROR: "#)
            && plink.1.contains("Too many authentication failures"),
        "sshd: {}",
        plink.1
    );
    assert_eq!(plink.0, plink.1, "rsshd vs sshd\n{}", srv.log());
}
