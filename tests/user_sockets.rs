//! Issue 11, attack 5: forwarded connections must belong to the user, as in sshd
//! (which makes them in the user's own process), so that owner-matching egress
//! rules (`iptables -m owner --uid-owner`, nft `skuid`) and per-user accounting
//! apply to tunnels. The kernel's record of a socket's owner is what `ss -e`
//! prints as `uid:` (only when it is not root); each test reads it for sockets of
//! the rsshd process while `rsshd-test` tunnels through a real rsshd; and an nft
//! `meta skuid` egress rule for the user (the same credential `iptables -m owner
//! --uid-owner` matches) stops their tunnel and not root's own connection.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A TCP echo server on 127.0.0.1, in this (root) test process.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = conn.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn uid_of(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
        .expect("test user")
}

/// `ssh -N` with forwarding `args` as `user`, killed when dropped.
struct Tunnel(Child);

impl Tunnel {
    fn open(srv: &Server, user: &str, args: &[&str]) -> Tunnel {
        let mut cmd = srv.ssh(user);
        cmd.args(["-N", "-o", "ExitOnForwardFailure=yes"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Tunnel(cmd.spawn().expect("spawn ssh"))
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connect once `port` listens, and check that bytes come back through it.
fn echo_through(port: u16, tunnel: &mut Tunnel, srv: &Server) -> TcpStream {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(20))).ok();
            s.write_all(b"ping\n").expect("write through the tunnel");
            let mut back = [0u8; 5];
            s.read_exact(&mut back).expect("echo through the tunnel");
            assert_eq!(&back, b"ping\n");
            return s;
        }
        assert!(
            matches!(tunnel.0.try_wait(), Ok(None)),
            "ssh exited; log:\n{}",
            srv.log()
        );
        assert!(
            Instant::now() < end,
            "port {port} never came up; log:\n{}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ss -H -tanpe` lines of sockets held by rsshd (process `pid`, or its network
/// process when it runs split) for which `pick` holds, given the line's local
/// and peer address columns.
fn sockets_of(pid: u32, pick: impl Fn(&str, &str) -> bool) -> Vec<String> {
    let out = Command::new("ss")
        .args(["-H", "-tanpe"])
        .output()
        .expect("ss");
    let mut pids = vec![pid];
    pids.extend(network_processes(pid));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| pids.iter().any(|p| l.contains(&format!("pid={p},"))))
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 4 && pick(f[3], f[4])
        })
        .map(str::to_string)
        .collect()
}

/// The children of `pid` that are a split daemon's network process.
fn network_processes(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            parent == Some(pid) && String::from_utf8_lossy(&cmd).contains("__net")
        })
        .collect()
}

fn skip_unless_ready() -> bool {
    skip_unless_root_with(TEST_USER) || skip_without(&["ss"])
}

#[test]
fn local_forward_connection_belongs_to_the_user() {
    if skip_unless_ready() {
        return;
    }
    let srv = Server::start("");
    let echo = echo_server();
    let local = free_port();
    let spec = format!("{local}:127.0.0.1:{echo}");
    let mut tunnel = Tunnel::open(&srv, TEST_USER, &["-L", &spec]);
    let _conn = echo_through(local, &mut tunnel, &srv);
    // rsshd's end of the tunnel: its socket to the echo server.
    let target = format!("127.0.0.1:{echo}");
    let lines = sockets_of(srv.pid(), |_, peer| peer == target);
    assert_eq!(lines.len(), 1, "rsshd's socket to {target}: {lines:?}");
    let want = format!("uid:{}", uid_of(TEST_USER));
    assert!(
        lines[0].split_whitespace().any(|w| w == want),
        "the -L connection is not {TEST_USER}'s ({want}): {}",
        lines[0]
    );
}

#[test]
fn remote_forward_listener_and_its_connections_belong_to_the_user() {
    if skip_unless_ready() {
        return;
    }
    let srv = Server::start("");
    let echo = echo_server();
    let remote = free_port();
    let spec = format!("{remote}:127.0.0.1:{echo}");
    let mut tunnel = Tunnel::open(&srv, TEST_USER, &["-R", &spec]);
    let _conn = echo_through(remote, &mut tunnel, &srv);
    let want = format!("uid:{}", uid_of(TEST_USER));
    let here = format!("127.0.0.1:{remote}");
    let listening = sockets_of(srv.pid(), |local, peer| {
        local == here && peer == "0.0.0.0:*"
    });
    assert_eq!(
        listening.len(),
        1,
        "rsshd's listener on {here}: {listening:?}"
    );
    assert!(
        listening[0].split_whitespace().any(|w| w == want),
        "the -R listener is not {TEST_USER}'s ({want}): {}",
        listening[0]
    );
    // The connection accepted on it inherits the listener's owner.
    let accepted = sockets_of(srv.pid(), |local, peer| {
        local == here && peer != "0.0.0.0:*"
    });
    assert_eq!(accepted.len(), 1, "accepted on {here}: {accepted:?}");
    assert!(
        accepted[0].split_whitespace().any(|w| w == want),
        "the -R connection is not {TEST_USER}'s ({want}): {}",
        accepted[0]
    );
}

#[test]
fn a_root_login_keeps_root_sockets() {
    // The user's identity is the user's: root's own tunnel stays root's, which
    // `ss` shows by printing no uid at all.
    if skip_unless_ready() {
        return;
    }
    let srv = Server::start("");
    let echo = echo_server();
    let local = free_port();
    let spec = format!("{local}:127.0.0.1:{echo}");
    let mut tunnel = Tunnel::open(&srv, "root", &["-L", &spec]);
    let _conn = echo_through(local, &mut tunnel, &srv);
    let target = format!("127.0.0.1:{echo}");
    let lines = sockets_of(srv.pid(), |_, peer| peer == target);
    assert_eq!(lines.len(), 1, "rsshd's socket to {target}: {lines:?}");
    assert!(!lines[0].contains(" uid:"), "{}", lines[0]);
}

/// A private nft table with one output rule, removed when dropped; it touches no
/// other table, and matches one port only.
struct NftTable(String);

impl NftTable {
    /// Reset every TCP connection that `uid` opens to `port` on this host.
    fn reject(uid: u32, port: u16) -> NftTable {
        let name = format!("rsshd_test_{}_{port}", std::process::id());
        let run = |args: &[&str]| {
            let out = Command::new("nft").args(args).output().expect("nft");
            assert!(
                out.status.success(),
                "nft {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["add", "table", "inet", &name]);
        let table = NftTable(name.clone());
        run(&[
            "add",
            "chain",
            "inet",
            &name,
            "out",
            "{ type filter hook output priority 0; policy accept; }",
        ]);
        let rule = format!("tcp dport {port} meta skuid {uid} reject with tcp reset");
        let mut args = vec!["add", "rule", "inet", &name, "out"];
        args.extend(rule.split(' '));
        run(&args);
        table
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.0])
            .status();
    }
}

#[test]
fn an_egress_rule_for_the_user_stops_their_tunnel_and_not_root() {
    if skip_unless_ready() || skip_without(&["nft"]) {
        return;
    }
    let srv = Server::start("");
    let echo = echo_server();
    let _rule = NftTable::reject(uid_of(TEST_USER), echo);
    // Root (this test) still reaches the port: the rule is the user's only.
    let mut direct = TcpStream::connect(("127.0.0.1", echo)).expect("root's connection");
    direct.set_read_timeout(Some(Duration::from_secs(10))).ok();
    direct.write_all(b"ping\n").expect("write");
    let mut back = [0u8; 5];
    direct.read_exact(&mut back).expect("root's echo");
    // The user's tunnel to it is refused by the kernel, as sshd's would be.
    let local = free_port();
    let spec = format!("{local}:127.0.0.1:{echo}");
    let tunnel = Tunnel::open(&srv, TEST_USER, &["-L", &spec]);
    let end = Instant::now() + Duration::from_secs(20);
    let mut s = loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", local)) {
            break s;
        }
        assert!(Instant::now() < end, "ssh -L never listened");
        std::thread::sleep(Duration::from_millis(50));
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let _ = s.write_all(b"ping\n");
    let mut buf = [0u8; 5];
    let got = s.read(&mut buf);
    assert!(
        matches!(got, Ok(0) | Err(_)),
        "the user's tunnel went through an egress rule for the user: {got:?}"
    );
    let failed = format!("connect_to 127.0.0.1 port {echo}: failed");
    assert!(
        srv.wait_log(&failed, Duration::from_secs(10)),
        "log:\n{}",
        srv.log()
    );
    drop(tunnel);
}
