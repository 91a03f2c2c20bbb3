//! Issue 11, attack 9 (pre-auth CPU): no finite-field Diffie-Hellman unless
//! configured, and sshd 9.8's PerSourceMaxStartups / PerSourcePenalties, with the
//! real OpenSSH client and raw sockets from 127.0.0.1 and 127.0.0.2. (The flood
//! itself, and what it does to an established session, is measured by
//! `bench/bench.py --only flood`.)

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::*;

/// `ssh` for `srv` with our key, from `source`, running `echo ok`.
fn ssh_from(srv: &Server, source: &str, extra: &[&str]) -> Output {
    let mut c = srv.ssh(&current_user());
    c.args(["-b", source]).args(extra).arg("echo ok");
    run_with_input(&mut c, b"")
}

fn ok(o: &Output) -> bool {
    o.status.success() && String::from_utf8_lossy(&o.stdout) == "ok\n"
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A raw TCP connection from `source`; returns it with the first line the
/// server sent (its banner, or its refusal).
fn raw_from(srv: &Server, source: &str) -> (TcpStream, String) {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let src: SocketAddr = format!("{source}:0").parse().unwrap();
    sock.bind(&src.into()).expect("bind source");
    let dst: SocketAddr = format!("127.0.0.1:{}", srv.port).parse().unwrap();
    sock.connect(&dst.into()).expect("connect");
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while let Ok(1) = s.read(&mut b) {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    (s, String::from_utf8_lossy(&line).into_owned())
}

/// The server's key exchange list as the OpenSSH client logs it with -vv.
fn offered_kex(srv: &Server) -> String {
    let o = srv
        .ssh_talkative(&current_user(), &["-vv", "-o", "BatchMode=yes"])
        .arg("true")
        .output()
        .expect("ssh -vv");
    let text = stderr(&o);
    let mut peer = false;
    for line in text.lines() {
        if line.contains("peer server KEXINIT proposal") {
            peer = true;
        } else if peer && let Some((_, list)) = line.split_once("KEX algorithms: ") {
            return list.trim().to_string();
        }
    }
    panic!("no server KEX list in:\n{text}")
}

#[test]
fn finite_field_groups_are_not_offered_by_default() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("");
    assert_eq!(
        offered_kex(&srv),
        "mlkem768x25519-sha256,curve25519-sha256,curve25519-sha256@libssh.org,\
         ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,\
         ext-info-s,kex-strict-s-v00@openssh.com"
    );
    for dh in [
        "diffie-hellman-group18-sha512",
        "diffie-hellman-group16-sha512",
        "diffie-hellman-group14-sha256",
        "diffie-hellman-group-exchange-sha256",
    ] {
        // At the client's default log level, which names the failure.
        let o = srv
            .ssh_talkative(
                &current_user(),
                &["-o", "BatchMode=yes", "-o", &format!("KexAlgorithms={dh}")],
            )
            .arg("echo ok")
            .output()
            .expect("ssh");
        assert!(!ok(&o), "{dh} was negotiated");
        assert!(
            stderr(&o).contains("no matching key exchange method found"),
            "{dh}: {}",
            stderr(&o)
        );
    }
    for kex in [
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
        "ecdh-sha2-nistp256",
        "ecdh-sha2-nistp384",
        "ecdh-sha2-nistp521",
    ] {
        let o = ssh_from(&srv, "127.0.0.1", &["-o", &format!("KexAlgorithms={kex}")]);
        assert!(ok(&o), "{kex}: {}\n{}", stderr(&o), srv.log());
    }
}

#[test]
fn per_source_max_startups_drops_one_source_and_not_another() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("PerSourceMaxStartups 2\nPerSourcePenalties no\nLoginGraceTime 60");
    // Two unauthenticated connections from 127.0.0.1 fill its quota.
    let (held1, banner) = raw_from(&srv, "127.0.0.1");
    assert!(banner.starts_with("SSH-2.0-"), "{banner:?}");
    let (held2, banner) = raw_from(&srv, "127.0.0.1");
    assert!(banner.starts_with("SSH-2.0-"), "{banner:?}");

    let (_, refused) = raw_from(&srv, "127.0.0.1");
    assert_eq!(refused, "Not allowed at this time\r\n");
    let o = ssh_from(&srv, "127.0.0.1", &[]);
    assert!(!ok(&o), "a third connection from 127.0.0.1 got in");
    assert!(
        srv.wait_log(
            "drop connection #2 from [127.0.0.1]:",
            Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
    assert!(
        srv.log()
            .contains(&format!("on [127.0.0.1]:{} past Maxstartups", srv.port))
    );

    // Another source is not affected.
    let o = ssh_from(&srv, "127.0.0.2", &[]);
    assert!(ok(&o), "{}\n{}", stderr(&o), srv.log());

    // Once one of the two goes, 127.0.0.1 gets in again.
    drop(held1);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let o = ssh_from(&srv, "127.0.0.1", &[]);
        if ok(&o) {
            break;
        }
        assert!(Instant::now() < end, "{}\n{}", stderr(&o), srv.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(held2);
}

/// Wait until a connection from `source` gets in; how long that took.
fn wait_admitted(srv: &Server, source: &str, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let o = ssh_from(srv, source, &[]);
        if ok(&o) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "{source} not readmitted after {limit:?}: {}\n{}",
            stderr(&o),
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn failed_authentication_is_penalised_then_forgiven() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("PerSourcePenalties authfail:3s min:4s max:10s");
    let wrong = keygen(&srv.dir, "wrong_key");
    let fail = || {
        let o = Command::new("ssh")
            .args(ssh_base_args(srv.port, &wrong))
            .args(["-b", "127.0.0.1"])
            .arg(format!("{}@127.0.0.1", current_user()))
            .arg("true")
            .output()
            .expect("ssh");
        assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    };
    // 3 s is not more than min:4s: still welcome.
    fail();
    assert!(
        srv.wait_log(
            "Connection closed by authenticating user",
            Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
    let o = ssh_from(&srv, "127.0.0.1", &[]);
    assert!(ok(&o), "refused after one failure: {}", srv.log());
    // 6 s now is: refused.
    fail();
    assert!(
        srv.wait_log(
            "srclimit_penalise: 127.0.0.1/32: activating ipv4 penalty of",
            Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
    let activated = Instant::now();
    let (_, refused) = raw_from(&srv, "127.0.0.1");
    assert_eq!(refused, "Not allowed at this time\r\n");
    let o = ssh_from(&srv, "127.0.0.1", &[]);
    assert!(!ok(&o), "penalised source got in: {}", srv.log());
    assert!(srv.log().contains(&format!(
        "on [127.0.0.1]:{} penalty: failed authentication",
        srv.port
    )));
    // Another source is not affected.
    let o = ssh_from(&srv, "127.0.0.2", &[]);
    assert!(ok(&o), "{}\n{}", stderr(&o), srv.log());
    // The penalty runs out (about 6 s after the first failure).
    wait_admitted(&srv, "127.0.0.1", Duration::from_secs(15));
    assert!(
        activated.elapsed() >= Duration::from_secs(1),
        "readmitted too early ({:?})",
        activated.elapsed()
    );
}

#[test]
fn grace_and_no_auth_penalties_and_the_exempt_list() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    // A connection that never authenticates within LoginGraceTime.
    let srv = Server::start("LoginGraceTime 1\nPerSourcePenalties grace-exceeded:3s min:2s");
    let (_idle, banner) = raw_from(&srv, "127.0.0.1");
    assert!(banner.starts_with("SSH-2.0-"));
    assert!(
        srv.wait_log(
            "srclimit_penalise: ipv4: new 127.0.0.1/32 active penalty of 3.000 seconds for penalty: exceeded LoginGraceTime",
            Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
    let (_, refused) = raw_from(&srv, "127.0.0.1");
    assert_eq!(refused, "Not allowed at this time\r\n");
    assert!(ok(&ssh_from(&srv, "127.0.0.2", &[])));
    wait_admitted(&srv, "127.0.0.1", Duration::from_secs(10));
    drop(srv);

    // Connections that go away without trying to authenticate.
    let srv = Server::start("PerSourcePenalties noauth:1s min:2s");
    for _ in 0..3 {
        let (mut s, banner) = raw_from(&srv, "127.0.0.1");
        assert!(banner.starts_with("SSH-2.0-"), "{banner:?}");
        let _ = s.write_all(b"SSH-2.0-test\r\n");
    }
    assert!(
        srv.wait_log("activating ipv4 penalty of", Duration::from_secs(5)),
        "{}",
        srv.log()
    );
    let (_, refused) = raw_from(&srv, "127.0.0.1");
    assert_eq!(refused, "Not allowed at this time\r\n");
    wait_admitted(&srv, "127.0.0.1", Duration::from_secs(10));
    drop(srv);

    // An exempt address is never refused.
    let srv = Server::start(
        "LoginGraceTime 1\nPerSourcePenalties grace-exceeded:30s\nPerSourcePenaltyExemptList 127.0.0.0/8",
    );
    let (_idle, _) = raw_from(&srv, "127.0.0.1");
    assert!(srv.wait_log("Timeout before authentication", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(200));
    let o = ssh_from(&srv, "127.0.0.1", &[]);
    assert!(ok(&o), "exempt source refused: {}", srv.log());
}
