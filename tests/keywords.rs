//! Issue 12 from the admin's side: keywords rsshd does not implement are refused by
//! `-t`, at start and on reload when ignoring them could allow more; `-T` prints what
//! is in force; contradictions are named; Debian's stock config serves sshd's host
//! keys; `ChannelTimeout` takes OpenSSH's channel type names.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn rsshd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rsshd"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn stderr_of(cmd: &mut Command) -> (bool, String) {
    let o = cmd.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const REFUSAL: &str = "LogVerbose: not implemented by rsshd; refused because ignoring it \
                       could allow more than configured (remove it; only \"none\" is accepted)";

#[test]
fn refused_keyword_stops_test_mode_start_and_reload() {
    if skip_without(&["ssh-keygen"]) {
        return;
    }
    let dir = temp_dir("kw-refuse");
    let hk = keygen(&dir, "hk");
    let conf = write(
        &dir,
        "refused.conf",
        &format!(
            "HostKey {}\nListenAddress 127.0.0.1\nPort 0\nPidFile none\nControlSocket {}/c.sock\n\
             LogVerbose kex.c:*:1000\n",
            hk.display(),
            dir.display()
        ),
    );
    let want = format!("{}:6: {REFUSAL}", conf.display());

    let (ok, err) = stderr_of(rsshd().arg("-t").arg("-f").arg(&conf));
    assert!(!ok, "-t must fail: {err}");
    assert!(err.contains(&want), "{err}");

    // Starting fails the same way, before listening.
    let mut child = rsshd()
        .args(["-D", "-e", "-f"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("rsshd started on a refused keyword");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(err.contains(&want), "{err}");
    assert!(!err.contains("Server listening"), "{err}");

    // A running server keeps its configuration when a reload brings the keyword in.
    let srv = Server::start("");
    // A login first: the daemon handles signals once it serves connections.
    let o = srv.ssh_run(&current_user(), "echo up", b"");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "up",
        "{}",
        srv.log()
    );
    let text = std::fs::read_to_string(&srv.config).unwrap();
    std::fs::write(
        &srv.config,
        format!("{text}Match User nobody\n  PermitTunnel yes\n"),
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(srv.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    assert!(
        srv.wait_log(
            "reload failed, keeping the old configuration: ",
            Duration::from_secs(10)
        ),
        "{}",
        srv.log()
    );
    assert!(
        srv.log().contains("PermitTunnel: not implemented by rsshd"),
        "{}",
        srv.log()
    );
    let o = srv.ssh_run(&current_user(), "echo still-here", b"");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "still-here");
}

#[test]
fn test_mode_names_contradicting_settings() {
    let dir = temp_dir("kw-contra");
    let hk = keygen(&dir, "hk");
    let conf = write(
        &dir,
        "c.conf",
        &format!(
            "HostKey {}\nIdleTimeout 10s\nIdleWarning 20s\nX11Forwarding yes\n",
            hk.display()
        ),
    );
    let (ok, err) = stderr_of(rsshd().arg("-t").arg("-f").arg(&conf));
    assert!(
        ok,
        "contradictions and unsupported features only warn: {err}"
    );
    let c = conf.display();
    assert!(
        err.contains(&format!(
            "{c}:3: IdleWarning: 20s is not shorter than the idle timeout in force (10s, from \
             IdleTimeout at {c}:2); no warning will be given"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{c}:4: X11Forwarding: not supported by rsshd, ignored"
        )),
        "{err}"
    );
}

fn dump(args: &[&str]) -> String {
    let o = rsshd().args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn has(out: &str, line: &str) -> bool {
    out.lines().any(|l| l == line)
}

#[test]
fn dump_prints_what_is_in_force() {
    let dir = temp_dir("kw-dump");
    let conf = write(
        &dir,
        "d.conf",
        "ClientAliveInterval 300\nClientAliveCountMax 0\nIdleWarning 1m\nX11Forwarding yes\n",
    );
    let c = conf.to_str().unwrap();
    let out = dump(&["-T", "-f", c]);
    // The recipe's idle timeout, not "none".
    assert!(has(&out, "idletimeout 300"), "{out}");
    assert!(has(&out, "idlewarning 60"), "{out}");
    // The control socket the daemon binds, not "none".
    let sock = if is_root() {
        "/run/rsshd.sock".to_string()
    } else {
        let state = std::env::var("XDG_STATE_HOME")
            .ok()
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".local/state"));
        state.join("rsshd/rsshd.sock").display().to_string()
    };
    assert!(has(&out, &format!("controlsocket {sock}")), "{out}");
    // X11 is never forwarded, whatever the file says.
    assert!(has(&out, "x11forwarding no"), "{out}");
    // With no HostKey: sshd's default keys that exist, in sshd's order.
    let defaults: Vec<String> = ["rsa", "ecdsa", "ed25519"]
        .iter()
        .map(|t| format!("/etc/ssh/ssh_host_{t}_key"))
        .filter(|p| Path::new(p).exists())
        .map(|p| format!("hostkey {p}"))
        .collect();
    let printed: Vec<&str> = out.lines().filter(|l| l.starts_with("hostkey ")).collect();
    assert_eq!(printed, defaults, "{out}");
    // -h replaces the defaults, as in sshd (-G: print without loading the keys).
    let out = dump(&["-G", "-f", c, "-h", "/some/key"]);
    let printed: Vec<&str> = out.lines().filter(|l| l.starts_with("hostkey ")).collect();
    assert_eq!(printed, vec!["hostkey /some/key"], "{out}");
}

/// Debian's own `/etc/ssh/sshd_config`, with only the listener, pid file and control
/// socket changed: rsshd serves the host keys sshd serves for it, and an OpenSSH
/// client that trusts sshd's keys connects without a host key complaint.
#[test]
fn stock_debian_config_serves_sshds_host_keys() {
    if skip_without(&["ssh", "ssh-keyscan", "ssh-keygen"]) {
        return;
    }
    if !is_root() {
        skip("the host keys in /etc/ssh are readable only by root");
        return;
    }
    let stock = Path::new("/etc/ssh/sshd_config");
    let sshd = Path::new("/usr/sbin/sshd");
    if !stock.exists() || !sshd.exists() {
        skip("openssh-server is not installed");
        return;
    }
    let dir = temp_dir("kw-stock");
    let copy = write(
        &dir,
        "sshd_config",
        &std::fs::read_to_string(stock).unwrap(),
    );
    let client_key = keygen(&dir, "client");
    // The same file for both; only the listener and runtime paths come from the
    // command line (rsshd: -p 0 for a kernel-chosen port).
    let srv_conf = write(
        &dir,
        "rsshd_config",
        &format!(
            "ListenAddress 127.0.0.1\nPort 0\nPidFile none\nControlSocket {}/c.sock\nInclude {}\n",
            dir.display(),
            copy.display()
        ),
    );
    let srv = Server::spawn(dir.clone(), srv_conf, client_key);

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::create_dir_all("/run/sshd").unwrap();
    let mut reference = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(&copy)
        .args(["-p", &port.to_string()])
        .args(["-o", "ListenAddress=127.0.0.1", "-o", "PidFile=none"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let keys_of = |port: u16| -> Vec<String> {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let o = Command::new("ssh-keyscan")
                .args([
                    "-p",
                    &port.to_string(),
                    "-t",
                    "rsa,ecdsa,ed25519",
                    "127.0.0.1",
                ])
                .stderr(Stdio::null())
                .output()
                .unwrap();
            let mut keys: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace().skip(1);
                    Some(format!("{} {}", w.next()?, w.next()?))
                })
                .collect();
            keys.sort();
            if !keys.is_empty() || Instant::now() > end {
                return keys;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let theirs = keys_of(port);
    let _ = reference.kill();
    let _ = reference.wait();
    let ours = keys_of(srv.port);

    let mut files: Vec<String> = ["rsa", "ecdsa", "ed25519"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/etc/ssh/ssh_host_{t}_key.pub")).ok())
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no host keys in /etc/ssh");
    assert_eq!(theirs, files, "sshd serves the .pub files' keys");
    assert_eq!(
        ours,
        theirs,
        "rsshd serves the same host keys as sshd\n{}",
        srv.log()
    );

    // A client that knows the host only by sshd's keys gets to authentication.
    let known = dir.join("known_hosts");
    let lines: Vec<String> = files
        .iter()
        .map(|k| format!("[127.0.0.1]:{} {k}\n", srv.port))
        .collect();
    std::fs::write(&known, lines.concat()).unwrap();
    let o = Command::new("ssh")
        .args(["-F", "/dev/null", "-p", &srv.port.to_string()])
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args([
            "-o",
            "PreferredAuthentications=none",
            "nobody@127.0.0.1",
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{err}"
    );
    assert!(!err.contains("Host key verification failed"), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
}

/// `ssh HOST CMD` under a `ChannelTimeout` for `type`: how long it ran and its output.
fn run_under(rule: &str, cmd: &str) -> (Duration, String, String) {
    let srv = Server::start(&format!("ChannelTimeout {rule}"));
    let started = Instant::now();
    let o = srv
        .ssh(&current_user())
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        started.elapsed(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        srv.log(),
    )
}

#[test]
fn channel_timeout_takes_openssh_type_names() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    // OpenSSH's name for an exec channel closes an idle command...
    let (took, out, log) = run_under("session:command=2s", "sleep 30; echo finished");
    assert!(
        took < Duration::from_secs(15),
        "not closed after {took:?}\n{log}"
    );
    assert!(
        took >= Duration::from_secs(2),
        "closed early: {took:?}\n{log}"
    );
    assert!(!out.contains("finished"), "{out}");
    // ...a shell rule does not touch a command...
    let (_, out, log) = run_under("session:shell=1s", "sleep 3; echo finished");
    assert_eq!(out.trim(), "finished", "{log}");
    // ...and `session` still covers every session channel.
    let (took, out, log) = run_under("session=2s", "sleep 30; echo finished");
    assert!(
        took < Duration::from_secs(15),
        "not closed after {took:?}\n{log}"
    );
    assert!(!out.contains("finished"), "{out}");
}
