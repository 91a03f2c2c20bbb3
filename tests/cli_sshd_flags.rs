//! sshd's flags as an admin uses them (`-E`, `-V`, `-G`, `-T`, `-g`, `-4`, `-c`, `-k`,
//! `-u`, `-r`, `-C`, `-d`), PidFile, error messages, and the first run on the
//! built-in defaults with the real `ssh`, `scp` and `sftp`.

mod cli_common;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cli_common::*;
use support::*;

fn rsshd(args: &[&str]) -> Output {
    Command::new(RSSHD)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn daemon(s: &Setup, flags: &[&str]) -> Daemon {
    Daemon::spawn(Command::new(RSSHD).args(flags).arg("-f").arg(&s.config))
}

#[test]
fn version_line_like_sshd_s() {
    let o = rsshd(&["-V"]);
    assert!(o.status.success());
    // On stderr, as sshd's `OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.17 ...`.
    assert_eq!(
        text(&o.stderr),
        format!(
            "rsshd_{}, russh 0.65.1 (aws-lc-rs)\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn log_file_appends_and_combines_with_foreground() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let s = Setup::daemon("logfile", "");
    let log = s.dir.join("rsshd.log");
    let file_text = || std::fs::read_to_string(&log).unwrap_or_default();
    for round in 1..=2 {
        let mut d = daemon(&s, &["-D", "-E", log.to_str().unwrap()]);
        assert!(
            wait_for(Duration::from_secs(20), || file_text()
                .matches("Server listening on 127.0.0.1 port ")
                .count()
                == round),
            "round {round}: {}",
            file_text()
        );
        // This round's line is the last one.
        let all = file_text();
        let last = all.rfind("Server listening on 127.0.0.1 port ").unwrap();
        let port = listening_port(&all[last..]).unwrap();
        let out = s.ssh_port(port, "true");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let accepted = format!("Accepted publickey for {} from 127.0.0.1", current_user());
        assert!(
            wait_for(Duration::from_secs(5), || file_text()
                .matches(&accepted)
                .count()
                == round),
            "round {round}: {}",
            file_text()
        );
        d.stop();
        assert_eq!(d.log(), "", "with -E nothing goes to stderr");
    }
    // Created by the first round with sshd's mode, appended to by the second.
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let o = rsshd(&[
        "-D",
        "-E",
        "/nonexistent-dir/x.log",
        "-f",
        s.config.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).starts_with("Couldn't open logfile /nonexistent-dir/x.log: "),
        "{}",
        text(&o.stderr)
    );
}

/// `-G` prints the configuration without looking at host keys (OpenSSH 9.3's
/// flag, for use before keys exist); `-T` checks them first, as sshd's `-T` does.
#[test]
fn print_config_without_keys_and_extended_test() {
    let dir = temp_dir("flags");
    let cfg = dir.join("sshd_config");
    std::fs::write(
        &cfg,
        format!("HostKey {}/absent_key\nIdleTimeout 5m\n", dir.display()),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let g = rsshd(&["-G", "-f", c]);
    assert!(g.status.success(), "{}", text(&g.stderr));
    assert!(text(&g.stdout).lines().any(|l| l == "idletimeout 300"));
    let t = rsshd(&["-T", "-f", c]);
    assert_eq!(t.status.code(), Some(1));
    assert!(t.stdout.is_empty());
    assert!(
        text(&t.stderr).contains("absent_key"),
        "{}",
        text(&t.stderr)
    );
    // -C applies Match for -G as for -T; without either it is an error, as in sshd.
    let c_alone = rsshd(&["-f", c, "-C", "user=x"]);
    assert_eq!(c_alone.status.code(), Some(255));
    assert!(text(&c_alone.stderr).contains("(-C) provided without test mode (-T)"));
}

/// Flags that are config values in sshd, seen through `-G`.
#[test]
fn flags_that_set_config_values() {
    let dir = temp_dir("flags");
    let cfg = dir.join("sshd_config");
    std::fs::write(&cfg, "LoginGraceTime 2m\n").unwrap();
    let c = cfg.to_str().unwrap();
    let lines = |o: &Output| text(&o.stdout);
    let o = rsshd(&["-G", "-f", c, "-g", "30", "-4", "-p", "2022"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for want in ["logingracetime 30", "addressfamily inet", "port 2022"] {
        assert!(
            lines(&o).lines().any(|l| l == want),
            "{want}:\n{}",
            lines(&o)
        );
    }
    let o = rsshd(&["-G", "-f", c, "-6"]);
    assert!(lines(&o).lines().any(|l| l == "addressfamily inet6"));
    let o = rsshd(&["-G", "-f", c, "-g", "soon"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stderr), "Invalid login grace time.\n");

    // -c is a HostCertificate line: the same verdict as the line in a file.
    let o = rsshd(&["-G", "-f", c, "-c", "/etc/ssh/host-cert.pub"]);
    let file_cfg = dir.join("cert_config");
    std::fs::write(&file_cfg, "HostCertificate /etc/ssh/host-cert.pub\n").unwrap();
    let f = rsshd(&["-G", "-f", file_cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), f.status.code());
    let cert_line = |o: &Output| {
        lines(o)
            .lines()
            .find(|l| l.starts_with("hostcertificate "))
            .map(str::to_string)
    };
    assert_eq!(
        cert_line(&f).as_deref(),
        Some("hostcertificate /etc/ssh/host-cert.pub"),
        "{}",
        lines(&f)
    );
    assert_eq!(cert_line(&o), cert_line(&f));

    // -u: 0 to 65 as sshd; -k (protocol 1) accepted with a warning; -r accepted.
    let o = rsshd(&["-G", "-f", c, "-u", "66"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stderr), "Invalid utmp length.\n");
    assert!(rsshd(&["-G", "-f", c, "-u0", "-r"]).status.success());
    let o = rsshd(&["-G", "-f", c, "-k", "3600"]);
    assert!(o.status.success());
    assert!(text(&o.stderr).contains("obsolete"), "{}", text(&o.stderr));
}

/// PidFile: written once listening, moved by a reload that changes it, removed at
/// exit only while it names this process; none under -d.
#[test]
fn pid_file_follows_the_daemon() {
    if skip_without(&["ssh-keygen"]) {
        return;
    }
    let s = Setup::daemon("pidfile", "");
    let (a, b) = (s.dir.join("a.pid"), s.dir.join("b.pid"));
    let base = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("PidFile none\n", "");
    std::fs::write(&s.config, format!("PidFile {}\n{base}", a.display())).unwrap();
    let mut d = daemon(&s, &["-D", "-e"]);
    d.port();
    let me = format!("{}\n", d.pid());
    assert!(wait_for(
        Duration::from_secs(5),
        || std::fs::read_to_string(&a).ok() == Some(me.clone())
    ));
    std::fs::write(&s.config, format!("PidFile {}\n{base}", b.display())).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(5), || std::fs::read_to_string(&b).ok()
            == Some(me.clone())),
        "{}",
        d.log()
    );
    assert!(!a.exists(), "the old PID file is ours and goes");
    assert_eq!(d.stop().and_then(|s| s.code()), Some(0));
    assert!(!b.exists(), "removed at exit");

    // Not ours any more (a newer daemon wrote it): left alone.
    let mut d = daemon(&s, &["-D", "-e"]);
    d.port();
    assert!(wait_for(Duration::from_secs(5), || b.exists()));
    std::fs::write(&b, "1\n").unwrap();
    d.stop();
    assert_eq!(std::fs::read_to_string(&b).unwrap(), "1\n");
    std::fs::remove_file(&b).unwrap();

    // sshd writes none in debug mode. Once rsshd answers, it is past the point
    // where the file would have been written.
    let d = daemon(&s, &["-d"]);
    let port = d.port();
    let mut banner = [0u8; 8];
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Read::read_exact(&mut conn, &mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    assert!(!b.exists());
}

/// The default PidFile: /run/rsshd.pid as root with a config file (sshd's
/// /run/sshd.pid), none for the built-in defaults or without root.
#[test]
fn pid_file_defaults() {
    let dir = temp_dir("flags");
    let cfg = dir.join("sshd_config");
    std::fs::write(&cfg, "IdleTimeout 5m\n").unwrap();
    let o = rsshd(&["-G", "-f", cfg.to_str().unwrap()]);
    let want = if is_root() {
        "pidfile /run/rsshd.pid"
    } else {
        "pidfile none"
    };
    assert!(
        text(&o.stdout).lines().any(|l| l == want),
        "{}",
        text(&o.stdout)
    );
    if std::path::Path::new("/etc/rsshd/sshd_config").exists() {
        skip("/etc/rsshd/sshd_config exists, so the built-in defaults are not used");
        return;
    }
    let o = rsshd(&["-G"]);
    assert!(text(&o.stdout).lines().any(|l| l == "pidfile none"));
}

#[test]
fn errors_are_printed_once() {
    if skip_without(&["ssh-keygen"]) {
        return;
    }
    let s = Setup::daemon("errors", "");
    let o = rsshd(&[
        "-D",
        "-e",
        "-h",
        "/nonexistent",
        "-f",
        s.config.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(255));
    let err = text(&o.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("/nonexistent"), "{err}");
}

#[test]
fn admin_commands_have_help() {
    for (cmd, usage) in [
        ("sessions", "Usage: rsshd sessions"),
        ("kill", "Usage: rsshd kill"),
    ] {
        let o = rsshd(&[cmd, "--help"]);
        assert!(o.status.success(), "{cmd}: {}", text(&o.stderr));
        assert!(text(&o.stdout).contains(usage), "{}", text(&o.stdout));
    }
    let o = rsshd(&["--help"]);
    assert!(o.status.success());
    for flag in ["-i", "-E <log_file>", "-G", "-V", "-u <len>"] {
        assert!(text(&o.stdout).contains(flag), "{flag}");
    }
}

/// `-d` shows what sshd's -d shows that helps: the algorithms chosen, each
/// authentication request and failure, channel requests; never key material.
#[test]
fn debug_mode_shows_kex_auth_and_channels() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let s = Setup::daemon("debug", "");
    let d = daemon(&s, &["-d"]);
    let port = d.port();
    let out = s.ssh_port(port, "true");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let user = current_user();
    assert!(
        d.wait_log("server_input_channel_req: channel ", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    let log = d.log();
    for line in [
        "debug1: kex: algorithm: ".to_string(),
        "debug1: kex: host key algorithm: ssh-ed25519".into(),
        "debug1: kex: client->server cipher: ".into(),
        format!("debug1: userauth-request for user {user} service ssh-connection method none"),
        format!("debug1: userauth-request for user {user} service ssh-connection method publickey"),
        "debug1: userauth: request failed (failures 0); methods that can continue: publickey"
            .into(),
        " request exec".into(),
    ] {
        assert!(log.contains(&line), "missing {line:?} in\n{log}");
    }
    // As sshd's -d, that daemon served its one connection and has ended.
    drop(d);
    let first = log;
    // A key that is not authorized: named, as in sshd's VERBOSE line.
    let d = daemon(&s, &["-d"]);
    let port = d.port();
    let stranger = keygen(&s.dir, "stranger");
    let o = Command::new("ssh")
        .args(ssh_base_args(port, &stranger))
        .arg(format!("{user}@127.0.0.1"))
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let failed = format!("debug1: Failed publickey for {user} from 127.0.0.1 port ");
    assert!(d.wait_log(&failed, Duration::from_secs(5)), "{}", d.log());
    assert!(
        d.log()
            .contains("debug1: userauth: request failed (failures 1)"),
        "{}",
        d.log()
    );
    let log = format!("{first}\n{}", d.log());
    for secret in ["PrivateKey", "signing with key", "> msg type"] {
        assert!(!log.contains(secret), "{secret:?} in\n{log}");
    }
}

/// sshd's `-d` serves one connection and exits with it: the listeners close as
/// soon as it is accepted, so a second client is refused, and the daemon ends
/// with status 0 when the first logs out. Split (as root) and in one process.
#[test]
fn debug_mode_serves_one_connection_then_exits() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let s = Setup::daemon("debug-once", "");
    for privsep in ["split", "off"] {
        let mut d = Daemon::spawn(
            Command::new(RSSHD)
                .args(["-d", "-f"])
                .arg(&s.config)
                .env("RSSHD_PRIVSEP", privsep),
        );
        let port = d.port();
        // The first connection: a session that stays until we end it.
        let mut first = Command::new("ssh")
            .args(ssh_base_args(port, &s.client_key))
            .arg(format!("{}@127.0.0.1", current_user()))
            .arg("echo up; sleep 3")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut up = [0u8; 3];
        std::io::Read::read_exact(first.stdout.as_mut().unwrap(), &mut up).unwrap();
        assert_eq!(&up, b"up\n", "{privsep}: {}", d.log());
        // While it runs, nothing listens any more.
        assert!(
            wait_for(Duration::from_secs(5), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_err()),
            "{privsep}: a second connection was accepted\n{}",
            d.log()
        );
        assert!(first.wait().unwrap().success());
        let mut status = None;
        assert!(
            wait_for(Duration::from_secs(10), || {
                status = d.child.try_wait().ok().flatten();
                status.is_some()
            }),
            "{privsep}: rsshd -d still runs after its connection ended\n{}",
            d.log()
        );
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "{privsep}: {}",
            d.log()
        );
        assert!(
            !d.log().contains("error"),
            "{privsep}: an error at the end\n{}",
            d.log()
        );
    }
}

fn quick_start(extra: &[&str]) -> (Daemon, std::path::PathBuf) {
    let state = temp_dir("state");
    // As root the built-in control socket is /run/rsshd.sock, which a second
    // quick start (these tests run in parallel) or an installed rsshd would
    // already hold: rsshd then refuses to start, as it should.
    let control = format!("ControlSocket {}/rsshd.sock", state.display());
    let d = Daemon::spawn(
        Command::new(RSSHD)
            .args(["-o", "Port 0", "-o", &control])
            .args(extra)
            .env("XDG_STATE_HOME", &state),
    );
    (d, state)
}

/// The built-in defaults serve sftp, so `sftp` and modern `scp` (which speaks
/// SFTP) work on a first run; only the key file location is overridden, so that
/// no real home directory is touched.
#[test]
fn scp_and_sftp_work_on_built_in_defaults() {
    if skip_without(&["ssh", "ssh-keygen", "scp", "sftp"]) {
        return;
    }
    if std::path::Path::new("/etc/rsshd/sshd_config").exists() {
        skip("/etc/rsshd/sshd_config exists, so the built-in defaults are not used");
        return;
    }
    let s = Setup::new("firstrun", None, "");
    let keys = format!("AuthorizedKeysFile {}/authorized_keys", s.dir.display());
    let (d, _state) = quick_start(&["-o", &keys]);
    let port = d.port();
    assert!(d.wait_log("connect with: ssh -p ", Duration::from_secs(5)));
    let user = current_user();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let local = s.dir.join("local.bin");
    std::fs::write(&local, &data).unwrap();
    let opts = client_opts(&s.client_key);

    let batch = s.dir.join("batch");
    let (up, down) = (s.dir.join("sftp-up.bin"), s.dir.join("sftp-down.bin"));
    std::fs::write(
        &batch,
        format!(
            "put {} {}\nget {} {}\n",
            local.display(),
            up.display(),
            up.display(),
            down.display()
        ),
    )
    .unwrap();
    let o = Command::new("sftp")
        .args(&opts)
        .args(["-P", &port.to_string(), "-b"])
        .arg(&batch)
        .arg(format!("{user}@127.0.0.1"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "sftp: {}\n{}", text(&o.stderr), d.log());
    assert_eq!(std::fs::read(&down).unwrap(), data);

    let (up, down) = (s.dir.join("scp-up.bin"), s.dir.join("scp-down.bin"));
    for (from, to) in [
        (
            local.display().to_string(),
            format!("{user}@127.0.0.1:{}", up.display()),
        ),
        (
            format!("{user}@127.0.0.1:{}", up.display()),
            down.display().to_string(),
        ),
    ] {
        let o = Command::new("scp")
            .args(&opts)
            .args(["-P", &port.to_string()])
            .arg(&from)
            .arg(&to)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "scp {from} {to}: {}\n{}",
            text(&o.stderr),
            d.log()
        );
    }
    assert_eq!(std::fs::read(&down).unwrap(), data);
    // The user has a key: no hint about missing ones (checked last, long after
    // the start printed its hints).
    assert!(!d.log().contains("has no authorized keys"), "{}", d.log());
}

/// A first run where nobody can log in says why and what to do.
#[test]
fn quick_start_says_when_there_is_no_key() {
    if std::path::Path::new("/etc/rsshd/sshd_config").exists() {
        skip("/etc/rsshd/sshd_config exists, so the built-in defaults are not used");
        return;
    }
    let dir = temp_dir("firstrun");
    let keys = format!("AuthorizedKeysFile {}/no_such_keys", dir.display());
    let (d, _state) = quick_start(&["-o", &keys]);
    assert!(
        d.wait_log("has no authorized keys", Duration::from_secs(20)),
        "{}",
        d.log()
    );
    let log = d.log();
    assert!(
        log.contains(&format!("rsshd: {} has no authorized keys", current_user())),
        "{log}"
    );
    assert!(
        log.contains(&format!("{}/no_such_keys", dir.display())),
        "{log}"
    );
    assert!(log.contains("publickey logins only"), "{log}");
    assert!(log.contains(" sessions"), "{log}");
}

/// Run by an ordinary user, rsshd cannot write the system's utmp: it says so once
/// at start, and a terminal login logs no error.
#[test]
fn unprivileged_run_says_once_that_utmp_is_off() {
    if skip_unless_root_with(TEST_USER) || skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let user = nix::unistd::User::from_name(TEST_USER).unwrap().unwrap();
    let s = Setup::new("utmpoff", None, "");
    // Its own corner for what it writes (control socket, nothing else).
    let own = s.dir.join("own");
    std::fs::create_dir(&own).unwrap();
    nix::unistd::chown(&own, Some(user.uid), Some(user.gid)).unwrap();
    nix::unistd::chown(&s.host_key, Some(user.uid), Some(user.gid)).unwrap();
    let text_cfg = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        format!(
            "{text_cfg}ListenAddress 127.0.0.1\nPort 0\nControlSocket {}/control.sock\n",
            own.display()
        ),
    )
    .unwrap();
    use std::os::unix::process::CommandExt;
    let d = Daemon::spawn(
        Command::new(RSSHD)
            .args(["-D", "-e", "-f"])
            .arg(&s.config)
            .env("XDG_STATE_HOME", &own)
            .env("HOME", &own)
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw()),
    );
    let port = d.port();
    // Said right after the listening line.
    assert!(
        d.wait_log("utmp accounting is off: ", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    let o = Command::new("ssh")
        .args(ssh_base_args(port, &s.client_key))
        .arg("-tt")
        .arg(format!("{TEST_USER}@127.0.0.1"))
        .arg("tty")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        text(&o.stdout).contains("/dev/pts/"),
        "{}\n{}",
        text(&o.stderr),
        d.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = d.log();
    assert_eq!(
        log.lines().filter(|l| l.contains("utmp")).count(),
        1,
        "{log}"
    );
}
