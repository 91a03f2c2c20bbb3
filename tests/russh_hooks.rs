//! The hooks the vendored russh gives privilege separation (issue 15),
//! driven by OpenSSH's `ssh` against a bare russh server (not rsshd's daemon,
//! which does not use them yet):
//! - the host key is a public key plus a signer: its private half sits with a
//!   "monitor" task on the other end of a Unix socket, and `ssh` with only a
//!   known_hosts entry for it still verifies the server;
//! - `auth_publickey` gets the exact data the client signed and its
//!   signature, which verify with ssh-key's verifier, and the data starts
//!   with the session identifier (the first exchange hash the monitor
//!   signed).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use russh::keys::signature::Verifier;
use russh::keys::ssh_encoding::{Decode, Encode};
use russh::keys::ssh_key::{Algorithm, PrivateKey, PublicKey, Signature};
use russh::server::{
    self, Auth, ChannelOpenHandle, HostKeySigner, Msg, PublicKeyOffer, Server as _, Session,
    SignFuture, VerifiedPublicKey,
};
use russh::{Channel, ChannelId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use support::*;

/// The monitor's side: signs every length-prefixed request read from
/// `stream` with `key` and writes back the SSH-encoded signature. Everything
/// it signed is kept in `signed`, in order.
async fn monitor(mut stream: UnixStream, key: PrivateKey, signed: Arc<Mutex<Vec<Vec<u8>>>>) {
    loop {
        let Ok(n) = stream.read_u32().await else {
            return;
        };
        let mut data = vec![0; n as usize];
        if stream.read_exact(&mut data).await.is_err() {
            return;
        }
        let signature: Signature =
            russh::keys::signature::Signer::try_sign(&key, &data).expect("sign");
        signed.lock().unwrap().push(data);
        let mut out = Vec::new();
        signature.encode(&mut out).expect("encode");
        if stream.write_u32(out.len() as u32).await.is_err()
            || stream.write_all(&out).await.is_err()
        {
            return;
        }
    }
}

/// The network side's host key: the public key, and the socket to the monitor.
struct RemoteHostKey {
    public: PublicKey,
    monitor: tokio::sync::Mutex<UnixStream>,
}

impl HostKeySigner for RemoteHostKey {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign<'a>(&'a self, algorithm: &'a Algorithm, data: &'a [u8]) -> SignFuture<'a> {
        Box::pin(async move {
            assert_eq!(*algorithm, Algorithm::Ed25519);
            let mut s = self.monitor.lock().await;
            s.write_u32(data.len() as u32).await?;
            s.write_all(data).await?;
            let mut reply = vec![0; s.read_u32().await? as usize];
            s.read_exact(&mut reply).await?;
            Ok(Signature::decode(&mut &reply[..])?)
        })
    }
}

/// What a publickey login handed to `auth_publickey`.
#[derive(Default)]
struct Seen {
    signed_data: Vec<u8>,
    signature: Option<Signature>,
}

#[derive(Clone)]
struct Bare {
    client_key: PublicKey,
    seen: Arc<Mutex<Seen>>,
}

impl server::Server for Bare {
    type Handler = Self;
    fn new_client(&mut self, _: Option<SocketAddr>) -> Self {
        self.clone()
    }
}

impl server::Handler for Bare {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(
            if offer.public_key.key_data() == self.client_key.key_data() {
                Auth::Accept
            } else {
                Auth::reject()
            },
        )
    }

    async fn auth_publickey(
        &mut self,
        _: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let mut seen = self.seen.lock().unwrap();
        seen.signed_data = key.signed_data.to_vec();
        seen.signature = Some(key.signature.clone());
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        _: Channel<Msg>,
        reply: ChannelOpenHandle,
        _: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        session.data(channel, &b"verified\n"[..])?;
        session.exit_status_request(channel, 0)?;
        session.eof(channel)?;
        session.close(channel)
    }
}

fn ssh(port: u16, known_hosts: &Path, client_key: &Path) -> Output {
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o"])
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(client_key)
        .args(["-p", &port.to_string(), "someone@127.0.0.1", "x"]);
    run_with_input(&mut c, b"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_key_signer_and_signed_data_with_openssh() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let dir = temp_dir("russh-hooks");
    let host = keygen(&dir, "host_key");
    let client = keygen(&dir, "client_key");
    let host_key = russh::keys::load_secret_key(&host, None).expect("host key");
    let client_key = russh::keys::load_secret_key(&client, None).expect("client key");

    // The private host key goes to the monitor; the server keeps its public half.
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let signed = Arc::new(Mutex::new(Vec::new()));
    let public = host_key.public_key().clone();
    tokio::spawn(monitor(theirs, host_key, Arc::clone(&signed)));
    let config = Arc::new(server::Config {
        keys: Vec::new(),
        host_key_signers: vec![Arc::new(RemoteHostKey {
            public: public.clone(),
            monitor: tokio::sync::Mutex::new(ours),
        })],
        ..Default::default()
    });
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut bare = Bare {
        client_key: client_key.public_key().clone(),
        seen: Arc::clone(&seen),
    };
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = socket.local_addr().expect("addr").port();
    tokio::spawn(async move { bare.run_on_socket(config, &socket).await });

    // Known hosts names only the public key; the server never held the private one.
    let line = |key: &PublicKey| format!("[127.0.0.1]:{port} {}\n", key.to_openssh().unwrap());
    let known = dir.join("known_hosts");
    std::fs::write(&known, line(&public)).expect("known_hosts");
    let out = tokio::task::spawn_blocking({
        let (known, client) = (known.clone(), client.clone());
        move || ssh(port, &known, &client)
    })
    .await
    .expect("ssh");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "verified\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed = signed.lock().unwrap().clone();
    assert_eq!(signed.len(), 1, "one key exchange, signed by the monitor");

    // The signed data of the publickey request: the session identifier (the
    // first exchange hash, which the monitor signed), then the request.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let mut prefix = Vec::new();
    signed[0].encode(&mut prefix).expect("encode");
    assert!(
        seen.signed_data.starts_with(&prefix),
        "signed data does not start with the session identifier"
    );
    let mut request = &seen.signed_data[prefix.len()..];
    assert_eq!(u8::decode(&mut request).ok(), Some(50), "USERAUTH_REQUEST");
    for field in ["someone", "ssh-connection", "publickey"] {
        assert_eq!(String::decode(&mut request).ok().as_deref(), Some(field));
    }
    let signature = seen.signature.expect("auth_publickey was called");
    assert!(Verifier::verify(client_key.public_key(), &seen.signed_data, &signature).is_ok());
    // And it is that key's signature of exactly that data.
    let mut altered = seen.signed_data.clone();
    if let Some(b) = altered.last_mut() {
        *b ^= 1;
    }
    assert!(Verifier::verify(client_key.public_key(), &altered, &signature).is_err());

    // The check is real: known_hosts naming another key makes ssh refuse.
    let other = keygen(&dir, "other_key");
    let other = russh::keys::load_secret_key(&other, None).expect("other key");
    std::fs::write(&known, line(other.public_key())).expect("known_hosts");
    let out = tokio::task::spawn_blocking(move || ssh(port, &known, &client))
        .await
        .expect("ssh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{err}"
    );
}
