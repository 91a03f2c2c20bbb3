//! The boundary's refusals, one test each: what a compromised network side could
//! ask for and must not get. Step 2 runs the same requests against the monitor
//! process.

use std::path::PathBuf;
use std::sync::Arc;

use russh::keys::{Algorithm, PrivateKey, PublicKey};

use super::api::{ConnId, KbdStep, KeyAnswer, LoginToken, MethodResult, SpawnAsk};
use super::keyverify_tests::{allow, give_host_key, kex, verify};
use super::service::Host;
use super::{HostError, Privilege, UserInfo};
use crate::config::Config;

pub(super) struct Setup {
    pub(super) host: Host,
    pub(super) me: UserInfo,
    pub(super) keys: Vec<PrivateKey>,
    pub(super) dir: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn key() -> PrivateKey {
    PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).expect("ed25519 key")
}

/// A host whose config lets the account running the tests in with the first
/// of two fresh keys (the second is listed too where `both`), plus `extra`.
pub(super) fn setup(tag: &str, extra: &str, both: bool) -> Setup {
    let dir = test_dir(tag);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let keys = vec![key(), key()];
    let listed = if both { &keys[..] } else { &keys[..1] };
    let lines: String = listed
        .iter()
        .map(|k| format!("{}\n", k.public_key().to_openssh().expect("openssh")))
        .collect();
    let file = dir.join("authorized_keys");
    std::fs::write(&file, lines).expect("authorized_keys");
    let text = format!(
        "AuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPermitUserRC no\nPermitRootLogin prohibit-password\n{extra}",
        file.display()
    );
    let (config, _) = Config::parse_str("t.conf", &text, &[]).expect("config");
    Setup {
        host: host(Arc::new(config)),
        me: super::current_user().expect("current user"),
        keys,
        dir,
    }
}

thread_local! {
    /// Set by the `over_the_wire` runs: the same scenarios against a monitor
    /// serving the host on its own thread and runtime, through the protocol.
    static OVER_THE_WIRE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A test's directory (its own for the run over the wire: both runs go at once).
fn test_dir(tag: &str) -> PathBuf {
    let wire = if OVER_THE_WIRE.with(|w| w.get()) {
        "-wire"
    } else {
        ""
    };
    std::env::temp_dir().join(format!("rsshd-host-api-{tag}{wire}-{}", std::process::id()))
}

/// The host under test: in-process, or (over the wire) a remote one.
fn host(config: Arc<Config>) -> Host {
    let service = super::service::Service::new(Privilege::current(), config);
    give_host_key(&service);
    if !OVER_THE_WIRE.with(|w| w.get()) {
        return Host::from(service);
    }
    let link = super::wire::tests::monitor_thread(service);
    let (host, _notices) = Host::remote(Privilege::current(), link).expect("remote host");
    host
}

pub(super) async fn conn(host: &Host) -> ConnId {
    let peer = "127.0.0.1:40000".parse().expect("addr");
    let local = "127.0.0.1:22".parse().expect("addr");
    host.open_conn(peer, local, None).await.expect("opened")
}

/// Log in with key `n` over a new connection: its id and token.
pub(super) async fn login(s: &Setup, n: usize) -> (ConnId, LoginToken) {
    let c = conn(&s.host).await;
    let name = &s.me.name;
    let verdict = s.host.begin_user(c, name).await.expect("verdict");
    assert!(verdict.exists && !verdict.refused, "{verdict:?}");
    allow(&s.host, c, name, &s.keys[n]).await;
    let sid = kex(&s.host).await;
    match verify(&s.host, c, name, &s.keys[n], None, &sid).await {
        Ok(MethodResult::Complete { token, login }) => {
            assert_eq!(login.user.uid, s.me.uid);
            (c, token)
        }
        other => panic!("no login: {other:?}"),
    }
}

pub(super) fn refused<T: std::fmt::Debug>(r: Result<T, HostError>) {
    match r {
        Err(HostError::NotPermitted(_)) => {}
        other => panic!("not refused: {other:?}"),
    }
}

/// A `sleep 30` session program started for login (`conn`, `token`).
pub(super) async fn sleeping(
    s: &Setup,
    conn: ConnId,
    token: LoginToken,
) -> (super::api::Spawned, Vec<std::os::fd::OwnedFd>) {
    s.host
        .spawn_session(conn, token, sleeper())
        .await
        .expect("spawned")
}

pub(super) fn sleeper() -> SpawnAsk {
    SpawnAsk {
        requested: Some("sleep 30".into()),
        is_subsystem: false,
        pty: None,
        client_env: Vec::new(),
        auth_sock: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_without_a_token_the_host_issued_is_refused() {
    let s = setup("no-token", "", false);
    let c = conn(&s.host).await;
    refused(
        s.host
            .spawn_session(c, LoginToken([7; 16]), sleeper())
            .await
            .map(|(s, _)| s),
    );
    refused(s.host.tcp_socket(c, LoginToken([0; 16]), false).await);
    // Nor on a connection the host never opened.
    refused(s.host.begin_user(ConnId(9999), &s.me.name).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_works_only_on_its_own_connection_and_until_it_closes() {
    let s = setup("other-conn", "", false);
    let (a, token) = login(&s, 0).await;
    let b = conn(&s.host).await;
    refused(
        s.host
            .spawn_session(b, token, sleeper())
            .await
            .map(|(s, _)| s),
    );
    refused(s.host.tcp_socket(b, token, false).await);
    // The same token on its own connection is good.
    s.host.tcp_socket(a, token, false).await.expect("socket");
    s.host.close_conn(a).await;
    refused(s.host.tcp_socket(a, token, false).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proved_key_the_host_does_not_allow_gets_no_login() {
    let s = setup("not-allowed", "", false);
    let c = conn(&s.host).await;
    let name = &s.me.name;
    s.host.begin_user(c, name).await.expect("verdict");
    let algo = Algorithm::Ed25519;
    let sid = kex(&s.host).await;
    // Key 1 is not in the file: asked about or proved, it is refused.
    let asked = s
        .host
        .key_allowed(c, name, s.keys[1].public_key(), &algo, None)
        .await;
    assert_eq!(asked.expect("answer"), KeyAnswer::Refused);
    let verified = verify(&s.host, c, name, &s.keys[1], None, &sid).await;
    assert!(
        matches!(verified, Err(HostError::NotPermitted(_))),
        "{verified:?}"
    );
    // Nor does a user that does not exist, whatever key.
    let ghost = "rsshd-no-such-user-x";
    let v = s.host.begin_user(c, ghost).await.expect("verdict");
    assert!(!v.exists);
    let asked = s
        .host
        .key_allowed(c, ghost, s.keys[0].public_key(), &algo, None)
        .await;
    assert_eq!(asked.expect("answer"), KeyAnswer::Refused);
    let verified = verify(&s.host, c, ghost, &s.keys[0], None, &sid).await;
    assert!(
        matches!(verified, Err(HostError::NotPermitted(_))),
        "{verified:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_until_the_hosts_own_authentication_methods_are_satisfied() {
    let s = setup(
        "methods",
        "AuthenticationMethods publickey,publickey publickey,password\n",
        true,
    );
    let c = conn(&s.host).await;
    let name = &s.me.name;
    s.host.begin_user(c, name).await.expect("verdict");
    let sid = kex(&s.host).await;
    allow(&s.host, c, name, &s.keys[0]).await;
    let first = verify(&s.host, c, name, &s.keys[0], None, &sid).await;
    match first.expect("answer") {
        MethodResult::Partial { next } => {
            assert_eq!(next, vec!["publickey".to_string(), "password".to_string()])
        }
        other => panic!("{other:?}"),
    }
    // The same key again does not make two (sshd's auth2_key_already_used).
    let again = s
        .host
        .key_allowed(c, name, s.keys[0].public_key(), &Algorithm::Ed25519, None)
        .await;
    assert_eq!(again.expect("answer"), KeyAnswer::Refused);
    let again = verify(&s.host, c, name, &s.keys[0], None, &sid).await;
    assert!(
        matches!(again, Err(HostError::NotPermitted(_))),
        "{again:?}"
    );
    // A password PAM never saw (UsePAM no) completes nothing.
    let pw = s.host.password(c, name, "anything").await;
    assert!(matches!(pw, Ok(MethodResult::Failed { .. })), "{pw:?}");
    // Keyboard-interactive without PAM prompts, then fails.
    match s.host.kbd_start(c, name).await.expect("kbd") {
        KbdStep::Prompts { prompts, .. } => assert_eq!(prompts.len(), 1),
        other => panic!("{other:?}"),
    }
    let answered = s.host.kbd_answer(c, vec!["x".into()]).await.expect("kbd");
    assert!(
        matches!(answered, KbdStep::Done(MethodResult::Failed { .. })),
        "{answered:?}"
    );
    // The second, distinct key completes the chain: now, and only now, a token.
    allow(&s.host, c, name, &s.keys[1]).await;
    let second = verify(&s.host, c, name, &s.keys[1], None, &sid).await;
    assert!(
        matches!(second, Ok(MethodResult::Complete { .. })),
        "{second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_only_the_connections_own_sessions() {
    let s = setup("signals", "", false);
    let (a, token_a) = login(&s, 0).await;
    let (b, token_b) = login(&s, 0).await;
    let (spawned, _pipes) = sleeping(&s, a, token_a).await;
    assert!(spawned.pid > 0 && !spawned.is_shell && !spawned.forced);
    let term = nix::sys::signal::Signal::SIGTERM as i32;
    // Connection b, with its own good token, names a's program.
    refused(s.host.signal(b, token_b, spawned.process, term).await);
    // Or a's program with a's token on b.
    refused(s.host.signal(b, token_a, spawned.process, term).await);
    // A number the host never gave.
    refused(
        s.host
            .signal(a, token_a, spawned.process + 1000, term)
            .await,
    );
    // The owner may.
    let sent = s.host.signal(a, token_a, spawned.process, term).await;
    assert!(sent.expect("signalled"));
    // Another connection may not wait for it either.
    refused(s.host.wait(b, token_b, spawned.process).await);
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.host.wait(a, token_a, spawned.process),
    )
    .await
    .expect("ended in time");
    assert_eq!(
        outcome.expect("outcome"),
        super::ExitOutcome::Signal {
            name: "TERM".into(),
            core_dumped: false
        }
    );
    // Ended and told so: the host reaps it, and forgets its number.
    s.host
        .hang_up(a, token_a, spawned.process, super::api::HangUpHow::Ended)
        .await
        .expect("hung up");
}

#[test]
fn requests_and_responses_are_plain_data() {
    use super::api::{Request, Response};
    let r = Request::Spawn {
        conn: ConnId(3),
        token: LoginToken([1; 16]),
        ask: sleeper(),
    };
    let text = serde_json::to_string(&r).expect("serialize");
    let back: Request = serde_json::from_str(&text).expect("deserialize");
    assert!(matches!(
        back,
        Request::Spawn {
            conn: ConnId(3),
            ..
        }
    ));
    let r = Response::Method(MethodResult::Partial {
        next: vec!["password".into()],
    });
    let text = serde_json::to_string(&r).expect("serialize");
    assert!(serde_json::from_str::<Response>(&text).is_ok());
    // A token never shows in a log line.
    assert_eq!(format!("{:?}", LoginToken([9; 16])), "LoginToken(..)");
}

/// A user certificate of `key` for `principal`, signed by `ca`, valid for an hour.
fn user_cert(ca: &PrivateKey, key: &PublicKey, principal: &str) -> russh::keys::Certificate {
    use russh::keys::ssh_key::certificate::{Builder, CertType};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut b = Builder::new_with_random_nonce(
        &mut rand::rng(),
        key.key_data().clone(),
        now - 60,
        now + 3600,
    )
    .expect("builder");
    b.serial(7).expect("serial");
    b.key_id("api-test").expect("key id");
    b.cert_type(CertType::User).expect("type");
    b.valid_principal(principal).expect("principal");
    b.sign(ca).expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_completes_only_after_the_host_allowed_it_here() {
    let dir = test_dir("cert");
    let extra = format!("TrustedUserCAKeys {}\n", dir.join("ca.pub").display());
    let s = setup("cert", &extra, false);
    let ca = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).expect("ca");
    let ca_line = ca.public_key().to_openssh().expect("openssh");
    std::fs::write(dir.join("ca.pub"), format!("{ca_line}\n")).expect("ca.pub");
    let name = &s.me.name;
    let cert = user_cert(&ca, s.keys[1].public_key(), name);
    let c = conn(&s.host).await;
    s.host.begin_user(c, name).await.expect("verdict");
    let sid = kex(&s.host).await;
    let key = &s.keys[1];
    // A certificate of another key than the one named.
    let other = verify(&s.host, c, name, &s.keys[0], Some(&cert), &sid).await;
    assert!(
        matches!(other, Err(HostError::NotPermitted(_))),
        "{other:?}"
    );
    // Its signed request without the host's earlier KeyAllowed: refused.
    let early = verify(&s.host, c, name, key, Some(&cert), &sid).await;
    assert!(
        matches!(early, Err(HostError::NotPermitted(_))),
        "{early:?}"
    );
    // Key 1 alone is not listed; its certificate from the trusted CA is.
    let algo = Algorithm::Ed25519;
    let plain = s
        .host
        .key_allowed(c, name, key.public_key(), &algo, None)
        .await;
    assert_eq!(plain.expect("answer"), KeyAnswer::Refused);
    let asked = s
        .host
        .key_allowed(c, name, key.public_key(), &algo, Some(&cert))
        .await;
    assert_eq!(asked.expect("answer"), KeyAnswer::Allowed);
    // The plain key's signature does not ride on the certificate's allowance.
    let plain = verify(&s.host, c, name, key, None, &sid).await;
    assert!(
        matches!(plain, Err(HostError::NotPermitted(_))),
        "{plain:?}"
    );
    s.host
        .key_allowed(c, name, key.public_key(), &algo, Some(&cert))
        .await
        .expect("answer");
    // The certified key signs the request that names the certificate.
    let done = verify(&s.host, c, name, key, Some(&cert), &sid).await;
    assert!(
        matches!(done, Ok(MethodResult::Complete { .. })),
        "{done:?}"
    );
}

/// The scenarios above again, each against a monitor over a real socketpair
/// (the test body runs on this thread, so the flag reaches its `setup`). The
/// refusals must hold over the wire exactly as in-process.
mod over_the_wire {
    macro_rules! again {
        ($($name:ident),* $(,)?) => {$(
            #[test]
            fn $name() {
                super::OVER_THE_WIRE.with(|w| w.set(true));
                super::$name();
            }
        )*};
    }
    again!(
        spawn_without_a_token_the_host_issued_is_refused,
        a_token_works_only_on_its_own_connection_and_until_it_closes,
        a_proved_key_the_host_does_not_allow_gets_no_login,
        no_token_until_the_hosts_own_authentication_methods_are_satisfied,
        a_certificate_completes_only_after_the_host_allowed_it_here,
        signals_reach_only_the_connections_own_sessions,
    );
}
