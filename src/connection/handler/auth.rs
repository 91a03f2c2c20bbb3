//! Authentication on the network side: protocol bookkeeping only. Every decision
//! (who the user is, which key or password lets them in, how far
//! AuthenticationMethods has got, the login token) is the host's
//! ([`crate::host::api`]); here are MaxAuthTries, the delay a failure takes, and
//! the replies russh sends.

use super::*;
use crate::host::api::{KbdStep, KeyAnswer, MethodResult};

/// What the network side knows of a user name: the host's verdict, and the
/// settings the same `Match` gives here (they drive the protocol; the host's own
/// copy decides).
pub(super) struct Candidate {
    pub(super) exists: bool,
    pub(super) settings: Arc<Settings>,
}

/// The least time a failed password or keyboard-interactive attempt takes.
pub(super) const FAIL_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

impl ConnHandler {
    /// The handler of a new connection (its state is mostly authentication's).
    pub(crate) fn new(ctx: Arc<ConnContext>, shared: Arc<ConnShared>, conn: ConnId) -> Self {
        ConnHandler {
            forwards: crate::connection::forward::Forwards::new(Arc::clone(&shared), ctx.peer),
            ctx,
            shared,
            conn,
            candidates: HashMap::new(),
            login: None,
            channels: HashMap::new(),
            kbd_started: None,
            failures: 0,
            exhausted: false,
            auth_seen: false,
            key_verified: None,
        }
    }
}

/// russh's names for the methods a reply lists.
fn method_set(names: &[String]) -> MethodSet {
    let kinds: Vec<MethodKind> = names
        .iter()
        .filter_map(|m| match m.as_str() {
            "publickey" => Some(MethodKind::PublicKey),
            "password" => Some(MethodKind::Password),
            "keyboard-interactive" => Some(MethodKind::KeyboardInteractive),
            _ => None,
        })
        .collect();
    MethodSet::from(&kinds[..])
}

impl ConnHandler {
    /// What every authentication request goes through first, as sshd once the user
    /// name arrives: the host's verdict on the name (it looks the client's name up
    /// under `UseDNS`, resolves the user's `Match`, logs an invalid or refused
    /// user), then `RefuseConnection`, which ends the connection (an `Err`) with
    /// sshd's log line.
    pub(super) async fn admit(&mut self, user: &str) -> Result<(), ConnError> {
        self.shared.set_user(user);
        if !self.candidates.contains_key(user) {
            let verdict = match self.ctx.host.begin_user(self.conn, user).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!("host: {e}");
                    return Err(ConnError::Protocol(russh::Error::Disconnect));
                }
            };
            if self.ctx.config.global().use_dns {
                let _ = self.ctx.dns_name.set(verdict.remote_host.clone());
            }
            let spec = self.ctx.spec(Some(user), verdict.groups.clone());
            let settings = self.ctx.config.resolve_shared(&spec);
            self.candidates.insert(
                user.to_string(),
                Candidate {
                    exists: verdict.exists,
                    settings,
                },
            );
        }
        let c = &self.candidates[user];
        if !c.settings.refuse_connection {
            return Ok(());
        }
        let invalid = if c.exists { "" } else { "invalid user " };
        tracing::info!(
            "administratively prohibited connection for {invalid}{user} from {} port {}",
            crate::log::display_ip(&self.ctx.peer),
            self.ctx.peer.port()
        );
        self.shared.refused();
        Err(ConnError::Protocol(russh::Error::Disconnect))
    }

    /// Count a failed attempt as sshd's userauth_finish does; at MaxAuthTries,
    /// log sshd's two lines (fail2ban and logwatch match them); the request's
    /// answer is then sshd's DISCONNECT (`rejected`).
    pub(super) fn count_failure(&mut self, user: &str) {
        self.failures += 1;
        let Some(c) = self.candidates.get(user) else {
            return;
        };
        let (max, invalid) = (c.settings.max_auth_tries, !c.exists);
        if max == 0 || self.failures < max || self.exhausted {
            return;
        }
        self.exhausted = true;
        let p = peer(&self.ctx.peer);
        let (who, whom) = if invalid {
            ("invalid user ", "invalid user")
        } else {
            ("", "authenticating user")
        };
        tracing::error!(
            "maximum authentication attempts exceeded for {who}{user} from {p} ssh2 [preauth]"
        );
        tracing::info!(
            "Disconnecting {whom} {user} {p}: Too many authentication failures [preauth]"
        );
        self.shared
            .auth_exhausted
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The answer to a failed request: plain USERAUTH_FAILURE, or once
    /// MaxAuthTries is reached sshd's auth_maxtries_exceeded, which ends the
    /// connection (reason 2, its words) instead of sending that failure, so a
    /// client does not prompt or offer a key once more.
    pub(super) fn rejected(&self) -> Auth {
        if self.exhausted {
            Auth::Disconnect {
                reason: russh::Disconnect::ProtocolError,
                description: "Too many authentication failures".into(),
            }
        } else {
            Auth::reject()
        }
    }

    /// A host error during authentication: the attempt fails (logged).
    fn host_failed(e: crate::host::HostError) -> MethodResult {
        tracing::error!("host: {e}");
        MethodResult::Failed {
            count: false,
            methods: Vec::new(),
        }
    }

    /// The reply to a method's result; a completed login becomes the connection's.
    /// With `list`, a failure's reply lists the methods the host named (russh's
    /// default drops `password` after one wrong password, so clients would not
    /// ask again: OpenSSH's NumberOfPasswordPrompts, PuTTY's retries).
    fn conclude(&mut self, user: &str, result: MethodResult, list: bool) -> Auth {
        match result {
            MethodResult::Failed { count, methods } => {
                if count {
                    self.count_failure(user);
                }
                if list && !self.exhausted {
                    Auth::Reject {
                        proceed_with_methods: Some(method_set(&methods)),
                        partial_success: false,
                    }
                } else {
                    self.rejected()
                }
            }
            MethodResult::Partial { next } => Auth::Reject {
                proceed_with_methods: Some(method_set(&next)),
                partial_success: true,
            },
            MethodResult::Complete { token, login } => {
                let settings = match self.candidates.get(user) {
                    Some(c) => Arc::clone(&c.settings),
                    None => return Auth::reject(),
                };
                let keys = login.keys;
                self.shared.facts(|f| f.keys = keys);
                let login = Arc::new(Login {
                    user: login.user,
                    settings,
                    key_options: login.key_options,
                    grant: crate::host::Grant::new(self.ctx.host.clone(), self.conn, token),
                });
                // Not in auth_succeeded: russh 0.65 skips that callback unless
                // compression is deferred.
                self.shared.authenticated(Arc::clone(&login));
                self.login = Some(login);
                // Authentication is over for good.
                self.candidates = HashMap::new();
                Auth::Accept
            }
        }
    }

    pub(super) async fn on_auth_none(&mut self, user: &str) -> Result<Auth, ConnError> {
        // Resolve (and log an invalid user) on the first request, as sshd does.
        self.admit(user).await?;
        // Only a first `none` is free (sshd's userauth_finish).
        if std::mem::replace(&mut self.auth_seen, true) && !self.exhausted {
            self.count_failure(user);
        }
        Ok(self.rejected())
    }

    pub(super) async fn on_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, ConnError> {
        self.admit(user).await?;
        self.shared.attempted();
        self.auth_seen = true;
        if self.exhausted {
            return Ok(self.rejected());
        }
        let answer = self
            .ctx
            .host
            .key_allowed(
                self.conn,
                user,
                offer.public_key,
                offer.algorithm,
                offer.certificate,
            )
            .await
            .unwrap_or_else(|e| {
                tracing::error!("host: {e}");
                KeyAnswer::NotNow
            });
        match answer {
            KeyAnswer::Allowed => Ok(Auth::Accept),
            KeyAnswer::NotNow => {
                self.count_failure(user);
                Ok(self.rejected())
            }
            KeyAnswer::Refused => {
                // sshd's VERBOSE line, so `-d` names the key that was refused.
                tracing::debug!(
                    "Failed publickey for {user} from {} ssh2: {} {}",
                    peer(&self.ctx.peer),
                    key_type_name(offer.public_key),
                    fingerprint(offer.public_key, self.ctx.pre_auth.fingerprint_hash)
                );
                // Each key refused is a failed attempt for sshd.
                self.count_failure(user);
                Ok(self.rejected())
            }
        }
    }

    /// A signed `publickey` request: the host verifies it (russh has not) and
    /// records the method; its answer waits for `auth_publickey` or
    /// `auth_openssh_certificate`, which russh calls next. A refusal is a bad
    /// signature for russh (a plain failure, as it was when russh checked).
    pub(super) async fn on_verify_signature(
        &mut self,
        user: &str,
        request: SignedPublicKey<'_>,
    ) -> Result<bool, ConnError> {
        self.key_verified = None;
        self.admit(user).await?;
        self.shared.attempted();
        if self.exhausted {
            // auth_publickey answers with the disconnect.
            return Ok(true);
        }
        match self.ctx.host.key_verify(self.conn, user, &request).await {
            Ok(result) => {
                self.key_verified = Some(result);
                Ok(true)
            }
            Err(e) => {
                tracing::debug!("host: {e}");
                Ok(false)
            }
        }
    }

    /// After the host's `KeyVerify`: its answer becomes the reply.
    fn verified_reply(&mut self, user: &str) -> Auth {
        match self.key_verified.take() {
            Some(result) if !self.exhausted => self.conclude(user, result, false),
            _ => self.rejected(),
        }
    }

    pub(super) async fn on_publickey(
        &mut self,
        user: &str,
        _key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, ConnError> {
        Ok(self.verified_reply(user))
    }

    /// A certificate's signed request, after the host's `KeyVerify`.
    pub(super) async fn on_openssh_certificate(
        &mut self,
        user: &str,
        _cert: &Certificate,
    ) -> Result<Auth, ConnError> {
        Ok(self.verified_reply(user))
    }

    pub(super) async fn on_password(
        &mut self,
        user: &str,
        password: &str,
    ) -> Result<Auth, ConnError> {
        let started = std::time::Instant::now();
        self.admit(user).await?;
        self.shared.attempted();
        self.auth_seen = true;
        if self.exhausted {
            return Ok(self.rejected());
        }
        let result = self
            .ctx
            .host
            .password(self.conn, user, password)
            .await
            .unwrap_or_else(Self::host_failed);
        let failed = matches!(result, MethodResult::Failed { .. });
        let auth = self.conclude(user, result, true);
        if failed {
            tokio::time::sleep_until((started + FAIL_DELAY).into()).await;
        }
        Ok(auth)
    }

    pub(super) async fn on_keyboard_interactive(
        &mut self,
        user: &str,
        answers: Option<Vec<String>>,
    ) -> Result<Auth, ConnError> {
        self.admit(user).await?;
        self.shared.attempted();
        self.auth_seen = true;
        if self.exhausted {
            return Ok(self.rejected());
        }
        let host = self.ctx.host.clone();
        let step = match answers {
            None => {
                self.kbd_started = Some(std::time::Instant::now());
                host.kbd_start(self.conn, user).await
            }
            Some(answers) => host.kbd_answer(self.conn, answers).await,
        };
        let step = step.unwrap_or_else(|e| KbdStep::Done(Self::host_failed(e)));
        match step {
            KbdStep::Prompts {
                instructions,
                prompts,
                count,
            } => {
                if count {
                    self.count_failure(user);
                }
                Ok(Auth::Partial {
                    name: "".into(),
                    instructions: instructions.into(),
                    prompts: prompts
                        .into_iter()
                        .map(|(t, echo)| (t.into(), echo))
                        .collect::<Vec<_>>()
                        .into(),
                })
            }
            KbdStep::Done(result) => {
                let started = self.kbd_started.take();
                let failed = matches!(result, MethodResult::Failed { .. });
                let auth = self.conclude(user, result, false);
                if failed && let Some(started) = started {
                    tokio::time::sleep_until((started + FAIL_DELAY).into()).await;
                }
                Ok(auth)
            }
        }
    }
}
