//! The process split (privilege separation step 2): a root rsshd runs as a root
//! monitor and one confined network process. Checked from outside on the live
//! daemon: the network process's /proc entries, the process tree, what happens
//! to sessions when the network process dies, and a reload with a broken config.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Server, TEST_USER};

/// A root rsshd that runs split (`RSSHD_PRIVSEP=split`), on the base config of
/// `Server::start`.
fn start_split() -> Server {
    start_with(Some("split"))
}

/// A root rsshd on that config, with `RSSHD_PRIVSEP` set to `privsep` (or unset).
fn start_with(privsep: Option<&str>) -> Server {
    let (dir, host_key, client_key) = support::keyed_dir("privsep-split", None);
    let config = dir.join("sshd_config");
    let text = format!(
        "ListenAddress 127.0.0.1\nPort 0\nHostKey {}\nAuthorizedKeysFile {}/authorized_keys\nPidFile none\nControlSocket {}/control.sock\n",
        host_key.display(),
        dir.display(),
        dir.display()
    );
    std::fs::write(&config, text).expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rsshd"));
    cmd.args(["-D", "-e", "-f"]).arg(&config);
    match privsep {
        Some(v) => cmd.env("RSSHD_PRIVSEP", v),
        None => cmd.env_remove("RSSHD_PRIVSEP"),
    };
    Server::spawn_command(cmd, dir, config, client_key)
}

const EMPTY_DIR: &str = "/run/rsshd/empty";

fn unusable() -> bool {
    support::skip_without(&["ssh", "ssh-keygen", "who"])
        || support::skip_unless_root_with(TEST_USER)
        || support::skip_unless_root_with("rsshd")
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn children(pid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|p| ppid(*p) == Some(pid))
        .collect()
}

fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    while let Some(p) = ppid(pid) {
        if p == ancestor {
            return true;
        }
        if p <= 1 {
            return false;
        }
        pid = p;
    }
    false
}

/// The monitor's network process (`rsshd __net`), waited for until it has
/// confined itself (its last step is seccomp).
fn network_process(monitor: u32) -> u32 {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<u32> = children(monitor)
            .into_iter()
            .filter(|p| cmdline(*p).contains("__net"))
            .collect();
        if let [one] = found.as_slice()
            && std::fs::read_to_string(format!("/proc/{one}/status"))
                .is_ok_and(|s| s.lines().any(|l| l == "Seccomp:\t2"))
        {
            return *one;
        }
        assert!(
            Instant::now() < end,
            "no single confined network process: {found:?} {:?}",
            found.first().map(|p| status(*p))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status")
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{name} missing in\n{status}"))
}

/// A program of the monitor's with `marker` in its command line, waited for.
fn session_program(monitor: u32, marker: &str) -> u32 {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(p) = all_pids()
            .into_iter()
            .find(|p| cmdline(*p).starts_with(marker) && descends_from(*p, monitor))
        {
            return p;
        }
        assert!(Instant::now() < end, "no session program {marker}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An idle PTY session running `sleep SECS` (SECS makes it findable).
fn idle_session(server: &Server, secs: u32) -> Child {
    server
        .ssh(TEST_USER)
        .arg("-tt")
        .arg(format!("exec sleep {secs}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh")
}

fn tty_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/0"))
        .expect("fd 0")
        .display()
        .to_string()
}

fn who_lists(tty: &str) -> bool {
    let out = Command::new("who").output().expect("who");
    let short = tty.trim_start_matches("/dev/");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(short))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gone(pid: u32) -> bool {
    // A zombie counts as gone: its program has ended.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn login_works(server: &Server) {
    let out = server.ssh_run(TEST_USER, "echo split-ok", b"");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("split-ok"),
        "login failed: {}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

#[test]
fn the_network_process_is_confined_and_owns_no_process() {
    if unusable() {
        return;
    }
    let server = start_split();
    let monitor = server.pid();
    let net = network_process(monitor);
    let st = status(net);
    let uids: Vec<&str> = field(&st, "Uid:").split_whitespace().collect();
    assert_eq!(uids.len(), 4, "{st}");
    assert!(uids.iter().all(|u| *u != "0"), "Uid {uids:?}");
    let rsshd_uid = nix::unistd::User::from_name("rsshd")
        .expect("getpwnam")
        .expect("rsshd account")
        .uid
        .as_raw()
        .to_string();
    assert!(uids.iter().all(|u| *u == rsshd_uid), "Uid {uids:?}");
    assert_eq!(field(&st, "NoNewPrivs:"), "1");
    assert_eq!(field(&st, "Seccomp:"), "2");
    for caps in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:"] {
        assert_eq!(field(&st, caps), "0000000000000000", "{caps}");
    }
    let root = std::fs::read_link(format!("/proc/{net}/root")).expect("root");
    assert_eq!(root, std::path::Path::new(EMPTY_DIR));
    assert_eq!(std::fs::read_dir(EMPTY_DIR).expect("empty dir").count(), 0);
    // Its memory trimmer runs there too (it reads statm through a descriptor
    // opened before the chroot, and ends at once if it cannot).
    std::thread::sleep(Duration::from_millis(300));
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{net}/task"))
        .expect("tasks")
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .collect();
    assert!(
        threads.iter().any(|c| c.trim() == "rsshd-trim"),
        "{threads:?}"
    );
    // The monitor is root and is the one that started the network process.
    assert!(field(&status(monitor), "Uid:").starts_with("0\t"));

    // A login: its program belongs to the monitor's tree, never to the
    // network process's, which has no child at all.
    let mut ssh = idle_session(&server, 611);
    let program = session_program(monitor, "sleep 611");
    assert!(
        !descends_from(program, net),
        "session program under the network process"
    );
    assert!(
        children(net).is_empty(),
        "network process children: {:?}",
        children(net)
    );
    let tree: Vec<String> = children(monitor).into_iter().map(cmdline).collect();
    assert!(tree.iter().any(|c| c.contains("__net")), "{tree:?}");
    // `rsshd sessions` still shows what the session runs: the network process
    // has no /proc, so the monitor reads it.
    let listed = Command::new(env!("CARGO_BIN_EXE_rsshd"))
        .args(["sessions", "--json", "--socket"])
        .arg(server.dir.join("control.sock"))
        .output()
        .expect("rsshd sessions");
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    let whats: Vec<&str> = (rows.as_array().into_iter().flatten())
        .filter_map(|r| r["what"].as_str())
        .collect();
    assert!(whats.iter().any(|w| w.contains("sleep 611")), "{rows}");
    let _ = ssh.kill();
    let _ = ssh.wait();
}

#[test]
fn a_dead_network_process_ends_its_sessions_and_is_replaced() {
    if unusable() {
        return;
    }
    let server = start_split();
    let monitor = server.pid();
    let net = network_process(monitor);
    let mut ssh = idle_session(&server, 612);
    let program = session_program(monitor, "sleep 612");
    let tty = tty_of(program);
    wait_until("utmp entry", Duration::from_secs(10), || who_lists(&tty));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(net as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    assert!(
        server.wait_log(
            "network process terminated by signal 9",
            Duration::from_secs(10)
        ),
        "{}",
        server.log()
    );
    // The session's program is ended and its utmp entry closed.
    wait_until("session program ended", Duration::from_secs(20), || {
        gone(program)
    });
    wait_until("utmp entry closed", Duration::from_secs(10), || {
        !who_lists(&tty)
    });
    // The client sees its connection end.
    let mut line = String::new();
    let mut out = BufReader::new(ssh.stdout.take().expect("stdout"));
    let _ = out.read_line(&mut line);
    let _ = ssh.wait();
    // A new network process serves new logins on the same listener.
    let replacement = network_process(monitor);
    assert_ne!(replacement, net);
    login_works(&server);
}

#[test]
fn a_reload_with_a_broken_config_keeps_the_old_one_and_the_sessions() {
    if unusable() {
        return;
    }
    let server = start_split();
    let monitor = server.pid();
    let net = network_process(monitor);
    let mut ssh = idle_session(&server, 613);
    let program = session_program(monitor, "sleep 613");
    let good = std::fs::read_to_string(&server.config).expect("config");
    let broken = format!("{good}NoSuchKeyword yes\n");
    std::fs::write(&server.config, &broken).expect("write");
    let bad_line = broken.lines().count();
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(monitor as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("SIGHUP")
    };
    hup();
    let want = format!(
        "reload failed, keeping the old configuration: {}:{bad_line}",
        server.config.display()
    );
    assert!(
        server.wait_log(&want, Duration::from_secs(10)),
        "no `{want}` in\n{}",
        server.log()
    );
    // Nothing restarted, nothing ended.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(network_process(monitor), net);
    assert!(!gone(program), "session ended by a failed reload");
    assert!(ssh.try_wait().expect("try_wait").is_none(), "client gone");
    login_works(&server);

    // A good config again: the network process takes it, sessions stay. It is
    // large (600 KiB of comments, kept in the recorded load): a configuration
    // travels to the network process in a memfd, not bound by a datagram.
    let filler: String = (0..6000)
        .map(|i| format!("# {i:05} {}\n", "x".repeat(92)))
        .collect();
    std::fs::write(&server.config, format!("{filler}{good}IdleTimeout 1h\n")).expect("write");
    hup();
    assert!(
        server.wait_log("Configuration reloaded;", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    assert!(!gone(program));
    assert_eq!(network_process(monitor), net);
    // The live session's lifetime rules are the new ones: the network process
    // applied the reload.
    let end = Instant::now() + Duration::from_secs(10);
    while idle_timeouts(&server) != ["3600"] {
        assert!(
            Instant::now() < end,
            "{:?}; log:\n{}",
            idle_timeouts(&server),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    login_works(&server);
    let _ = ssh.kill();
    let _ = ssh.wait();
    // A new network process gets the large configuration at its start too.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(net as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    let end = Instant::now() + Duration::from_secs(20);
    while network_process(monitor) == net {
        assert!(Instant::now() < end, "no new network process");
        std::thread::sleep(Duration::from_millis(100));
    }
    login_works(&server);
}

/// The IdleTimeout each listed session runs under, as `rsshd sessions` says.
fn idle_timeouts(server: &Server) -> Vec<String> {
    let listed = Command::new(env!("CARGO_BIN_EXE_rsshd"))
        .args(["sessions", "--json", "--socket"])
        .arg(server.dir.join("control.sock"))
        .output()
        .expect("rsshd sessions");
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
    (rows.as_array().into_iter().flatten())
        .filter_map(|r| {
            let policy = r["policy"].as_array()?;
            let idle = policy.iter().find(|p| p[0] == "idletimeout")?;
            Some(idle[1].as_str()?.to_string())
        })
        .collect()
}

/// The split is the default for a root daemon; `RSSHD_PRIVSEP=off` keeps one
/// process, which serves logins the same way.
#[test]
fn split_by_default_and_one_process_when_turned_off() {
    if unusable() {
        return;
    }
    let server = start_with(None);
    network_process(server.pid());
    let out = server.ssh_run(TEST_USER, "echo split-ok", b"");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("split-ok"),
        "{out:?}; log:\n{}",
        server.log()
    );
    drop(server);

    let server = start_with(Some("off"));
    let out = server.ssh_run(TEST_USER, "echo one-ok", b"");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("one-ok"),
        "{out:?}; log:\n{}",
        server.log()
    );
    let kids: Vec<String> = children(server.pid()).into_iter().map(cmdline).collect();
    assert!(!kids.iter().any(|c| c.contains("__net")), "{kids:?}");
}
