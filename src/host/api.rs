//! The privileged boundary's one request table: every privileged operation the
//! network side may ask for, as plain serializable data, and the one `match` that
//! serves it.
//!
//! Step 1 of privilege separation serves these in-process ([`Host::call`]); step 2
//! sends the same values over a socketpair to a root monitor process. So nothing
//! here trusts what the caller says beyond what the host can check itself: the
//! host issued every [`ConnId`] and [`LoginToken`], keeps each connection's
//! authentication state, resolves `Match` with its own copy of the config, and
//! starts a session only for a token it issued after it recorded, itself, methods
//! that satisfy its own AuthenticationMethods.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

use super::pty::PtyParams;
use super::service::Service;
use super::spawn::ExitOutcome;
use super::{HostError, KeyOptions, UserInfo};

/// A connection, as the host numbered it at `ConnOpened`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct ConnId(pub(super) u64);

/// Proof of a completed login: 128 random bits the host issued for one
/// connection and one account, only once it verified the credentials itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct LoginToken(pub(super) [u8; 16]);

impl std::fmt::Debug for LoginToken {
    /// A token is a credential: it never goes into a log or a panic message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginToken(..)")
    }
}

/// Every request the network side may make.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Request {
    /// A connection was accepted (or came on inetd's pipes).
    ConnOpened {
        peer: SocketAddr,
        local: SocketAddr,
        rdomain: Option<String>,
    },
    /// The connection is over: its PAM session closes and its token is forgotten.
    ConnClosed { conn: ConnId },
    /// A user name arrived in an authentication request.
    BeginUser { conn: ConnId, name: String },
    /// May this key log `user` in (the client's query, before it signs)?
    /// `cert_openssh`: the OpenSSH certificate the client offered, of that key
    /// (checked by the host against its own TrustedUserCAKeys and RevokedKeys).
    KeyAllowed {
        conn: ConnId,
        user: String,
        key_openssh: String,
        algo: String,
        cert_openssh: Option<String>,
    },
    /// The client's signed `publickey` request, for the host to verify itself
    /// (`signed_data` as RFC 4252 section 7 defines it, `signature` SSH-encoded)
    /// and, if the key was allowed here and the session identifier is one the
    /// host signed for no other connection, to record. `algo` is the signature's
    /// algorithm (for a certificate, the plain one).
    KeyVerify {
        conn: ConnId,
        user: String,
        key_openssh: String,
        cert_openssh: Option<String>,
        algo: String,
        signed_data: Vec<u8>,
        signature: Vec<u8>,
    },
    /// Sign a key exchange hash (`data`) with the host key `key_openssh` names,
    /// for the negotiated host key algorithm `algo`.
    SignKex {
        key_openssh: String,
        algo: String,
        data: Vec<u8>,
    },
    /// The public host keys and host certificates to offer.
    HostKeys,
    Password {
        conn: ConnId,
        user: String,
        password: String,
    },
    /// Keyboard-interactive begins for `user`.
    KbdStart { conn: ConnId, user: String },
    /// The client's answers to the last prompts.
    KbdAnswer { conn: ConnId, answers: Vec<String> },
    /// Start the program of a session channel for the login `token` proves.
    Spawn {
        conn: ConnId,
        token: LoginToken,
        ask: SpawnAsk,
    },
    /// Send `signal` (its number) to a session program of this connection's.
    Signal {
        conn: ConnId,
        token: LoginToken,
        process: u64,
        signal: i32,
    },
    /// A TCP socket created with the logged-in user's identity, for `-L`, `-D`
    /// and `-W` connections (`-R` listeners come bound: `TcpListen`).
    TcpSocket {
        conn: ConnId,
        token: LoginToken,
        ipv6: bool,
    },
    // Session programs, the user's sockets and the banner (see `lifecycle`).
    /// Long poll: answered with `Exited` once program `process` has ended (its
    /// utmp/wtmp logout already written).
    Wait {
        conn: ConnId,
        token: LoginToken,
        process: u64,
    },
    /// The session of program `process` ended (`how`); answered when what that
    /// means for its processes under the host's SessionCleanup is done.
    HangUp {
        conn: ConnId,
        token: LoginToken,
        process: u64,
        how: HangUpHow,
    },
    /// Accept up to `max` connections, as the user, on the `-R` listener
    /// attached to the request (one the user's `TcpSocket` made).
    Accept {
        conn: ConnId,
        token: LoginToken,
        max: u32,
    },
    /// A `-R` listener: a TCP socket made, bound to `addr` and listening, all
    /// as the logged-in user (so a privileged port only for root); answered
    /// with `Socket`, the listener attached (its port, when `addr`'s is 0, by
    /// getsockname on the copy).
    TcpListen {
        conn: ConnId,
        token: LoginToken,
        addr: SocketAddr,
    },
    /// The forwarded agent's socket: a private directory of the user's and a
    /// listener in it, made as the user.
    AgentSocket { conn: ConnId, token: LoginToken },
    /// Remove agent socket `socket` (the host removes it at the connection's
    /// end otherwise).
    RemoveAgentSocket {
        conn: ConnId,
        token: LoginToken,
        socket: u64,
    },
    /// The `Banner` file for this connection, read by the host.
    Banner { conn: ConnId },
    /// What the sessions led by `pids` run, for `rsshd sessions` (at most
    /// `COMMANDS_MAX`; only the host's own live session programs are answered).
    Commands { pids: Vec<i32> },
}

/// How a session ended, for [`Request::HangUp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum HangUpHow {
    /// A normal end: the program exited, or the client closed the channel.
    /// Under `SessionCleanup hangup` nothing is signalled, and the end of the
    /// connection leaves the session alone; under `kill` it is hung up.
    Ended,
    /// The connection was lost or a lifetime limit ended the session.
    Lost,
}

/// How a started program's I/O travels beside [`Spawned`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SpawnedIo {
    /// One descriptor: the terminal's master.
    Pty,
    /// Three: stdin (write end), stdout and stderr (read ends), in that order.
    Pipes,
}

/// What the session channel asked for; the host decides the rest (forced
/// commands, chroot, PAM, `~/.ssh/rc`) from its own settings and the token's login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SpawnAsk {
    /// `None`: the login shell. A command for `exec`, a name for `subsystem`.
    pub(crate) requested: Option<String>,
    pub(crate) is_subsystem: bool,
    pub(crate) pty: Option<PtyParams>,
    /// The client's `env` requests, in order (the host filters them by AcceptEnv
    /// again).
    pub(crate) client_env: Vec<(String, String)>,
    /// The forwarded agent's socket (`SSH_AUTH_SOCK`).
    pub(crate) auth_sock: Option<String>,
}

/// Every answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Response {
    Opened(ConnId),
    Done,
    User(UserVerdict),
    Key(KeyAnswer),
    Method(MethodResult),
    Kbd(KbdStep),
    Spawned(Spawned),
    /// Whether the program was still there to get the signal.
    Signalled(bool),
    /// A descriptor travels as the reply's attachment.
    Socket,
    // Session programs, the user's sockets and the banner.
    /// How the program ended.
    Exited(ExitOutcome),
    /// The accepted connections' peers, in the order of the attached sockets.
    Accepted(Vec<SocketAddr>),
    /// The agent socket's number and path; its listener is attached.
    Agent {
        socket: u64,
        path: String,
    },
    /// The banner's text, if one is configured and readable.
    Banner(Option<String>),
    /// A signature, SSH-encoded (algorithm name, then the blob).
    Signature(Vec<u8>),
    /// Public host keys and host certificates, in OpenSSH's text form.
    HostKeys {
        keys: Vec<String>,
        certificates: Vec<String>,
    },
    /// One command line (or none) per pid asked, in order.
    Commands(Vec<Option<String>>),
}

/// What the host knows about a user name: enough for the network side to resolve
/// the same `Match` for protocol work (its copy drives the protocol; the host's
/// decides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserVerdict {
    /// The account exists.
    pub(crate) exists: bool,
    /// AllowUsers, DenyUsers, ... refuse it (logged by the host).
    pub(crate) refused: bool,
    /// Its groups, for `Match Group`.
    pub(crate) groups: Option<Vec<String>>,
    /// The client's name as `Match Host` sees it (`UseDNS`).
    pub(crate) remote_host: String,
}

/// The answer to a key query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum KeyAnswer {
    /// Publickey may not be tried now (AuthenticationMethods).
    NotNow,
    Refused,
    Allowed,
}

/// How an authentication method ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MethodResult {
    /// `count`: it is a failed attempt against MaxAuthTries (the host has logged
    /// it). `methods`: those the user may use now, for the failure's reply.
    Failed { count: bool, methods: Vec<String> },
    /// This method is done; AuthenticationMethods wants one of `next`.
    Partial { next: Vec<String> },
    Complete {
        token: LoginToken,
        login: Box<LoginFacts>,
    },
}

/// The account a completed login is for, with what its sessions need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LoginFacts {
    pub(crate) user: UserInfo,
    pub(crate) key_options: KeyOptions,
    /// The client's name the login's `Match` used.
    pub(crate) remote_host: String,
    /// The keys (certificates) its publickey methods used, for `rsshd sessions`.
    pub(crate) keys: Vec<super::LoginKey>,
}

/// A keyboard-interactive round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum KbdStep {
    /// Show these; `count`: the round before was a failed attempt (the client is
    /// being told why before the method fails).
    Prompts {
        instructions: String,
        prompts: Vec<(String, bool)>,
        count: bool,
    },
    Done(MethodResult),
}

/// A started session program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Spawned {
    /// The host's number for the program, for later requests about it.
    pub(crate) process: u64,
    pub(crate) pid: i32,
    /// The terminal's device, e.g. `/dev/pts/3`.
    pub(crate) tty: Option<String>,
    /// A forced command (ForceCommand or the key's `command=`) replaced the request.
    pub(crate) forced: bool,
    pub(crate) is_shell: bool,
    /// What an interactive login shows first (PAM's messages, last login, motd).
    pub(crate) motd: Option<Vec<u8>>,
    /// Which descriptors are attached.
    pub(crate) io: SpawnedIo,
}

/// A response and what travels beside it.
pub(crate) struct Reply {
    pub(crate) response: Response,
    /// Descriptors, as SCM_RIGHTS will carry them in step 2.
    pub(crate) fds: Vec<OwnedFd>,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply {
            response,
            fds: Vec::new(),
        }
    }
}

/// The one dispatch table. `fds`: the descriptors attached to the request.
pub(super) async fn dispatch(
    host: &Service,
    request: Request,
    fds: Vec<OwnedFd>,
) -> Result<Reply, HostError> {
    Ok(match request {
        Request::ConnOpened {
            peer,
            local,
            rdomain,
        } => Response::Opened(host.conn_opened(peer, local, rdomain)).into(),
        Request::ConnClosed { conn } => {
            host.conn_closed(conn).await;
            Response::Done.into()
        }
        Request::BeginUser { conn, name } => {
            Response::User(host.conn(conn)?.lock().await.begin_user(&name).await).into()
        }
        Request::KeyAllowed {
            conn,
            user,
            key_openssh,
            algo,
            cert_openssh,
        } => {
            let key = super::authn::parse_key(&key_openssh, Some(&algo), cert_openssh.as_deref())?;
            let state = host.conn(conn)?;
            let answer = state.lock().await.key_allowed(&user, &key).await;
            Response::Key(answer).into()
        }
        Request::KeyVerify {
            conn,
            user,
            key_openssh,
            cert_openssh,
            algo,
            signed_data,
            signature,
        } => {
            let proof = super::keyverify::KeyProof {
                user,
                key_openssh,
                cert_openssh,
                algo,
                signed_data,
                signature,
            };
            let state = host.conn(conn)?;
            let mut state = state.lock().await;
            Response::Method(state.key_verify(host, proof).await?).into()
        }
        Request::SignKex {
            key_openssh,
            algo,
            data,
        } => Response::Signature(host.sign_kex(&key_openssh, &algo, &data).await?).into(),
        Request::HostKeys => {
            let (keys, certificates) = host.host_key_texts()?;
            Response::HostKeys { keys, certificates }.into()
        }
        Request::Password {
            conn,
            user,
            password,
        } => {
            let state = host.conn(conn)?;
            let mut state = state.lock().await;
            Response::Method(state.password(host, &user, &password).await).into()
        }
        Request::KbdStart { conn, user } => {
            let state = host.conn(conn)?;
            let mut state = state.lock().await;
            Response::Kbd(state.kbd_start(host, &user).await).into()
        }
        Request::KbdAnswer { conn, answers } => {
            let state = host.conn(conn)?;
            let mut state = state.lock().await;
            Response::Kbd(state.kbd_answer(host, answers).await).into()
        }
        Request::Spawn { conn, token, ask } => {
            let (state, login) = host.login(conn, &token, "Spawn")?;
            let started = state.lock().await.spawn(ask).await?;
            let (mut spawned, process, fds, record) = started;
            let policy = login.settings.session_cleanup;
            spawned.process = host.register_process(conn, process, policy, record);
            Reply {
                response: Response::Spawned(spawned),
                fds,
            }
        }
        Request::Signal {
            conn,
            token,
            process,
            signal,
        } => {
            host.login(conn, &token, "Signal")?;
            let program = host.program(conn, process, "Signal")?;
            let signal = nix::sys::signal::Signal::try_from(signal)
                .map_err(|e| HostError::NotPermitted(format!("signal {signal}: {e}")))?;
            Response::Signalled(program.killer().signal(signal)).into()
        }
        Request::TcpSocket { conn, token, ipv6 } => {
            let (_, login) = host.login(conn, &token, "TcpSocket")?;
            let creds = super::as_user::Creds::from(&login.user);
            let fd = super::user_socket::user_tcp_socket(&creds, ipv6).await?;
            Reply {
                response: Response::Socket,
                fds: vec![fd],
            }
        }
        Request::Commands { pids } => Response::Commands(host.commands(pids).await?).into(),
        r @ (Request::Wait { .. }
        | Request::HangUp { .. }
        | Request::Accept { .. }
        | Request::TcpListen { .. }
        | Request::AgentSocket { .. }
        | Request::RemoveAgentSocket { .. }
        | Request::Banner { .. }) => return super::lifecycle::serve(host, r, fds).await,
    })
}
