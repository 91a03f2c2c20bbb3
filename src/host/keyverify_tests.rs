//! `KeyVerify` and `SignKex` refusals, one test each: what a compromised network
//! side could try with signatures it saw, or made up, and must not get a login
//! with. Helpers here also serve `api_tests`.

use russh::keys::signature::Signer;
use russh::keys::ssh_encoding::Encode;
use russh::keys::ssh_key::private::KeypairData;
use russh::keys::{Algorithm, Certificate, HashAlg, PrivateKey};

use super::HostError;
use super::api::{ConnId, KeyAnswer, MethodResult, Request, Response};
use super::api_tests::{conn, setup};
use super::host_keys::{HostKey, HostKeySet};
use super::service::Host;

/// Give `host` a fresh ed25519 host key.
pub(super) fn give_host_key(host: &super::service::Service) {
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).expect("host key");
    host.set_host_keys(HostKeySet {
        keys: vec![HostKey::Private(Box::new(key))],
        certificates: Vec::new(),
    });
}

/// The public host keys, as the network side asks for them (`HostKeys`).
pub(super) async fn host_keys(host: &Host) -> Vec<String> {
    match host
        .call(Request::HostKeys, Vec::new())
        .await
        .expect("host keys")
        .response
    {
        super::api::Response::HostKeys { keys, .. } => keys,
        r => panic!("HostKeys answered {r:?}"),
    }
}

/// A key exchange as the network side runs it: a fresh hash the host signs.
/// Returns the hash (the session identifier of the connection it is for).
pub(super) async fn kex(host: &Host) -> Vec<u8> {
    let hash: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    let keys = host_keys(host).await;
    let request = Request::SignKex {
        key_openssh: keys[0].clone(),
        algo: "ssh-ed25519".into(),
        data: hash.clone(),
    };
    match host
        .call(request, Vec::new())
        .await
        .expect("signed")
        .response
    {
        Response::Signature(_) => hash,
        other => panic!("{other:?}"),
    }
}

/// RFC 4252 section 7's signed data.
pub(super) fn signed_data(session_id: &[u8], user: &str, algo: &str, blob: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    session_id.encode(&mut d).expect("encode");
    d.push(50);
    for s in [user, "ssh-connection", "publickey"] {
        s.encode(&mut d).expect("encode");
    }
    d.push(1);
    algo.encode(&mut d).expect("encode");
    blob.encode(&mut d).expect("encode");
    d
}

/// `key`'s signature of `data` under `algo`, SSH-encoded.
pub(super) fn sign(key: &PrivateKey, algo: &Algorithm, data: &[u8]) -> Vec<u8> {
    let sig = match (key.key_data(), algo) {
        (KeypairData::Rsa(rsa), Algorithm::Rsa { hash }) => (rsa, *hash).try_sign(data),
        _ => key.try_sign(data),
    }
    .expect("sign");
    let mut out = Vec::new();
    sig.encode(&mut out).expect("encode");
    out
}

/// A `KeyVerify` as given.
#[allow(clippy::too_many_arguments)]
pub(super) async fn verify_raw(
    host: &Host,
    conn: ConnId,
    user: &str,
    key: &PrivateKey,
    cert: Option<&Certificate>,
    algo: &Algorithm,
    signed_data: Vec<u8>,
    signature: Vec<u8>,
) -> Result<MethodResult, HostError> {
    let request = Request::KeyVerify {
        conn,
        user: user.to_string(),
        key_openssh: key.public_key().to_openssh().expect("openssh"),
        cert_openssh: cert.map(|c| c.to_openssh().expect("openssh")),
        algo: algo.as_str().to_string(),
        signed_data,
        signature,
    };
    match host.call(request, Vec::new()).await?.response {
        Response::Method(m) => Ok(m),
        other => panic!("{other:?}"),
    }
}

/// A `KeyVerify` as an honest network side sends it: `key` (or `cert`) signs
/// the request for `user` over `session_id`.
pub(super) async fn verify(
    host: &Host,
    conn: ConnId,
    user: &str,
    key: &PrivateKey,
    cert: Option<&Certificate>,
    session_id: &[u8],
) -> Result<MethodResult, HostError> {
    let algo = key.algorithm();
    let (name, blob) = match cert {
        Some(c) => (algo.to_certificate_type(), c.to_bytes().expect("blob")),
        None => (
            algo.as_str().to_string(),
            key.public_key().to_bytes().expect("blob"),
        ),
    };
    let data = signed_data(session_id, user, &name, &blob);
    let signature = sign(key, &algo, &data);
    verify_raw(host, conn, user, key, cert, &algo, data, signature).await
}

/// KeyAllowed for key `key` (as the client's offer), expecting `Allowed`.
pub(super) async fn allow(host: &Host, conn: ConnId, user: &str, key: &PrivateKey) {
    let answer = host
        .key_allowed(conn, user, key.public_key(), &key.algorithm(), None)
        .await;
    assert_eq!(answer.expect("answer"), KeyAnswer::Allowed);
}

fn refused(r: Result<MethodResult, HostError>) {
    assert!(matches!(r, Err(HostError::NotPermitted(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_signature_logs_in_and_each_forgery_is_refused() {
    let s = setup("kv-forge", "", false);
    let name = &s.me.name;
    let c = conn(&s.host).await;
    s.host.begin_user(c, name).await.expect("verdict");
    let sid = kex(&s.host).await;
    let key = &s.keys[0];
    let algo = key.algorithm();
    let blob = key.public_key().to_bytes().expect("blob");
    let good = signed_data(&sid, name, algo.as_str(), &blob);
    // A key never allowed on this connection.
    refused(verify(&s.host, c, name, key, None, &sid).await);
    // Signed by another key than the one named.
    allow(&s.host, c, name, key).await;
    let forged = sign(&s.keys[1], &algo, &good);
    refused(verify_raw(&s.host, c, name, key, None, &algo, good.clone(), forged).await);
    // Signed data for another user.
    allow(&s.host, c, name, key).await;
    let other_user = if name == "root" { "nobody" } else { "root" };
    let other = signed_data(&sid, other_user, algo.as_str(), &blob);
    let sig = sign(key, &algo, &other);
    refused(verify_raw(&s.host, c, name, key, None, &algo, other, sig).await);
    // Signed data naming another key than the one proved.
    allow(&s.host, c, name, key).await;
    let blob1 = s.keys[1].public_key().to_bytes().expect("blob");
    let other = signed_data(&sid, name, algo.as_str(), &blob1);
    let sig = sign(key, &algo, &other);
    refused(verify_raw(&s.host, c, name, key, None, &algo, other, sig).await);
    // Garbage: not a userauth payload, trailing bytes, truncated.
    for data in [
        b"garbage".to_vec(),
        [good.clone(), vec![0]].concat(),
        good[..good.len() - 3].to_vec(),
    ] {
        allow(&s.host, c, name, key).await;
        let sig = sign(key, &algo, &data);
        refused(verify_raw(&s.host, c, name, key, None, &algo, data, sig).await);
    }
    // A signature that is not one.
    allow(&s.host, c, name, key).await;
    refused(verify_raw(&s.host, c, name, key, None, &algo, good.clone(), vec![0; 9]).await);
    // The honest request still works, after all that.
    allow(&s.host, c, name, key).await;
    let done = verify(&s.host, c, name, key, None, &sid).await;
    assert!(
        matches!(done, Ok(MethodResult::Complete { .. })),
        "{done:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ids_the_host_never_signed_or_of_another_connection_are_refused() {
    let s = setup("kv-replay", "", false);
    let name = &s.me.name;
    let key = &s.keys[0];
    // A session identifier the host never signed (another server's, say).
    let a = conn(&s.host).await;
    s.host.begin_user(a, name).await.expect("verdict");
    allow(&s.host, a, name, key).await;
    refused(verify(&s.host, a, name, key, None, &[7u8; 32]).await);
    // a logs in over its own session identifier.
    let sid_a = kex(&s.host).await;
    allow(&s.host, a, name, key).await;
    let done = verify(&s.host, a, name, key, None, &sid_a).await;
    assert!(
        matches!(done, Ok(MethodResult::Complete { .. })),
        "{done:?}"
    );
    // The same signed request replayed on connection b: refused, while a is
    // open and after it closed.
    let b = conn(&s.host).await;
    s.host.begin_user(b, name).await.expect("verdict");
    allow(&s.host, b, name, key).await;
    refused(verify(&s.host, b, name, key, None, &sid_a).await);
    s.host.close_conn(a).await;
    allow(&s.host, b, name, key).await;
    refused(verify(&s.host, b, name, key, None, &sid_a).await);
    // A session identifier signed for another connection's exchange, not yet
    // used: b may claim one, but then it is b's and no other's.
    let sid_b = kex(&s.host).await;
    allow(&s.host, b, name, key).await;
    let done = verify(&s.host, b, name, key, None, &sid_b).await;
    assert!(
        matches!(done, Ok(MethodResult::Complete { .. })),
        "{done:?}"
    );
    let c = conn(&s.host).await;
    s.host.begin_user(c, name).await.expect("verdict");
    allow(&s.host, c, name, key).await;
    refused(verify(&s.host, c, name, key, None, &sid_b).await);
    // One connection, one session identifier: its second publickey step may
    // not come over another exchange hash, even one the host signed.
    let setup2 = setup(
        "kv-replay-2",
        "AuthenticationMethods publickey,publickey\n",
        true,
    );
    let (h, me) = (&setup2.host, &setup2.me.name);
    let e = conn(h).await;
    h.begin_user(e, me).await.expect("verdict");
    let (sid_e, sid_f) = (kex(h).await, kex(h).await);
    allow(h, e, me, &setup2.keys[0]).await;
    let first = verify(h, e, me, &setup2.keys[0], None, &sid_e).await;
    assert!(
        matches!(first, Ok(MethodResult::Partial { .. })),
        "{first:?}"
    );
    allow(h, e, me, &setup2.keys[1]).await;
    refused(verify(h, e, me, &setup2.keys[1], None, &sid_f).await);
    allow(h, e, me, &setup2.keys[1]).await;
    let second = verify(h, e, me, &setup2.keys[1], None, &sid_e).await;
    assert!(
        matches!(second, Ok(MethodResult::Complete { .. })),
        "{second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_kex_signs_only_exchange_hashes_with_the_hosts_keys() {
    let s = setup("kv-sign", "", false);
    let keys = host_keys(&s.host).await;
    let ask = |key: String, algo: &str, data: Vec<u8>| {
        let host = s.host.clone();
        let algo = algo.to_string();
        async move {
            host.call(
                Request::SignKex {
                    key_openssh: key,
                    algo,
                    data,
                },
                Vec::new(),
            )
            .await
            .map(|r| r.response)
        }
    };
    assert!(matches!(
        ask(keys[0].clone(), "ssh-ed25519", vec![1; 32]).await,
        Ok(Response::Signature(_))
    ));
    // Not a hash's length: a userauth request, a certificate, anything else.
    let r = ask(keys[0].clone(), "ssh-ed25519", vec![1; 100]).await;
    assert!(matches!(r, Err(HostError::NotPermitted(_))), "{r:?}");
    // A key that is not the host's.
    let other = s.keys[0].public_key().to_openssh().expect("openssh");
    let r = ask(other, "ssh-ed25519", vec![1; 32]).await;
    assert!(matches!(r, Err(HostError::NotPermitted(_))), "{r:?}");
    // An algorithm of another key type, or one HostKeyAlgorithms leaves out.
    let r = ask(keys[0].clone(), "rsa-sha2-512", vec![1; 32]).await;
    assert!(matches!(r, Err(HostError::NotPermitted(_))), "{r:?}");
    let r = ask(keys[0].clone(), "ssh-dss", vec![1; 32]).await;
    assert!(matches!(r, Err(HostError::NotPermitted(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_signatures_follow_the_requested_hash() {
    let s = setup("kv-rsa", "", false);
    let name = &s.me.name;
    let rsa = PrivateKey::random(&mut rand::rng(), Algorithm::Rsa { hash: None }).expect("rsa key");
    let file = s.dir.join("authorized_keys");
    let mut lines = std::fs::read_to_string(&file).expect("read");
    lines.push_str(&format!(
        "{}\n",
        rsa.public_key().to_openssh().expect("ssh")
    ));
    std::fs::write(&file, lines).expect("write");
    for hash in [HashAlg::Sha256, HashAlg::Sha512] {
        let c = conn(&s.host).await;
        s.host.begin_user(c, name).await.expect("verdict");
        let sid = kex(&s.host).await;
        let algo = Algorithm::Rsa { hash: Some(hash) };
        let offered = s
            .host
            .key_allowed(c, name, rsa.public_key(), &algo, None)
            .await;
        assert_eq!(offered.expect("answer"), KeyAnswer::Allowed);
        let blob = rsa.public_key().to_bytes().expect("blob");
        let data = signed_data(&sid, name, algo.as_str(), &blob);
        // Signed with SHA-1 under an rsa-sha2 name: refused.
        let sha1 = sign(&rsa, &Algorithm::Rsa { hash: None }, &data);
        refused(verify_raw(&s.host, c, name, &rsa, None, &algo, data.clone(), sha1).await);
        s.host
            .key_allowed(c, name, rsa.public_key(), &algo, None)
            .await
            .expect("answer");
        let good = sign(&rsa, &algo, &data);
        let done = verify_raw(&s.host, c, name, &rsa, None, &algo, data, good).await;
        assert!(
            matches!(done, Ok(MethodResult::Complete { .. })),
            "{done:?}"
        );
    }
}
