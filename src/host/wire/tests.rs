//! The codec on a real socketpair, the client's matching and failure, and the
//! serving loop. The request table's refusals over the wire are the api_tests
//! scenarios, run a second time against a monitor thread (api_tests.rs).

use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use super::socket::{Link, LinkError};
use super::*;
use crate::host::api::{ConnId, Request, Response};
use crate::host::service::{Host, Service};
use crate::host::{HostError, Privilege};

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe")
}

/// Send raw bytes and descriptors as one datagram, as a misbehaving peer would.
fn raw_send(fd: &OwnedFd, bytes: &[u8], fds: &[RawFd]) {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        fd.as_raw_fd(),
        &[IoSlice::new(bytes)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .expect("sendmsg");
}

/// A frame's bytes without the sender's checks.
fn encode_unchecked(frame: &Frame) -> Vec<u8> {
    serde_json::to_vec(frame).expect("json")
}

fn call(id: u64, fds: usize) -> Frame {
    Frame::Call {
        id,
        fds,
        request: Request::ConnClosed { conn: ConnId(id) },
    }
}

async fn protocol_error(link: &Link) -> ProtocolError {
    match link.recv(&mut Vec::new()).await {
        Err(LinkError::Protocol(p)) => p,
        Err(e) => panic!("not a protocol error: {e}"),
        Ok(f) => panic!("accepted: {:?}", f.map(|(f, _)| f.kind())),
    }
}

#[tokio::test]
async fn a_frame_and_its_descriptors_arrive_together_close_on_exec() {
    let (a, b) = pair().expect("pair");
    let (a, b) = (Link::new(a).expect("link"), Link::new(b).expect("link"));
    let (r, w) = pipe();
    a.send(&call(7, 2), &[r, w.try_clone().expect("dup")])
        .await
        .expect("send");
    let (frame, fds) = b.recv(&mut Vec::new()).await.expect("recv").expect("frame");
    assert!(
        matches!(frame, Frame::Call { id: 7, fds: 2, .. }),
        "{frame:?}"
    );
    assert_eq!(fds.len(), 2);
    for fd in &fds {
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).expect("getfd");
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "received without FD_CLOEXEC");
    }
    // They are the same pipe: what goes in the original comes out of the copy.
    std::fs::File::from(w).write_all(b"through").expect("write");
    let mut copy = std::fs::File::from(fds.into_iter().next().expect("fd"));
    let mut buf = [0u8; 7];
    copy.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"through");
}

#[tokio::test]
async fn oversize_truncated_garbage_and_wrong_counts_are_protocol_errors() {
    let (a, b) = pair().expect("pair");
    let b = Link::new(b).expect("link");
    // Longer than the cap, whatever it holds.
    raw_send(&a, &vec![b' '; FRAME_CAP + 10], &[]);
    assert_eq!(protocol_error(&b).await, ProtocolError::Oversize);
    // A good frame cut short.
    let good = encode(&call(1, 0)).expect("encode");
    raw_send(&a, &good[..good.len() / 2], &[]);
    assert!(matches!(
        protocol_error(&b).await,
        ProtocolError::Garbage(_)
    ));
    // Not JSON; JSON of another shape; a field the protocol does not have.
    for bytes in [
        &b"\x00\xff\xfe"[..],
        br#"{"Call":{"id":1}}"#,
        br#"{"Call":{"id":1,"fds":0,"request":{"ConnClosed":{"conn":1}},"x":1}}"#,
        br#"[1,2,3]"#,
    ] {
        raw_send(&a, bytes, &[]);
        assert!(
            matches!(protocol_error(&b).await, ProtocolError::Garbage(_)),
            "{bytes:?}"
        );
    }
    // The frame says one descriptor, none came; and the other way round.
    raw_send(&a, &encode(&call(1, 1)).expect("encode"), &[]);
    assert_eq!(
        protocol_error(&b).await,
        ProtocolError::FdCount { said: 1, got: 0 }
    );
    let (r, _w) = pipe();
    raw_send(&a, &good, &[r.as_raw_fd()]);
    assert_eq!(
        protocol_error(&b).await,
        ProtocolError::FdCount { said: 0, got: 1 }
    );
    // More descriptors than a frame may carry: a call with more than a call
    // takes (the frame says so), any frame with more than an answer takes.
    let many: Vec<RawFd> = vec![r.as_raw_fd(); MAX_CALL_FDS + 1];
    raw_send(&a, &encode_unchecked(&call(1, MAX_CALL_FDS + 1)), &many);
    assert_eq!(
        protocol_error(&b).await,
        ProtocolError::TooManyFds {
            got: MAX_CALL_FDS + 1,
            max: MAX_CALL_FDS
        }
    );
    let many: Vec<RawFd> = vec![r.as_raw_fd(); MAX_ANSWER_FDS + 1];
    raw_send(&a, &good, &many);
    assert_eq!(
        protocol_error(&b).await,
        ProtocolError::TooManyFds {
            got: MAX_ANSWER_FDS + 1,
            max: MAX_ANSWER_FDS
        }
    );
    // The sender's side refuses to make either.
    let big = Frame::Call {
        id: 1,
        fds: 0,
        request: Request::Password {
            conn: ConnId(1),
            user: "u".into(),
            password: "p".repeat(FRAME_CAP),
        },
    };
    assert_eq!(encode(&big).err(), Some(ProtocolError::Oversize));
    assert_eq!(
        encode(&call(1, MAX_CALL_FDS + 1)).err(),
        Some(ProtocolError::TooManyFds {
            got: MAX_CALL_FDS + 1,
            max: MAX_CALL_FDS
        })
    );
    // A good frame still reads after all that (the link itself is fine; it is
    // the monitor that drops a peer for any of them).
    raw_send(&a, &good, &[]);
    assert!(b.recv(&mut Vec::new()).await.expect("recv").is_some());
    // The peer gone: end of stream.
    drop(a);
    assert!(b.recv(&mut Vec::new()).await.expect("recv").is_none());
}

#[test]
fn a_malformed_password_frame_does_not_quote_the_password_in_the_error() {
    // serde_json would quote a wrong-typed value or an unknown variant name.
    for bytes in [
        &br#"{"Call":{"id":1,"fds":0,"request":{"Password":{"conn":"hunter2-secret"}}}}"#[..],
        br#"{"Call":{"id":1,"fds":0,"request":{"hunter2-secret":{}}}}"#,
    ] {
        let err = decode(bytes, 0).expect_err("refused").to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[test]
fn errors_cross_as_kind_and_message() {
    let all = [
        HostError::Os {
            what: "open x".into(),
            source: nix::Error::EACCES,
        },
        HostError::Io(std::io::Error::from_raw_os_error(libc::ENOENT)),
        HostError::NoSuchUser("ghost".into()),
        HostError::NotPermitted("no such login token".into()),
        HostError::Busy("too many".into()),
        HostError::TimedOut(Duration::from_millis(1500)),
        HostError::SessionFatal("bad chroot".into()),
        HostError::Link("gone".into()),
    ];
    for e in all {
        let wire = WireError::from(&e);
        let json = serde_json::to_string(&wire).expect("json");
        let back = HostError::from(serde_json::from_str::<WireError>(&json).expect("read"));
        assert_eq!(back.to_string(), e.to_string());
        assert_eq!(
            std::mem::discriminant(&back),
            std::mem::discriminant(&e),
            "{e}"
        );
    }
    let io = HostError::from(WireError::from(&HostError::Io(
        std::io::Error::from_raw_os_error(libc::ENOENT),
    )));
    assert!(matches!(io, HostError::Io(e) if e.kind() == std::io::ErrorKind::NotFound));
}

/// A fake monitor for the client: reads `n` calls, answers them in reverse
/// order (each with its own id as the connection number), then closes.
async fn reverse_monitor(link: Link, n: usize) {
    let mut calls = Vec::new();
    for _ in 0..n {
        match link.recv(&mut Vec::new()).await {
            Ok(Some((Frame::Call { id, .. }, _))) => calls.push(id),
            other => panic!("{:?}", other.map(|f| f.map(|(f, _)| f.kind()))),
        }
    }
    for id in calls.into_iter().rev() {
        let frame = Frame::Answer {
            id,
            fds: 0,
            answer: Ok(Response::Opened(ConnId(id * 100))),
        };
        link.send(&frame, &[]).await.expect("answer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_get_their_own_answers_and_a_dead_link_fails_them_all() {
    let (a, b) = pair().expect("pair");
    let (host, _notices) = Host::remote(Privilege::current(), a).expect("client");
    let monitor = tokio::spawn(reverse_monitor(Link::new(b).expect("link"), 3));
    let peer = "127.0.0.1:1".parse().expect("addr");
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { host.open_conn(peer, peer, None).await })
        })
        .collect();
    let mut got = Vec::new();
    for c in calls {
        let answered = tokio::time::timeout(Duration::from_secs(10), c).await;
        got.push(answered.expect("in time").expect("task").expect("answer"));
    }
    monitor.await.expect("monitor");
    // Each caller got the answer to its own id (ids 1..=3, in any order of calls).
    got.sort_by_key(|c| c.0);
    assert_eq!(got, vec![ConnId(100), ConnId(200), ConnId(300)]);
    assert_eq!(host.round_trips(), Some(3));
    // The monitor has closed its end: this call, and every later one, fails.
    // Which way depends on who notices first: the reader's end of file ("the
    // monitor closed the link") or this call's send (EPIPE, "link to the
    // monitor failed"); either marks the link dead for every later call.
    for _ in 0..2 {
        let call = tokio::time::timeout(Duration::from_secs(10), host.open_conn(peer, peer, None));
        match call.await.expect("in time") {
            Err(HostError::Link(why)) => assert!(why.contains("monitor"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_call_fails_when_the_monitor_dies_mid_call() {
    let (a, b) = pair().expect("pair");
    let (host, _notices) = Host::remote(Privilege::current(), a).expect("client");
    let b = Link::new(b).expect("link");
    let pending = tokio::spawn({
        let host = host.clone();
        async move { host.begin_user(ConnId(1), "x").await }
    });
    // The call arrives; the monitor then says something out of protocol.
    assert!(b.recv(&mut Vec::new()).await.expect("recv").is_some());
    b.send(&call(1, 0), &[]).await.expect("send");
    let r = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("in time")
        .expect("task");
    assert!(
        matches!(r, Err(HostError::Link(ref w)) if w.contains("Call")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_reach_the_network_side_in_order() {
    let (a, b) = pair().expect("pair");
    let (_host, mut notices) = Host::remote(Privilege::current(), a).expect("client");
    let service = test_service();
    let (serving, notifier) = serve(service, b, ServeOptions::default()).expect("serve");
    let serving = tokio::spawn(serving);
    // A reload's configuration is the attached descriptor (a pipe here).
    let (read, write) = nix::unistd::pipe().expect("pipe");
    std::fs::File::from(write)
        .write_all(b"config")
        .expect("write");
    notifier
        .send(Notice::Reload, vec![read])
        .await
        .expect("send");
    notifier
        .send(Notice::Shutdown, Vec::new())
        .await
        .expect("send");
    let (notice, fds) = notices.recv().await.expect("reload");
    assert_eq!(notice, Notice::Reload);
    let [fd]: [OwnedFd; 1] = fds.try_into().expect("one descriptor");
    let mut got = String::new();
    std::fs::File::from(fd)
        .read_to_string(&mut got)
        .expect("read");
    assert_eq!(got, "config");
    let (notice, fds) = notices.recv().await.expect("shutdown");
    assert_eq!((notice, fds.len()), (Notice::Shutdown, 0));
    serving.abort();
}

pub(crate) fn test_service() -> Service {
    let text = "UsePAM no\nStrictModes no\nAuthorizedKeysFile /nonexistent/%u\n";
    let (config, _) = crate::config::Config::parse_str("t.conf", text, &[]).expect("config");
    Service::new(Privilege::current(), Arc::new(config))
}

/// A monitor serving `service` on a thread and runtime of its own (as the
/// monitor process would); the network process's end of its link.
pub(crate) fn monitor_thread(service: Service) -> OwnedFd {
    let (net, monitor) = pair().expect("pair");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let (serving, _notifier) =
                serve(service, monitor, ServeOptions::default()).expect("serve");
            serving.await
        })
    });
    net
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_call_holds_up_no_other_connection() {
    let service = test_service();
    let (host, _notices) =
        Host::remote(Privilege::current(), monitor_thread(service.clone())).expect("client");
    let peer = "127.0.0.1:1".parse().expect("addr");
    let a = host.open_conn(peer, peer, None).await.expect("conn");
    let b = host.open_conn(peer, peer, None).await.expect("conn");
    // Connection a's state is busy (as during a PAM conversation): its next
    // call waits in the monitor...
    let state = service.conn(a).expect("state");
    let guard = state.lock().await;
    let stuck = tokio::spawn({
        let host = host.clone();
        async move { host.begin_user(a, "nobody").await }
    });
    // ...while b's calls are answered.
    for _ in 0..3 {
        let v = tokio::time::timeout(Duration::from_secs(10), host.begin_user(b, "nobody"))
            .await
            .expect("b is not held up")
            .expect("verdict");
        assert!(v.exists);
    }
    assert!(!stuck.is_finished());
    drop(guard);
    let v = tokio::time::timeout(Duration::from_secs(10), stuck)
        .await
        .expect("a is answered once free")
        .expect("task")
        .expect("verdict");
    assert!(v.exists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_drops_a_peer_that_speaks_out_of_protocol() {
    for (bytes, want) in [
        (&b"not json"[..], "not JSON"),
        (
            br#"{"Notice":"Shutdown"}"#,
            "Notice frame is not for this side",
        ),
        (
            br#"{"Answer":{"id":1,"fds":0,"answer":{"Ok":"Done"}}}"#,
            "Answer frame",
        ),
    ] {
        let (net, monitor) = pair().expect("pair");
        let (serving, notifier) =
            serve(test_service(), monitor, ServeOptions::default()).expect("serve");
        let serving = tokio::spawn(serving);
        raw_send(&net, bytes, &[]);
        let end = tokio::time::timeout(Duration::from_secs(10), serving)
            .await
            .expect("in time")
            .expect("task");
        assert!(matches!(end, ServeEnd::Protocol(_)), "{end}");
        assert!(end.to_string().contains(want), "{end}");
        // Dropped although the notifier still holds the link: the peer reads
        // end of stream, and the monitor can send it nothing more.
        let net = Link::new(net).expect("link");
        assert!(net.recv(&mut Vec::new()).await.expect("recv").is_none());
        assert!(notifier.send(Notice::Shutdown, Vec::new()).await.is_err());
    }
}

/// What a login costs in round trips, call for call as the connection handler
/// makes them (handler/mod.rs banner, auth.rs, start.rs, session.rs,
/// cleanup.rs, connection/mod.rs): each typed call is exactly one datagram each
/// way, with no retry or hidden call behind it. The figure with the real client
/// is the debug line `close_conn` logs (tests/privsep_compromised.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publickey_login_and_one_session_cost_one_round_trip_per_step() {
    use crate::host::api::{HangUpHow, KeyAnswer, MethodResult, SpawnAsk};
    use russh::keys::{Algorithm, PrivateKey};
    let dir = std::env::temp_dir().join(format!("rsshd-wire-trips-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let private = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).expect("key");
    let key = private.public_key().clone();
    let file = dir.join("authorized_keys");
    std::fs::write(&file, format!("{}\n", key.to_openssh().expect("openssh"))).expect("write");
    let text = format!(
        "UsePAM no\nStrictModes no\nPermitUserRC no\nPermitRootLogin yes\nAuthorizedKeysFile {}\n",
        file.display()
    );
    let (config, _) = crate::config::Config::parse_str("t.conf", &text, &[]).expect("config");
    let service = Service::new(Privilege::current(), Arc::new(config));
    crate::host::keyverify_tests::give_host_key(&service);
    let (host, _notices) =
        Host::remote(Privilege::current(), monitor_thread(service)).expect("client");
    // The key exchange: HostKeys (once per start of the network process, not
    // counted) and SignKex (once per connection, counted).
    let session_id = crate::host::keyverify_tests::kex(&host).await;
    let start = host.round_trips().unwrap_or(0) - 1;
    let me = crate::host::current_user().expect("me");
    let peer = "127.0.0.1:40000".parse().expect("addr");
    let local = "127.0.0.1:22".parse().expect("addr");
    let algo = Algorithm::Ed25519;
    let mut steps = Vec::new();
    let mut step =
        |what: &str| steps.push((what.to_string(), host.round_trips().unwrap_or(0) - start));
    let c = host.open_conn(peer, local, None).await.expect("conn");
    host.banner(c).await.expect("banner");
    host.begin_user(c, &me.name).await.expect("user");
    step("before auth");
    let asked = host.key_allowed(c, &me.name, &key, &algo, None).await;
    assert_eq!(asked.expect("answer"), KeyAnswer::Allowed);
    let verified =
        crate::host::keyverify_tests::verify(&host, c, &me.name, &private, None, &session_id);
    let token = match verified.await {
        Ok(MethodResult::Complete { token, .. }) => token,
        other => panic!("{other:?}"),
    };
    step("logged in");
    let ask = SpawnAsk {
        requested: Some("true".into()),
        is_subsystem: false,
        pty: None,
        client_env: Vec::new(),
        auth_sock: None,
    };
    let (spawned, _pipes) = host.spawn_session(c, token, ask).await.expect("spawn");
    host.wait(c, token, spawned.process).await.expect("exit");
    host.hang_up(c, token, spawned.process, HangUpHow::Ended)
        .await
        .expect("hang up");
    host.close_conn(c).await;
    step("closed");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("round trips: {steps:?}");
    assert_eq!(
        steps.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        vec![4, 6, 10],
        "{steps:?}"
    );
}

/// The fuzz target's seeds are frames the decoder takes (else the fuzzer would
/// start from garbage and rarely reach the service).
#[test]
fn the_fuzz_seeds_decode() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/monitor_request");
    let mut frames = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("seed");
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            decode(line, 0).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            frames += 1;
        }
    }
    assert!(frames >= 20, "{frames}");
}
