//! The session lifecycle across the boundary: what `Spawn` attaches, `Wait`,
//! `HangUp`, `TcpListen`, `Accept`, `AgentSocket`, `Banner`, and what a closed connection (or
//! a lost network side) leaves behind: nothing. And the refusals of each request
//! to a connection that does not own what it names.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use super::api::{HangUpHow, LoginToken, SpawnAsk, SpawnedIo};
use super::api_tests::{conn, login, refused, setup, sleeping};
use super::{ExitOutcome, PtyParams};

fn ask(command: &str, pty: bool) -> SpawnAsk {
    SpawnAsk {
        requested: Some(command.into()),
        is_subsystem: false,
        pty: pty.then(PtyParams::xterm),
        client_env: Vec::new(),
        auth_sock: None,
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

/// Wait (up to 10 s) until `pid` is gone: ended and reaped.
async fn gone(pid: i32) -> bool {
    for _ in 0..200 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Whether `who` lists terminal `tty` (e.g. `pts/3`); `None` where this host
/// keeps no login records.
fn who_lists(tty: &str) -> Option<bool> {
    if super::accounting_off_reason().is_some() {
        return None;
    }
    let out = std::process::Command::new("who").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Some(
        text.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(tty)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_attaches_the_pipes_and_wait_answers_the_exit() {
    let s = setup("pipes", "", false);
    let (c, token) = login(&s, 0).await;
    let (spawned, fds) = s
        .host
        .spawn_session(
            c,
            token,
            ask("read x; echo out $x; echo err >&2; exit 3", false),
        )
        .await
        .expect("spawned");
    assert_eq!(spawned.io, SpawnedIo::Pipes);
    let [stdin, stdout, stderr]: [OwnedFd; 3] = fds.try_into().expect("three descriptors");
    let mut stdin = std::fs::File::from(stdin);
    stdin.write_all(b"in\n").expect("write");
    drop(stdin);
    let read_all = |fd: OwnedFd| {
        // Non-blocking as attached: read on a blocking thread until EOF.
        let flags = nix::fcntl::OFlag::empty();
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags)).expect("blocking");
        let mut text = String::new();
        std::fs::File::from(fd)
            .read_to_string(&mut text)
            .expect("read");
        text
    };
    let out = tokio::task::spawn_blocking(move || read_all(stdout));
    let err = tokio::task::spawn_blocking(move || read_all(stderr));
    assert_eq!(out.await.expect("out"), "out in\n");
    assert_eq!(err.await.expect("err"), "err\n");
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        s.host.wait(c, token, spawned.process),
    )
    .await
    .expect("in time");
    assert_eq!(outcome.expect("outcome"), ExitOutcome::Code(3));
    // A second wait gets the same answer while the host still has it.
    let again = s.host.wait(c, token, spawned.process).await;
    assert_eq!(again.expect("outcome"), ExitOutcome::Code(3));
    s.host
        .hang_up(c, token, spawned.process, HangUpHow::Ended)
        .await
        .expect("ended");
    assert!(gone(spawned.pid).await, "not reaped");
    // Reaped: its number names nothing any more.
    refused(s.host.wait(c, token, spawned.process).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_session_gets_its_master_and_a_login_record() {
    let s = setup("pty", "", false);
    let (c, token) = login(&s, 0).await;
    let (spawned, fds) = s
        .host
        .spawn_session(c, token, ask("sleep 30", true))
        .await
        .expect("spawned");
    assert_eq!(spawned.io, SpawnedIo::Pty);
    assert_eq!(fds.len(), 1);
    let tty = spawned.tty.clone().expect("a terminal");
    let line = tty.trim_start_matches("/dev/").to_string();
    // The login record is written beside the start; give it a moment.
    let mut listed = None;
    for _ in 0..40 {
        listed = who_lists(&line);
        if listed != Some(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(listed) = listed {
        assert!(listed, "utmp does not list {line}");
    }
    // The window size is set on this side's own copy of the master.
    let resizer =
        super::PtyResizer::new(super::Master::new(fds.into_iter().next().unwrap()).unwrap());
    resizer.resize(100, 40, 0, 0).expect("resized");
    // The connection goes: the program is hung up, its logout written.
    s.host.close_conn(c).await;
    assert!(
        gone(spawned.pid).await,
        "the session outlived its connection"
    );
    if let Some(listed) = who_lists(&line) {
        assert!(!listed, "utmp still lists {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_leaves_nothing_behind() {
    let s = setup("closed", "", false);
    let (c, token) = login(&s, 0).await;
    let (spawned, _fds) = sleeping(&s, c, token).await;
    let (socket, path, _listener) = s.host.agent_socket(c, token).await.expect("agent");
    let dir = std::path::Path::new(&path)
        .parent()
        .expect("dir")
        .to_path_buf();
    assert!(dir.is_dir());
    assert!(alive(spawned.pid));
    // SessionCleanup hangup, connection lost: SIGHUP once the settle time is
    // over; `conn_closed` returns when that is done.
    s.host.close_conn(c).await;
    assert!(gone(spawned.pid).await, "not reaped");
    assert!(!dir.exists(), "agent directory left behind");
    // Nothing of the connection answers any more.
    refused(s.host.wait(c, token, spawned.process).await);
    refused(s.host.remove_agent_socket(c, token, socket).await);
    refused(s.host.banner(c).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_network_side_ends_every_connections_sessions() {
    let s = setup("network-lost", "SessionCleanup kill\n", false);
    let (a, token_a) = login(&s, 0).await;
    let (b, token_b) = login(&s, 0).await;
    let mut pids = Vec::new();
    let mut held = Vec::new();
    for (c, token) in [(a, token_a), (b, token_b)] {
        let command = "trap '' HUP; echo ready; exec sleep 30";
        let (spawned, mut fds) = s
            .host
            .spawn_session(c, token, ask(command, false))
            .await
            .expect("spawned");
        pids.push(spawned.pid);
        // The shell may read the user's startup files first: wait until the
        // trap is set.
        let stdout = fds.remove(1);
        let line = tokio::task::spawn_blocking(move || {
            let flags = nix::fcntl::OFlag::empty();
            nix::fcntl::fcntl(&stdout, nix::fcntl::FcntlArg::F_SETFL(flags)).expect("blocking");
            let mut byte = [0u8; 1];
            let mut line = Vec::new();
            let mut f = std::fs::File::from(stdout);
            while f.read(&mut byte).expect("read") == 1 && byte[0] != b'\n' {
                line.push(byte[0]);
            }
            (String::from_utf8_lossy(&line).into_owned(), f)
        })
        .await
        .expect("read");
        assert_eq!(line.0, "ready");
        held.push((fds, line.1));
    }
    for pid in &pids {
        assert!(alive(*pid), "{pid} did not start");
    }
    let started = std::time::Instant::now();
    let (_, path, _l) = s.host.agent_socket(b, token_b).await.expect("agent");
    // Under kill, even a program that ignores SIGHUP is ended (SIGKILL after
    // the grace).
    s.host.network_lost().await;
    for pid in pids {
        assert!(gone(pid).await, "{pid} outlived the network side");
    }
    assert!(
        started.elapsed() >= super::process::HANGUP_GRACE,
        "SIGHUP is ignored: only SIGKILL after the grace ends it"
    );
    assert!(!std::path::Path::new(&path).exists());
    refused(s.host.tcp_socket(a, token_a, false).await);
    refused(s.host.tcp_socket(b, token_b, false).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_requests_are_refused_for_what_another_connection_owns() {
    let s = setup("lifecycle-refusals", "", false);
    let (a, token_a) = login(&s, 0).await;
    let (b, token_b) = login(&s, 0).await;
    let (spawned, _fds) = sleeping(&s, a, token_a).await;
    let p = spawned.process;
    let forged = LoginToken([3; 16]);
    // Wait and HangUp: no token, another connection's token, another
    // connection's program, a number the host never gave.
    refused(s.host.wait(a, forged, p).await);
    refused(s.host.wait(b, token_a, p).await);
    refused(s.host.wait(b, token_b, p).await);
    refused(s.host.wait(a, token_a, p + 1000).await);
    refused(s.host.hang_up(a, forged, p, HangUpHow::Lost).await);
    refused(s.host.hang_up(b, token_b, p, HangUpHow::Lost).await);
    refused(s.host.hang_up(b, token_a, p, HangUpHow::Lost).await);
    assert!(alive(spawned.pid), "a refused hang-up reached the program");
    // Accept: no token; a descriptor that is not a listening TCP socket.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let fd = || OwnedFd::from(listener.try_clone().expect("dup"));
    refused(s.host.accept(a, forged, fd(), 4).await);
    refused(s.host.accept(b, token_a, fd(), 4).await);
    let (pipe_r, _pipe_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    refused(s.host.accept(a, token_a, pipe_r, 4).await);
    let unbound = s.host.tcp_socket(a, token_a, false).await.expect("socket");
    refused(s.host.accept(a, token_a, unbound, 4).await);
    // The owner's listener with a connection waiting: accepted, peer told.
    let client = std::net::TcpStream::connect(addr).expect("connect");
    let mut got = Vec::new();
    for _ in 0..50 {
        got = s.host.accept(a, token_a, fd(), 4).await.expect("accept");
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, client.local_addr().expect("addr"));
    // TcpListen: no token; another connection's token; an address no TCP
    // listener has. The owner's: bound, listening, with the port the kernel
    // chose, and what Accept takes.
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    refused(s.host.tcp_listen(a, forged, any).await);
    refused(s.host.tcp_listen(b, token_a, any).await);
    refused(
        s.host
            .tcp_listen(a, token_a, "224.0.0.1:0".parse().expect("addr"))
            .await,
    );
    refused(
        s.host
            .tcp_listen(a, token_a, "255.255.255.255:0".parse().expect("addr"))
            .await,
    );
    refused(
        s.host
            .tcp_listen(a, token_a, "[ff02::1]:0".parse().expect("addr"))
            .await,
    );
    let listener = s.host.tcp_listen(a, token_a, any).await.expect("listen");
    let fl = nix::fcntl::fcntl(&listener, nix::fcntl::FcntlArg::F_GETFL).expect("fl");
    assert!(fl & libc::O_NONBLOCK != 0, "non-blocking");
    let fd_flags = nix::fcntl::fcntl(&listener, nix::fcntl::FcntlArg::F_GETFD).expect("fd");
    assert!(fd_flags & libc::FD_CLOEXEC != 0, "close-on-exec");
    let sock = socket2::SockRef::from(&listener);
    assert!(sock.reuse_address().expect("SO_REUSEADDR"));
    let bound = sock.local_addr().expect("local").as_socket().expect("inet");
    assert!(bound.ip().is_loopback() && bound.port() != 0, "{bound}");
    let client = std::net::TcpStream::connect(bound).expect("connect");
    let mut got = Vec::new();
    for _ in 0..50 {
        let dup = listener.try_clone().expect("dup");
        got = s.host.accept(a, token_a, dup, 4).await.expect("accept");
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, client.local_addr().expect("addr"));
    // Agent sockets: no token; another connection's socket.
    refused(s.host.agent_socket(b, forged).await);
    let (socket, path, _l) = s.host.agent_socket(a, token_a).await.expect("agent");
    refused(s.host.remove_agent_socket(b, token_b, socket).await);
    refused(s.host.remove_agent_socket(b, token_a, socket).await);
    assert!(std::path::Path::new(&path).exists());
    s.host
        .remove_agent_socket(a, token_a, socket)
        .await
        .expect("removed");
    assert!(!std::path::Path::new(&path).exists());
    refused(s.host.remove_agent_socket(a, token_a, socket).await);
    // Banner: a connection the host never opened.
    refused(s.host.banner(super::api::ConnId(424242)).await);
    s.host
        .hang_up(a, token_a, p, HangUpHow::Lost)
        .await
        .expect("hung up");
    assert!(gone(spawned.pid).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banner_is_read_by_the_host_from_its_own_settings() {
    let dir = std::env::temp_dir().join(format!("rsshd-host-banner-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("banner");
    std::fs::write(&file, "hello\n").expect("banner");
    let s = setup("banner", &format!("Banner {}\n", file.display()), false);
    let c = conn(&s.host).await;
    assert_eq!(
        s.host.banner(c).await.expect("banner"),
        Some("hello\n".into())
    );
    let plain = setup("no-banner", "", false);
    let c = conn(&plain.host).await;
    assert_eq!(plain.host.banner(c).await.expect("banner"), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_answer_only_for_the_hosts_live_session_programs() {
    let s = setup("commands", "", false);
    let (c, token) = login(&s, 0).await;
    let (spawned, _fds) = sleeping(&s, c, token).await;
    let own = std::process::id() as i32;
    let got = s.host.commands(&[spawned.pid, 1, own]).await;
    assert!(
        got[0].as_deref().is_some_and(|w| w.contains("sleep 30")),
        "{got:?}"
    );
    // Not session programs of the host's: init, and this very process.
    assert_eq!(got[1..], [None, None]);
    // More than one request's worth is refused by the host; the client asks in
    // batches, so a long listing still gets every answer.
    refused(
        s.host
            .call(
                super::api::Request::Commands {
                    pids: vec![spawned.pid; super::commands::COMMANDS_MAX + 1],
                },
                Vec::new(),
            )
            .await
            .map(|r| r.response),
    );
    let many = vec![spawned.pid; super::commands::COMMANDS_MAX * 2 + 1];
    let got = s.host.commands(&many).await;
    assert_eq!(got.len(), many.len());
    assert!(
        got.iter()
            .all(|w| w.as_deref().is_some_and(|w| w.contains("sleep 30")))
    );
    // Once the connection is gone, its program is no longer answered for.
    s.host.close_conn(c).await;
    assert!(gone(spawned.pid).await, "not reaped");
    assert_eq!(s.host.commands(&[spawned.pid]).await, [None]);
}
