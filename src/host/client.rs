//! The network side's typed calls: each builds one [`Request`], sends it through
//! [`Host::call`] and unpacks the one response that request has. A response of
//! another kind is a broken host and fails the call.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use std::sync::Arc;

use russh::keys::ssh_key::Signature;
use russh::keys::{Algorithm, Certificate, PublicKey};

use super::HostError;
use super::api::{
    ConnId, HangUpHow, KbdStep, KeyAnswer, LoginToken, MethodResult, Request, Response, SpawnAsk,
    Spawned, SpawnedIo, UserVerdict,
};
use super::service::Host;
use super::spawn::ExitOutcome;

fn unexpected(what: &str, r: &Response) -> HostError {
    HostError::NotPermitted(format!("host answered {what} with {r:?}"))
}

fn key_text(key: &PublicKey) -> Result<String, HostError> {
    key.to_openssh()
        .map_err(|e| HostError::NotPermitted(format!("key: {e}")))
}

fn cert_text(cert: &Certificate) -> Result<String, HostError> {
    cert.to_openssh()
        .map_err(|e| HostError::NotPermitted(format!("certificate: {e}")))
}

impl Host {
    pub(crate) async fn open_conn(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
        rdomain: Option<String>,
    ) -> Result<ConnId, HostError> {
        let r = self
            .call(
                Request::ConnOpened {
                    peer,
                    local,
                    rdomain,
                },
                Vec::new(),
            )
            .await?
            .response;
        match r {
            Response::Opened(id) => Ok(id),
            r => Err(unexpected("ConnOpened", &r)),
        }
    }

    pub(crate) async fn close_conn(&self, conn: ConnId) {
        let _ = self.call(Request::ConnClosed { conn }, Vec::new()).await;
        // For benchmarks and tests: the IPC a login costs (one connection at a
        // time gives its count as the difference between two of these lines).
        if let Some(n) = self.round_trips() {
            tracing::debug!(
                "host: connection {} closed; {n} monitor round trips so far",
                conn.0
            );
        }
    }

    pub(crate) async fn begin_user(
        &self,
        conn: ConnId,
        name: &str,
    ) -> Result<UserVerdict, HostError> {
        let name = name.to_string();
        match self
            .call(Request::BeginUser { conn, name }, Vec::new())
            .await?
            .response
        {
            Response::User(v) => Ok(v),
            r => Err(unexpected("BeginUser", &r)),
        }
    }

    pub(crate) async fn key_allowed(
        &self,
        conn: ConnId,
        user: &str,
        key: &PublicKey,
        algo: &Algorithm,
        cert: Option<&Certificate>,
    ) -> Result<KeyAnswer, HostError> {
        let request = Request::KeyAllowed {
            conn,
            user: user.to_string(),
            key_openssh: key_text(key)?,
            algo: algo.as_str().to_string(),
            cert_openssh: cert.map(cert_text).transpose()?,
        };
        match self.call(request, Vec::new()).await?.response {
            Response::Key(a) => Ok(a),
            r => Err(unexpected("KeyAllowed", &r)),
        }
    }

    /// Ask the host to verify a signed `publickey` request (russh has not
    /// checked it) and, if it holds, record the method.
    pub(crate) async fn key_verify(
        &self,
        conn: ConnId,
        user: &str,
        request: &russh::server::SignedPublicKey<'_>,
    ) -> Result<MethodResult, HostError> {
        let mut signature = Vec::new();
        russh::keys::ssh_encoding::Encode::encode(request.signature, &mut signature)
            .map_err(|e| HostError::NotPermitted(format!("signature: {e}")))?;
        let request = Request::KeyVerify {
            conn,
            user: user.to_string(),
            key_openssh: key_text(request.public_key)?,
            cert_openssh: request.certificate.map(cert_text).transpose()?,
            algo: request.algorithm.as_str().to_string(),
            signed_data: request.signed_data.to_vec(),
            signature,
        };
        self.method(request, "KeyVerify").await
    }

    /// The host keys to offer, each with a signer that asks the host (the
    /// network side holds no private host key), and the host certificates.
    pub async fn host_key_offer(&self) -> Result<HostKeyOffer, HostError> {
        let (keys, certificates) = match self.call(Request::HostKeys, Vec::new()).await?.response {
            Response::HostKeys { keys, certificates } => (keys, certificates),
            r => return Err(unexpected("HostKeys", &r)),
        };
        let bad = |e: &dyn std::fmt::Display| HostError::NotPermitted(format!("host key: {e}"));
        let signers = keys
            .iter()
            .map(|text| {
                let key = PublicKey::from_openssh(text).map_err(|e| bad(&e))?;
                let signer: Arc<dyn russh::server::HostKeySigner> = Arc::new(HostSigner {
                    text: text.clone(),
                    key,
                    host: self.clone(),
                });
                Ok(signer)
            })
            .collect::<Result<_, HostError>>()?;
        let certificates = certificates
            .iter()
            .map(|text| Certificate::from_openssh(text).map_err(|e| bad(&e)))
            .collect::<Result<_, HostError>>()?;
        Ok(HostKeyOffer {
            signers,
            certificates,
        })
    }

    async fn ask_sign_kex(
        &self,
        key_openssh: &str,
        algo: &Algorithm,
        data: &[u8],
    ) -> Result<Signature, HostError> {
        let request = Request::SignKex {
            key_openssh: key_openssh.to_string(),
            algo: algo.as_str().to_string(),
            data: data.to_vec(),
        };
        match self.call(request, Vec::new()).await?.response {
            Response::Signature(bytes) => {
                let mut r = &bytes[..];
                russh::keys::ssh_encoding::Decode::decode(&mut r)
                    .map_err(|e| HostError::NotPermitted(format!("host's signature: {e}")))
            }
            r => Err(unexpected("SignKex", &r)),
        }
    }

    pub(crate) async fn password(
        &self,
        conn: ConnId,
        user: &str,
        password: &str,
    ) -> Result<MethodResult, HostError> {
        let request = Request::Password {
            conn,
            user: user.to_string(),
            password: password.to_string(),
        };
        self.method(request, "Password").await
    }

    async fn method(&self, request: Request, what: &str) -> Result<MethodResult, HostError> {
        match self.call(request, Vec::new()).await?.response {
            Response::Method(m) => Ok(m),
            r => Err(unexpected(what, &r)),
        }
    }

    pub(crate) async fn kbd_start(&self, conn: ConnId, user: &str) -> Result<KbdStep, HostError> {
        let user = user.to_string();
        self.kbd(Request::KbdStart { conn, user }).await
    }

    pub(crate) async fn kbd_answer(
        &self,
        conn: ConnId,
        answers: Vec<String>,
    ) -> Result<KbdStep, HostError> {
        self.kbd(Request::KbdAnswer { conn, answers }).await
    }

    async fn kbd(&self, request: Request) -> Result<KbdStep, HostError> {
        match self.call(request, Vec::new()).await?.response {
            Response::Kbd(k) => Ok(k),
            r => Err(unexpected("keyboard-interactive", &r)),
        }
    }

    /// The started program and its descriptors (see [`SpawnedIo`]).
    pub(crate) async fn spawn_session(
        &self,
        conn: ConnId,
        token: LoginToken,
        ask: SpawnAsk,
    ) -> Result<(Spawned, Vec<OwnedFd>), HostError> {
        let reply = self
            .call(Request::Spawn { conn, token, ask }, Vec::new())
            .await?;
        match reply.response {
            Response::Spawned(s) => {
                let want = match s.io {
                    SpawnedIo::Pty => 1,
                    SpawnedIo::Pipes => 3,
                };
                if reply.fds.len() != want {
                    return Err(HostError::NotPermitted(format!(
                        "Spawn answered with {} descriptors",
                        reply.fds.len()
                    )));
                }
                Ok((s, reply.fds))
            }
            r => Err(unexpected("Spawn", &r)),
        }
    }

    pub(crate) async fn wait(
        &self,
        conn: ConnId,
        token: LoginToken,
        process: u64,
    ) -> Result<ExitOutcome, HostError> {
        let request = Request::Wait {
            conn,
            token,
            process,
        };
        match self.call(request, Vec::new()).await?.response {
            Response::Exited(o) => Ok(o),
            r => Err(unexpected("Wait", &r)),
        }
    }

    pub(crate) async fn hang_up(
        &self,
        conn: ConnId,
        token: LoginToken,
        process: u64,
        how: HangUpHow,
    ) -> Result<(), HostError> {
        let request = Request::HangUp {
            conn,
            token,
            process,
            how,
        };
        match self.call(request, Vec::new()).await?.response {
            Response::Done => Ok(()),
            r => Err(unexpected("HangUp", &r)),
        }
    }

    pub(crate) async fn accept(
        &self,
        conn: ConnId,
        token: LoginToken,
        listener: OwnedFd,
        max: u32,
    ) -> Result<Vec<(OwnedFd, SocketAddr)>, HostError> {
        let request = Request::Accept { conn, token, max };
        let reply = self.call(request, vec![listener]).await?;
        match reply.response {
            Response::Accepted(peers) if peers.len() == reply.fds.len() => {
                Ok(reply.fds.into_iter().zip(peers).collect())
            }
            r => Err(unexpected("Accept", &r)),
        }
    }

    pub(crate) async fn tcp_listen(
        &self,
        conn: ConnId,
        token: LoginToken,
        addr: SocketAddr,
    ) -> Result<OwnedFd, HostError> {
        let request = Request::TcpListen { conn, token, addr };
        let mut reply = self.call(request, Vec::new()).await?;
        match (reply.response, reply.fds.pop()) {
            (Response::Socket, Some(fd)) => Ok(fd),
            (r, _) => Err(unexpected("TcpListen", &r)),
        }
    }

    pub(crate) async fn agent_socket(
        &self,
        conn: ConnId,
        token: LoginToken,
    ) -> Result<(u64, String, OwnedFd), HostError> {
        let mut reply = self
            .call(Request::AgentSocket { conn, token }, Vec::new())
            .await?;
        match (reply.response, reply.fds.pop()) {
            (Response::Agent { socket, path }, Some(fd)) => Ok((socket, path, fd)),
            (r, _) => Err(unexpected("AgentSocket", &r)),
        }
    }

    pub(crate) async fn remove_agent_socket(
        &self,
        conn: ConnId,
        token: LoginToken,
        socket: u64,
    ) -> Result<(), HostError> {
        let request = Request::RemoveAgentSocket {
            conn,
            token,
            socket,
        };
        match self.call(request, Vec::new()).await?.response {
            Response::Done => Ok(()),
            r => Err(unexpected("RemoveAgentSocket", &r)),
        }
    }

    /// The connection's `Banner` text, read by the host.
    pub(crate) async fn banner(&self, conn: ConnId) -> Result<Option<String>, HostError> {
        match self
            .call(Request::Banner { conn }, Vec::new())
            .await?
            .response
        {
            Response::Banner(b) => Ok(b),
            r => Err(unexpected("Banner", &r)),
        }
    }

    /// What the sessions led by `pids` run (`None` where the host has no such
    /// live program, or nothing to show), asked in batches of `COMMANDS_MAX`.
    pub(crate) async fn commands(&self, pids: &[i32]) -> Vec<Option<String>> {
        let mut out = Vec::with_capacity(pids.len());
        for batch in pids.chunks(super::commands::COMMANDS_MAX) {
            let request = Request::Commands {
                pids: batch.to_vec(),
            };
            match self.call(request, Vec::new()).await.map(|r| r.response) {
                Ok(Response::Commands(c)) if c.len() == batch.len() => out.extend(c),
                // The listing goes on without the column.
                Ok(_) | Err(_) => out.extend(batch.iter().map(|_| None)),
            }
        }
        out
    }

    pub(crate) async fn signal(
        &self,
        conn: ConnId,
        token: LoginToken,
        process: u64,
        signal: i32,
    ) -> Result<bool, HostError> {
        let request = Request::Signal {
            conn,
            token,
            process,
            signal,
        };
        match self.call(request, Vec::new()).await?.response {
            Response::Signalled(b) => Ok(b),
            r => Err(unexpected("Signal", &r)),
        }
    }

    pub(crate) async fn tcp_socket(
        &self,
        conn: ConnId,
        token: LoginToken,
        ipv6: bool,
    ) -> Result<OwnedFd, HostError> {
        let mut reply = self
            .call(Request::TcpSocket { conn, token, ipv6 }, Vec::new())
            .await?;
        match (reply.response, reply.fds.pop()) {
            (Response::Socket, Some(fd)) => Ok(fd),
            (r, _) => Err(unexpected("TcpSocket", &r)),
        }
    }
}

/// What a completed login holds of the host: the handle, its connection and its
/// token. Every post-authentication request goes through it.
#[derive(Clone)]
pub(crate) struct Grant {
    host: Host,
    conn: ConnId,
    token: LoginToken,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Grant(conn {})", self.conn.0)
    }
}

impl Grant {
    pub(crate) fn new(host: Host, conn: ConnId, token: LoginToken) -> Grant {
        Grant { host, conn, token }
    }

    pub(crate) async fn spawn(&self, ask: SpawnAsk) -> Result<(Spawned, Vec<OwnedFd>), HostError> {
        self.host.spawn_session(self.conn, self.token, ask).await
    }

    /// Long poll: how program `process` ended, once it has.
    pub(crate) async fn wait(&self, process: u64) -> Result<ExitOutcome, HostError> {
        self.host.wait(self.conn, self.token, process).await
    }

    /// Program `process`'s session ended `how`; returns once the host has done
    /// what that means for its processes.
    pub(crate) async fn hang_up(&self, process: u64, how: HangUpHow) -> Result<(), HostError> {
        self.host.hang_up(self.conn, self.token, process, how).await
    }

    /// Up to `max` connections waiting on `listener` (a `-R` listener of this
    /// login's), accepted as the user; empty if none was waiting.
    pub(crate) async fn accept(
        &self,
        listener: OwnedFd,
        max: u32,
    ) -> Result<Vec<(OwnedFd, SocketAddr)>, HostError> {
        self.host.accept(self.conn, self.token, listener, max).await
    }

    /// A `-R` listener of the user's on `addr`: bound and listening (as the
    /// user), non-blocking, close-on-exec.
    pub(crate) async fn tcp_listen(&self, addr: SocketAddr) -> Result<OwnedFd, HostError> {
        self.host.tcp_listen(self.conn, self.token, addr).await
    }

    /// The forwarded agent's socket: its number, path and listener.
    pub(crate) async fn agent_socket(&self) -> Result<(u64, String, OwnedFd), HostError> {
        self.host.agent_socket(self.conn, self.token).await
    }

    pub(crate) async fn remove_agent_socket(&self, socket: u64) -> Result<(), HostError> {
        self.host
            .remove_agent_socket(self.conn, self.token, socket)
            .await
    }

    pub(crate) async fn signal(&self, process: u64, signal: i32) -> Result<bool, HostError> {
        self.host
            .signal(self.conn, self.token, process, signal)
            .await
    }

    /// A TCP socket of the user's (IPv6 when `ipv6`): non-blocking, close-on-exec,
    /// neither bound nor connected.
    pub(crate) async fn tcp_socket(&self, ipv6: bool) -> Result<OwnedFd, HostError> {
        self.host.tcp_socket(self.conn, self.token, ipv6).await
    }
}

/// What the network side offers in key exchanges: signers for the host's keys,
/// and its host certificates.
pub struct HostKeyOffer {
    pub(crate) signers: Vec<Arc<dyn russh::server::HostKeySigner>>,
    pub(crate) certificates: Vec<Certificate>,
}

/// A host key as the network side has it: the public half, and the host to
/// sign with the private one.
struct HostSigner {
    text: String,
    key: PublicKey,
    host: Host,
}

impl russh::server::HostKeySigner for HostSigner {
    fn public_key(&self) -> &PublicKey {
        &self.key
    }

    fn sign<'a>(
        &'a self,
        algorithm: &'a Algorithm,
        data: &'a [u8],
    ) -> russh::server::SignFuture<'a> {
        Box::pin(async move {
            self.host
                .ask_sign_kex(&self.text, algorithm, data)
                .await
                .map_err(|e| {
                    // The key exchange fails and the connection ends; a refusal
                    // is logged by the host.
                    russh::Error::IO(std::io::Error::other(format!("host key signature: {e}")))
                })
        })
    }
}
