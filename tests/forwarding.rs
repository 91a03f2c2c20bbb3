//! Issue 6 end to end: `ssh -L`, `-R`, `-D` and `-A` against a real rsshd, with
//! echo servers started by the tests on loopback only.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;

/// A TCP echo server on 127.0.0.1 that half-closes after echoing everything.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = conn.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// A loopback port that was free a moment ago, for the client's `-L`/`-D` side.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The client, killed when the test ends.
struct Client(Child);

impl Client {
    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.0.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ssh -N` with forwarding `args`, failing if a forward cannot be set up.
fn ssh_forward(srv: &Server, args: &[&str]) -> Client {
    let mut cmd = srv.ssh(&current_user());
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Client(cmd.spawn().expect("spawn ssh"))
}

/// Connect to the client's forwarded port once it listens (after authentication).
fn connect_when_up(port: u16, client: &mut Client, srv: &Server) -> TcpStream {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(20))).ok();
            return s;
        }
        assert!(
            client.alive(),
            "ssh exited before forwarding port {port}; log:\n{}",
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

/// Send `msg` and read back as many bytes.
fn echo_once(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    Ok(back)
}

/// Whether the peer closes `s` (EOF or reset) within `timeout`.
fn closes_within(s: &mut TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout)).ok();
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    let mut x: u64 = 0x2545F4914F6CDD1D;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    data
}

/// FNV-1a, enough to tell a corrupted stream from a good one.
fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// Push `data` through `s` while reading the echo; returns what came back.
fn round_trip(s: TcpStream, data: &[u8]) -> Vec<u8> {
    let mut writer = s.try_clone().expect("clone");
    let out = data.to_vec();
    let w = std::thread::spawn(move || {
        writer.write_all(&out).expect("write through tunnel");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut back = Vec::with_capacity(data.len());
    let mut s = s;
    s.read_to_end(&mut back).expect("read through tunnel");
    w.join().expect("writer");
    back
}

#[test]
fn local_forward_ten_mib_round_trip() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("");
    let echo = echo_server();
    let lport = free_port();
    let mut c = ssh_forward(&srv, &["-L", &format!("{lport}:127.0.0.1:{echo}")]);
    let s = connect_when_up(lport, &mut c, &srv);
    let data = pseudo_random(10 * 1024 * 1024);
    let t = Instant::now();
    let back = round_trip(s, &data);
    let took = t.elapsed();
    assert_eq!(back.len(), data.len(), "log:\n{}", srv.log());
    assert_eq!(
        checksum(&back),
        checksum(&data),
        "tunnel corrupted the data"
    );
    eprintln!("10 MiB round trip through ssh -L in {took:?}");
    assert!(c.alive(), "ssh -L died; log:\n{}", srv.log());
}

/// `ssh -N -R spec` with a port 0 listen side; returns the client and the port the
/// server allocated, read from the client's `Allocated port N` message.
fn remote_forward(srv: &Server, spec: &str) -> (Client, u16) {
    // The allocation is an INFO message; the shared options say ERROR.
    let args: Vec<String> = ssh_base_args(srv.port, &srv.client_key)
        .into_iter()
        .map(|a| {
            if a == "LogLevel=ERROR" {
                "LogLevel=INFO".into()
            } else {
                a
            }
        })
        .collect();
    let mut child = Command::new("ssh")
        .args(&args)
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(spec)
        .arg(format!("{}@127.0.0.1", current_user()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssh");
    let stderr = child.stderr.take().expect("stderr");
    let c = Client(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let end = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let port = loop {
        let left = end.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no allocation in {seen:?}; log:\n{}", srv.log()));
        if let Some(rest) = line.strip_prefix("Allocated port ")
            && let Some(p) = rest.split_whitespace().next()
        {
            break p.parse::<u16>().expect("port number");
        }
        seen.push(line);
    };
    (c, port)
}

#[test]
fn remote_forward_port_zero_reports_allocated_port() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("");
    let echo = echo_server();
    let (mut c, port) = remote_forward(&srv, &format!("0:127.0.0.1:{echo}"));
    assert!(port >= 1024, "allocated {port}");
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to -R port");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    assert_eq!(
        echo_once(&mut s, b"through -R\n").expect("echo"),
        b"through -R\n"
    );
    // Half-close travels through too: our EOF reaches the echo server, whose EOF
    // comes back.
    s.shutdown(Shutdown::Write).expect("shutdown");
    assert!(
        closes_within(&mut s, Duration::from_secs(10)),
        "no EOF back"
    );
    let _ = c.0.kill();
    let _ = c.wait_exit(Duration::from_secs(5));
    // The listener goes with the connection.
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < end,
            "port {port} still open after the connection ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dynamic_forward_socks5_connect() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("");
    let echo = echo_server();
    let dport = free_port();
    let mut c = ssh_forward(&srv, &["-D", &format!("127.0.0.1:{dport}")]);
    let mut s = connect_when_up(dport, &mut c, &srv);
    // Greeting: version 5, one method, no authentication.
    s.write_all(&[5, 1, 0]).expect("greeting");
    let mut r = [0u8; 2];
    s.read_exact(&mut r).expect("method reply");
    assert_eq!(r, [5, 0]);
    // CONNECT 127.0.0.1:echo.
    let p = echo.to_be_bytes();
    s.write_all(&[5, 1, 0, 1, 127, 0, 0, 1, p[0], p[1]])
        .expect("connect request");
    let mut r = [0u8; 10];
    s.read_exact(&mut r).expect("connect reply");
    assert_eq!(r[1], 0, "SOCKS reply {r:?}; log:\n{}", srv.log());
    assert_eq!(
        echo_once(&mut s, b"socks says hi").expect("echo"),
        b"socks says hi"
    );
}

#[test]
fn agent_forwarding_lists_the_key() {
    if skip_without(&["ssh", "ssh-keygen", "ssh-agent", "ssh-add"]) {
        return;
    }
    let srv = Server::start("");
    let sock = srv.dir.join("agent.sock");
    let mut agent = Client(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent"),
    );
    let end = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            agent.alive() && Instant::now() < end,
            "ssh-agent did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let key = keygen(&srv.dir, "agent_key");
    let st = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &sock)
        .stderr(Stdio::null())
        .status()
        .expect("ssh-add");
    assert!(st.success(), "ssh-add failed");

    let mut cmd = srv.ssh(&current_user());
    cmd.env("SSH_AUTH_SOCK", &sock).arg("-A").arg(
        "ssh-add -l; d=$(dirname \"$SSH_AUTH_SOCK\"); echo SOCK=$SSH_AUTH_SOCK; stat -c DIR=%a:%U \"$d\"",
    );
    let o = run_with_input(&mut cmd, b"");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        out.contains("agent_key (ED25519)"),
        "stdout: {out}\nstderr: {err}\nlog:\n{}",
        srv.log()
    );
    assert!(
        out.contains(&format!("DIR=700:{}", current_user())),
        "{out}"
    );
    let path = out
        .lines()
        .find_map(|l| l.strip_prefix("SOCK="))
        .expect("SSH_AUTH_SOCK")
        .to_string();
    let dir = std::path::Path::new(&path)
        .parent()
        .expect("socket dir")
        .to_path_buf();
    // Removed when the connection ends.
    let end = Instant::now() + Duration::from_secs(10);
    while dir.exists() {
        assert!(
            Instant::now() < end,
            "{} outlived the connection",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn agent_forwarding_refused_by_config() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("AllowAgentForwarding no");
    let mut cmd = srv.ssh(&current_user());
    cmd.env("SSH_AUTH_SOCK", srv.dir.join("nonexistent"))
        .arg("-A")
        .arg("echo [${SSH_AUTH_SOCK:-none}]");
    let o = run_with_input(&mut cmd, b"");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "[none]\n");
}

/// A `-L` to the echo server is refused: the client drops our connection at once
/// and rsshd logs `expect`.
fn assert_local_forward_refused(srv: &Server, expect: &str) {
    let echo = echo_server();
    let lport = free_port();
    let mut c = ssh_forward(srv, &["-L", &format!("{lport}:127.0.0.1:{echo}")]);
    let mut s = connect_when_up(lport, &mut c, srv);
    let _ = s.write_all(b"x");
    assert!(
        closes_within(&mut s, Duration::from_secs(10)),
        "refused tunnel stayed open; log:\n{}",
        srv.log()
    );
    assert!(
        srv.wait_log(expect, Duration::from_secs(5)),
        "no {expect:?} in log:\n{}",
        srv.log()
    );
}

/// A `-R` is refused: with ExitOnForwardFailure the client gives up.
fn assert_remote_forward_refused(srv: &Server) {
    let mut c = ssh_forward(srv, &["-R", "0:127.0.0.1:9"]);
    let st = c
        .wait_exit(Duration::from_secs(20))
        .expect("ssh -R kept running");
    assert!(!st.success());
}

#[test]
fn refused_when_tcp_forwarding_is_off() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("AllowTcpForwarding no");
    assert_local_forward_refused(
        &srv,
        "refused local port forward: originator 127.0.0.1 port ",
    );
    assert_remote_forward_refused(&srv);
    assert!(
        srv.log().contains("refused remote port forward"),
        "{}",
        srv.log()
    );
}

#[test]
fn local_only_and_remote_only_forwarding() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("AllowTcpForwarding local");
    assert_remote_forward_refused(&srv);
    let srv = Server::start("AllowTcpForwarding remote");
    assert_local_forward_refused(&srv, "refused local port forward");
}

#[test]
fn refused_when_permit_open_does_not_match() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("PermitOpen 127.0.0.1:1 localhost:*");
    assert_local_forward_refused(&srv, "but the request was denied");
}

#[test]
fn refused_with_no_port_forwarding_key() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start_with_keys("", Some("no-port-forwarding"));
    assert_local_forward_refused(&srv, "refused local port forward");
    assert_remote_forward_refused(&srv);
}

#[test]
fn root_may_listen_on_a_privileged_port() {
    if !is_root() {
        skip("needs root (only root may listen below 1024)");
        return;
    }
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    // Refusing other users is unit-tested in `forward::tests::listen_rules`.
    let srv = Server::start("");
    let port = (600..1000)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free privileged port");
    let echo = echo_server();
    let mut c = ssh_forward(&srv, &["-R", &format!("{port}:127.0.0.1:{echo}")]);
    let mut s = connect_when_up(port, &mut c, &srv);
    assert_eq!(echo_once(&mut s, b"root").expect("echo"), b"root");
}

#[test]
fn idle_tunnel_ends_busy_tunnel_stays() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("IdleTimeout 3s");
    let echo = echo_server();
    let (idle_port, busy_port) = (free_port(), free_port());
    let mut busy = ssh_forward(&srv, &["-L", &format!("{busy_port}:127.0.0.1:{echo}")]);
    let mut idle = ssh_forward(&srv, &["-L", &format!("{idle_port}:127.0.0.1:{echo}")]);
    let mut s = connect_when_up(busy_port, &mut busy, &srv);
    let start = Instant::now();
    let mut idle_ended = None;
    while start.elapsed() < Duration::from_secs(7) {
        let back = echo_once(&mut s, b"ping\n").unwrap_or_else(|e| {
            panic!(
                "busy tunnel broke after {:?}: {e}; log:\n{}",
                start.elapsed(),
                srv.log()
            )
        });
        assert_eq!(back, b"ping\n");
        if idle_ended.is_none() && !idle.alive() {
            idle_ended = Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(busy.alive(), "busy tunnel's ssh ended; log:\n{}", srv.log());
    let ended = idle_ended.expect("idle tunnel still open after 7 s");
    eprintln!("idle ssh -N -L ended {ended:?} after the busy tunnel came up");
    assert!(
        srv.log().contains("Idle timeout for user"),
        "log:\n{}",
        srv.log()
    );
}

#[test]
fn channel_timeout_closes_idle_tunnel_channel() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("ChannelTimeout direct-tcpip=2s");
    let echo = echo_server();
    let lport = free_port();
    let mut c = ssh_forward(&srv, &["-L", &format!("{lport}:127.0.0.1:{echo}")]);
    let mut s = connect_when_up(lport, &mut c, &srv);
    assert_eq!(echo_once(&mut s, b"hello").expect("echo"), b"hello");
    let t = Instant::now();
    assert!(
        closes_within(&mut s, Duration::from_secs(6)),
        "idle tunnel channel not closed; log:\n{}",
        srv.log()
    );
    let took = t.elapsed();
    eprintln!("idle direct-tcpip channel closed after {took:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "closed too early: {took:?}"
    );
    assert!(c.alive(), "the connection ended with the channel");
    // The connection stays usable for new tunnels.
    let mut s = connect_when_up(lport, &mut c, &srv);
    assert_eq!(echo_once(&mut s, b"again").expect("echo"), b"again");
}

#[test]
fn remote_listener_alone_is_an_unused_connection() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("UnusedConnectionTimeout 2s");
    let echo = echo_server();
    let mut c = ssh_forward(&srv, &["-R", &format!("0:127.0.0.1:{echo}")]);
    let t = Instant::now();
    assert!(
        c.wait_exit(Duration::from_secs(10)).is_some(),
        "connection with only a -R listener kept open; log:\n{}",
        srv.log()
    );
    eprintln!("-R only connection ended after {:?}", t.elapsed());
    assert!(
        srv.log().contains("Unused connection timeout"),
        "log:\n{}",
        srv.log()
    );
}

/// rsshd's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn fast_sender_to_stalled_target_keeps_memory_flat() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("");
    // A target that accepts and never reads.
    let sink = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let sink_port = sink.local_addr().expect("addr").port();
    let (held_tx, held_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in sink.incoming().flatten() {
            let _ = held_tx.send(conn);
        }
    });
    let lport = free_port();
    let mut c = ssh_forward(&srv, &["-L", &format!("{lport}:127.0.0.1:{sink_port}")]);
    let s = connect_when_up(lport, &mut c, &srv);
    let _held = held_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("tunnel reached the sink");
    let before = rss_kib(srv.pid());
    let mut w = s.try_clone().expect("clone");
    w.set_write_timeout(Some(Duration::from_secs(4))).ok();
    let sent = std::thread::spawn(move || {
        let chunk = vec![0x5au8; 64 * 1024];
        let mut sent = 0usize;
        while sent < 256 * 1024 * 1024 && w.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let sent = sent.join().expect("sender");
    let after = rss_kib(srv.pid());
    eprintln!(
        "sent {} KiB into a stalled tunnel; rsshd RSS {before} KiB -> {after} KiB",
        sent / 1024
    );
    assert!(
        sent < 256 * 1024 * 1024,
        "nothing pushed back on the sender"
    );
    assert!(
        after < before + 16 * 1024,
        "rsshd grew from {before} to {after} KiB"
    );
    assert!(c.alive());
}

#[test]
fn cancel_remote_forward_through_control_master() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("");
    let echo = echo_server();
    let ctl = srv.dir.join("ctl");
    let ctl_arg = ctl.display().to_string();
    let mut master = ssh_forward(&srv, &["-M", "-S", &ctl_arg]);
    let end = Instant::now() + Duration::from_secs(20);
    while !ctl.exists() {
        assert!(master.alive() && Instant::now() < end, "no control socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mux = |op: &str, spec: &str| {
        let mut cmd = srv.ssh(&current_user());
        cmd.args(["-S", &ctl_arg, "-O", op, "-R", spec]);
        run_with_input(&mut cmd, b"")
    };
    // Port 0 through the mux prints the allocated port.
    let o = mux("forward", &format!("0:127.0.0.1:{echo}"));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let port: u16 = text.trim().parse().unwrap_or_else(|_| {
        panic!(
            "no port in {text:?} / {:?}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to -R port");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    assert_eq!(echo_once(&mut s, b"before").expect("echo"), b"before");
    // The master knows the forward by the port it asked for, and cancels the one
    // the server allocated.
    let o = mux("cancel", &format!("0:127.0.0.1:{echo}"));
    assert!(
        o.status.success(),
        "cancel failed: {}\nlog:\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < end,
            "port {port} still listening after cancel; log:\n{}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A tunnel opened before the cancel keeps working, as in OpenSSH.
    assert_eq!(echo_once(&mut s, b"after").expect("echo"), b"after");
    assert!(master.alive());
}

#[test]
fn restrict_and_permitopen_key_options() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start_with_keys("", Some("restrict"));
    assert_local_forward_refused(&srv, "refused local port forward");
    let srv = Server::start_with_keys("", Some("permitopen=\"127.0.0.1:1\""));
    assert_local_forward_refused(&srv, "but the request was denied");
}

/// The local address of the listening socket on `port`, from /proc/net/tcp.
fn listen_addr_hex(port: u16) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (addr, p) = f.get(1)?.split_once(':')?;
            // State 0A is LISTEN.
            (f.get(3) == Some(&"0A") && u16::from_str_radix(p, 16).ok() == Some(port))
                .then(|| addr.to_string())
        })
        .collect()
}

#[test]
fn gateway_ports_decide_the_bind_address() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let echo = echo_server();
    let target = format!("127.0.0.1:{echo}");
    // Wildcard binds are unit-tested (`forward::tests::gateway_ports`): tests never
    // listen beyond loopback.
    for (setting, spec, want) in [
        ("GatewayPorts no", format!("*:0:{target}"), "0100007F"),
        (
            "GatewayPorts clientspecified",
            format!("127.0.0.1:0:{target}"),
            "0100007F",
        ),
    ] {
        let srv = Server::start(setting);
        let (_c, port) = remote_forward(&srv, &spec);
        assert_eq!(
            listen_addr_hex(port),
            vec![want.to_string()],
            "{setting} -R {spec}"
        );
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        assert_eq!(echo_once(&mut s, b"gw").expect("echo"), b"gw");
    }
}
