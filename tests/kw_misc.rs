//! DisableForwarding, RefuseConnection, UseDNS, Match RDomain and PermitTTY, each
//! observed from the real `ssh` client, each beside a control that shows the same
//! client getting through without the setting.

mod support;

use std::time::Duration;

use support::{Server, current_user, run_with_input, skip_without};

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `ssh -W` opens a direct-tcpip channel, as `-L` and `-D` do, to a closed port:
/// true when the server let it try to connect (its log says so either way).
fn direct_tcpip_allowed(srv: &Server) -> bool {
    let mut cmd = srv.ssh(&current_user());
    cmd.args(["-W", "127.0.0.1:9"]);
    let o = run_with_input(&mut cmd, b"");
    assert!(!o.status.success());
    let tried = "connect_to 127.0.0.1 port 9: failed";
    let refused = "refused local port forward";
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = srv.log();
        if log.contains(tried) || log.contains(refused) {
            return log.contains(tried);
        }
        assert!(std::time::Instant::now() < end, "no verdict in log:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ssh -R 0:...` with ExitOnForwardFailure: true when the server took it.
fn remote_forward_allowed(srv: &Server) -> bool {
    let mut cmd = srv.ssh(&current_user());
    cmd.args(["-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9"])
        .arg("echo forwarded");
    out(&run_with_input(&mut cmd, b"")) == "forwarded"
}

/// A running `ssh-agent` on `sock`, stopped when dropped.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(sock: &std::path::Path) -> Agent {
    let child = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(sock)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent");
    let agent = Agent(child);
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(std::time::Instant::now() < end, "ssh-agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    agent
}

/// `ssh -A` with a running agent: true when the session got an agent socket.
fn agent_allowed(srv: &Server, sock: &std::path::Path) -> bool {
    let mut cmd = srv.ssh(&current_user());
    cmd.env("SSH_AUTH_SOCK", sock)
        .arg("-A")
        .arg("echo [${SSH_AUTH_SOCK:-none}]");
    out(&run_with_input(&mut cmd, b"")) != "[none]"
}

#[test]
fn disable_forwarding_refuses_every_kind() {
    if skip_without(&["ssh", "ssh-keygen", "ssh-agent"]) {
        return;
    }
    let open = Server::start("");
    let sock = open.dir.join("agent.sock");
    let _agent = start_agent(&sock);
    assert!(direct_tcpip_allowed(&open), "{}", open.log());
    assert!(remote_forward_allowed(&open), "{}", open.log());
    assert!(agent_allowed(&open, &sock), "{}", open.log());

    // Everything else says yes, explicitly; DisableForwarding wins.
    let srv = Server::start(
        "DisableForwarding yes\nAllowTcpForwarding yes\nAllowAgentForwarding yes\nPermitOpen any",
    );
    assert!(!direct_tcpip_allowed(&srv), "{}", srv.log());
    assert!(!remote_forward_allowed(&srv), "{}", srv.log());
    assert!(!agent_allowed(&srv, &sock), "{}", srv.log());
    let log = srv.log();
    assert!(log.contains("refused local port forward"), "{log}");
    assert!(log.contains("refused remote port forward"), "{log}");
    // The session itself still works.
    assert_eq!(out(&srv.ssh_run(&current_user(), "echo ok", b"")), "ok");
}

#[test]
fn refuse_connection_drops_once_the_user_is_known() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let me = current_user();
    // Only for another user: we get in.
    let srv = Server::start_with_tail("", "Match User nobody\n  RefuseConnection yes");
    assert_eq!(
        out(&srv.ssh_run(&me, "echo in", b"")),
        "in",
        "{}",
        srv.log()
    );
    // For us (Match User), and for a user that does not exist (global).
    let srv = Server::start_with_tail(
        "",
        &format!("Match User {me},no-such-user-rsshd\n  RefuseConnection yes"),
    );
    let o = srv.ssh_run(&me, "echo in", b"");
    assert_ne!(out(&o), "in", "{}", srv.log());
    let want = format!("administratively prohibited connection for {me} from 127.0.0.1 port ");
    assert!(srv.wait_log(&want, Duration::from_secs(5)), "{}", srv.log());
    let o = srv.ssh_run("no-such-user-rsshd", "echo in", b"");
    assert!(!o.status.success());
    assert!(
        srv.wait_log(
            "administratively prohibited connection for invalid user no-such-user-rsshd from 127.0.0.1 port ",
            Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
    // Nothing was offered: no key was ever looked at.
    assert!(!srv.log().contains("Accepted publickey"), "{}", srv.log());
}

#[test]
fn use_dns_gives_match_host_and_from_the_name() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let me = current_user();
    // 127.0.0.1 is `localhost` in /etc/hosts, which maps back to it.
    let tail = "Match Host localhost\n  ForceCommand echo via-name";
    let srv = Server::start_with_tail("UseDNS yes", tail);
    assert_eq!(
        out(&srv.ssh_run(&me, "echo plain", b"")),
        "via-name",
        "{}",
        srv.log()
    );
    let srv = Server::start_with_tail("UseDNS no", tail);
    assert_eq!(
        out(&srv.ssh_run(&me, "echo plain", b"")),
        "plain",
        "{}",
        srv.log()
    );

    // authorized_keys from= with a host name.
    let from = Some("from=\"localhost\"");
    let srv = Server::start_with_keys("UseDNS yes", from);
    assert_eq!(
        out(&srv.ssh_run(&me, "echo in", b"")),
        "in",
        "{}",
        srv.log()
    );
    let srv = Server::start_with_keys("UseDNS no", from);
    assert_ne!(
        out(&srv.ssh_run(&me, "echo in", b"")),
        "in",
        "{}",
        srv.log()
    );

    // DenyUsers user@host sees the name too.
    let srv = Server::start(&format!("UseDNS yes\nDenyUsers {me}@localhost"));
    assert_ne!(
        out(&srv.ssh_run(&me, "echo in", b"")),
        "in",
        "{}",
        srv.log()
    );
    assert!(
        srv.wait_log(
            &format!("User {me} from localhost not allowed because listed in DenyUsers"),
            Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
}

/// A listener bound to no VRF has the routing domain "" (sshd on Linux): `*`
/// matches it, a VRF name does not.
#[test]
fn match_rdomain_sees_the_listeners_vrf() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start_with_tail(
        "",
        "Match RDomain blue\n  ForceCommand echo blue\nMatch RDomain *\n  ForceCommand echo any-rdomain",
    );
    assert_eq!(
        out(&srv.ssh_run(&current_user(), "echo plain", b"")),
        "any-rdomain",
        "{}",
        srv.log()
    );
}

#[test]
fn permit_tty_no_refuses_the_pty() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let tty = |srv: &Server| {
        let o = srv
            .ssh(&current_user())
            .arg("-tt")
            .arg("tty")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("ssh");
        (out(&o), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let srv = Server::start("");
    let (o, _) = tty(&srv);
    assert!(o.starts_with("/dev/pts/"), "{o}");
    let srv = Server::start_with_tail("", "Match All\n  PermitTTY no");
    let (o, err) = tty(&srv);
    // With -tt, ssh gives up when the PTY is refused.
    assert!(!o.contains("/dev/pts/"), "{o}");
    assert!(err.contains("PTY allocation request failed"), "{err}");
    // A session without a terminal still runs.
    assert_eq!(out(&srv.ssh_run(&current_user(), "echo ok", b"")), "ok");
}

/// A server whose sessions see `home` as TEST_USER's home directory: rsshd runs in
/// a private mount namespace with `home` bound over the real one, so the account's
/// real home is never touched.
fn server_with_home(home: &std::path::Path, extra: &str, key_options: &str) -> Server {
    let dir = support::temp_dir("rc-srv");
    let host_key = support::keygen(&dir, "host_key");
    let client_key = support::keygen(&dir, "client_key");
    let public = std::fs::read_to_string(client_key.with_extension("pub")).unwrap();
    std::fs::write(
        dir.join("authorized_keys"),
        format!("{key_options} {public}"),
    )
    .unwrap();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "{extra}\nListenAddress 127.0.0.1\nPort 0\nHostKey {}\nAuthorizedKeysFile {}/authorized_keys\n\
             PidFile none\nControlSocket {}/control.sock\n",
            host_key.display(),
            dir.display(),
            dir.display()
        ),
    )
    .unwrap();
    let real = nix::unistd::User::from_name(support::TEST_USER)
        .unwrap()
        .unwrap()
        .dir;
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" \"$2\" && exec \"$3\" -D -e -f \"$4\"")
        .arg("sh")
        .arg(home)
        .arg(real)
        .arg(env!("CARGO_BIN_EXE_rsshd"))
        .arg(&config);
    Server::spawn_command(cmd, dir, config, client_key)
}

/// `~/.ssh/rc` runs before the command, as the user, with its input at end of
/// file, unless PermitUserRC no, ForceCommand or a `no-user-rc` key says not.
#[test]
fn user_rc_runs_as_the_user_before_the_command() {
    if skip_without(&["ssh", "ssh-keygen", "unshare"])
        || support::skip_unless_root_with(support::TEST_USER)
    {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let home = support::temp_dir("rc-home");
    let user = nix::unistd::User::from_name(support::TEST_USER)
        .unwrap()
        .unwrap();
    std::fs::create_dir(home.join(".ssh")).unwrap();
    let rc = home.join(".ssh/rc");
    std::fs::write(&rc, "echo \"rc uid=$(id -u) in=[$(cat)] pwd=$(pwd)\"\n").unwrap();
    let run = |srv: &Server| out(&srv.ssh_run(support::TEST_USER, "echo command", b"ignored"));
    let ran = format!(
        "rc uid={} in=[] pwd={}\ncommand",
        user.uid,
        user.dir.display()
    );

    let srv = server_with_home(&home, "", "");
    assert_eq!(run(&srv), ran, "{}", srv.log());
    // Not under PermitUserRC no, a ForceCommand, or a no-user-rc key.
    let srv = server_with_home(&home, "PermitUserRC no", "");
    assert_eq!(run(&srv), "command", "{}", srv.log());
    let srv = server_with_home(&home, "ForceCommand echo command", "");
    assert_eq!(run(&srv), "command", "{}", srv.log());
    let srv = server_with_home(&home, "", "no-user-rc");
    assert_eq!(run(&srv), "command", "{}", srv.log());
    let srv = server_with_home(&home, "", "restrict");
    assert_eq!(run(&srv), "command", "{}", srv.log());

    // Read with the user's rights: a file only root may read does not run, and
    // the command still does.
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let srv = server_with_home(&home, "", "");
    let o = srv.ssh_run(support::TEST_USER, "echo command", b"");
    assert_eq!(out(&o), "command", "{}", srv.log());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Permission denied"), "{err}");
}
