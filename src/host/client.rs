//! The network side's typed calls: each builds one [`Request`], sends it through
//! [`Host::call`] and unpacks the one response that request has. A response of
//! another kind is a broken host and fails the call.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use russh::keys::{Algorithm, Certificate, PublicKey};

use super::HostError;
use super::api::{
    ConnId, KbdStep, KeyAnswer, LoginToken, MethodResult, Request, Response, SpawnAsk, Spawned,
    UserVerdict,
};
use super::service::Host;
use super::spawn::SessionProcess;

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
            .call(Request::ConnOpened {
                peer,
                local,
                rdomain,
            })
            .await?
            .response;
        match r {
            Response::Opened(id) => Ok(id),
            r => Err(unexpected("ConnOpened", &r)),
        }
    }

    pub(crate) async fn close_conn(&self, conn: ConnId) {
        let _ = self.call(Request::ConnClosed { conn }).await;
    }

    pub(crate) async fn begin_user(
        &self,
        conn: ConnId,
        name: &str,
    ) -> Result<UserVerdict, HostError> {
        let name = name.to_string();
        match self.call(Request::BeginUser { conn, name }).await?.response {
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
        match self.call(request).await?.response {
            Response::Key(a) => Ok(a),
            r => Err(unexpected("KeyAllowed", &r)),
        }
    }

    pub(crate) async fn pubkey_verified(
        &self,
        conn: ConnId,
        user: &str,
        key: &PublicKey,
        algo: Option<&Algorithm>,
        cert: Option<&Certificate>,
    ) -> Result<MethodResult, HostError> {
        let request = Request::PubkeyVerified {
            conn,
            user: user.to_string(),
            key_openssh: key_text(key)?,
            algo: algo.map(|a| a.as_str().to_string()),
            cert_openssh: cert.map(cert_text).transpose()?,
        };
        self.method(request, "PubkeyVerified").await
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
        match self.call(request).await?.response {
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
        match self.call(request).await?.response {
            Response::Kbd(k) => Ok(k),
            r => Err(unexpected("keyboard-interactive", &r)),
        }
    }

    pub(crate) async fn spawn_session(
        &self,
        conn: ConnId,
        token: LoginToken,
        ask: SpawnAsk,
    ) -> Result<(Spawned, SessionProcess), HostError> {
        let reply = self.call(Request::Spawn { conn, token, ask }).await?;
        match (reply.response, reply.process) {
            (Response::Spawned(s), Some(p)) => Ok((s, p)),
            (r, _) => Err(unexpected("Spawn", &r)),
        }
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
        match self.call(request).await?.response {
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
        let mut reply = self.call(Request::TcpSocket { conn, token, ipv6 }).await?;
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

    pub(crate) async fn spawn(
        &self,
        ask: SpawnAsk,
    ) -> Result<(Spawned, SessionProcess), HostError> {
        self.host.spawn_session(self.conn, self.token, ask).await
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
