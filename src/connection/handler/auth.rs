//! Authentication decisions: who may log in, with which key or PAM conversation,
//! and how far AuthenticationMethods has got.

use super::*;

/// What is known about a user name the client asked for.
pub(super) struct Candidate {
    pub(super) info: Option<UserInfo>,
    pub(super) settings: Arc<Settings>,
    pub(super) refused: Option<Refusal>,
}

/// Keyboard-interactive state between round trips.
pub(super) struct KbdState {
    pub(super) user: String,
    pub(super) started: std::time::Instant,
    /// `None` for an invalid or refused user: we still prompt, then fail, so the
    /// answer does not reveal which users exist.
    pub(super) pam: Option<KbdAuth>,
    /// PAM refused the account and the client was shown why; the next round ends
    /// in failure (already logged).
    pub(super) notice_shown: bool,
}

/// Longer passwords fail without reaching PAM, as in sshd (`auth-passwd.c`): the
/// cost of some crypt(3) schemes grows with the password's length, and no one types
/// a kilobyte.
pub(super) const MAX_PASSWORD_LEN: usize = 1024;

/// The least time a failed password or keyboard-interactive attempt takes.
pub(super) const FAIL_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

impl ConnHandler {
    /// Methods completed so far for `user` (a new user name starts over).
    pub(super) fn done_for(&mut self, user: &str) -> &mut Vec<String> {
        if self.progress.as_ref().is_some_and(|(u, _)| u != user) {
            self.progress = None;
            self.key_options = None;
        }
        &mut self
            .progress
            .get_or_insert_with(|| (user.to_string(), Vec::new()))
            .1
    }

    /// Whether `method` may be tried now under AuthenticationMethods.
    pub(super) fn method_ok(&mut self, user: &str, method: &str) -> bool {
        let chains = methods::chains(&self.candidate(user).settings.authentication_methods);
        let done = self.done_for(user).clone();
        methods::next_allowed(&chains, &done).is_none_or(|next| next.iter().any(|m| m == method))
    }

    /// Record a successful method. Completes the login (and returns `Accept`)
    /// when AuthenticationMethods is satisfied; otherwise partial success with the
    /// methods that may come next.
    pub(super) fn method_succeeded(
        &mut self,
        user: &str,
        method: &str,
        options: Option<KeyOptions>,
    ) -> (Auth, bool) {
        if options.is_some() {
            self.key_options = options;
        }
        self.done_for(user).push(method.to_string());
        let done = self.done_for(user).clone();
        let Some(c) = self.candidates.get(user) else {
            return (Auth::reject(), false);
        };
        let Some(info) = c.info.clone() else {
            return (Auth::reject(), false);
        };
        let chains = methods::chains(&c.settings.authentication_methods);
        if !methods::satisfied(&chains, &done) {
            let next = methods::next_allowed(&chains, &done).unwrap_or_default();
            let kinds: Vec<MethodKind> = next
                .iter()
                .filter_map(|m| match m.as_str() {
                    "publickey" => Some(MethodKind::PublicKey),
                    "password" => Some(MethodKind::Password),
                    "keyboard-interactive" => Some(MethodKind::KeyboardInteractive),
                    _ => None,
                })
                .collect();
            let auth = Auth::Reject {
                proceed_with_methods: Some(MethodSet::from(&kinds[..])),
                partial_success: true,
            };
            return (auth, false);
        }
        let login = Arc::new(Login {
            user: info,
            settings: Arc::clone(&c.settings),
            key_options: self.key_options.take().unwrap_or_default(),
        });
        // Not in auth_succeeded: russh 0.65 skips that callback unless compression
        // is deferred.
        self.shared.authenticated(Arc::clone(&login));
        self.login = Some(login);
        // Authentication is over for good: what it kept per user name would
        // otherwise stay for the connection's life (about 1 kB each).
        self.candidates = HashMap::new();
        self.progress = None;
        self.keys = KeyState::default();
        (Auth::Accept, true)
    }

    /// The PAM parameters for a password-style attempt by `user`, if the method
    /// may be used now. An invalid or refused user, or root where PermitRootLogin
    /// forbids passwords, gets a decoy: PAM runs for that name with a password made
    /// to fail, as sshd does (`auth-pam.c`, `fake_password`), so a refusal takes as
    /// long as a wrong password and user names cannot be probed by timing.
    pub(super) fn pam_params(&mut self, user: &str, method: &str) -> Option<AuthParams> {
        let rhost = self.ctx.remote_host();
        let c = self.candidate(user);
        let s = &c.settings;
        let enabled = match method {
            "password" => s.password_authentication,
            _ => s.kbd_interactive_authentication,
        };
        if !enabled || !s.use_pam {
            return None;
        }
        let root_refused = c
            .info
            .as_ref()
            .is_some_and(|i| i.uid == 0 && s.permit_root_login != PermitRootLogin::Yes);
        let params = AuthParams {
            service: s.pam_service_name.clone(),
            user: user.to_string(),
            rhost,
            allow_empty: s.permit_empty_passwords,
            decoy: c.info.is_none() || c.refused.is_some() || root_refused,
        };
        if !self.method_ok(user, method) {
            return None;
        }
        Some(params)
    }

    /// Whether sshd would call `user` an invalid user in its failure lines: one that
    /// does not exist, or one AllowUsers/DenyUsers/... refuse (sshd gives both the
    /// same fake account).
    pub(super) fn is_invalid(&mut self, user: &str) -> bool {
        let c = self.candidate(user);
        c.info.is_none() || c.refused.is_some()
    }

    /// With `UsePAM yes`, the parameters for an account check of `user`.
    pub(super) fn account_params(&mut self, user: &str) -> Option<AuthParams> {
        let rhost = self.ctx.remote_host();
        let c = self.candidate(user);
        c.settings.use_pam.then(|| AuthParams {
            service: c.settings.pam_service_name.clone(),
            user: user.to_string(),
            rhost,
            allow_empty: false,
            decoy: false,
        })
    }

    /// Count a failed attempt as sshd's userauth_finish does; at MaxAuthTries,
    /// log sshd's two lines (fail2ban and logwatch match them) and have the
    /// connection ended with sshd's DISCONNECT.
    pub(super) fn count_failure(&mut self, user: &str) {
        self.failures += 1;
        let c = self.candidate(user);
        let (max, invalid) = (c.settings.max_auth_tries, c.info.is_none());
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
        self.shared.auth_exhausted.notify_one();
    }

    /// A failed attempt's answer, listing the methods `user` may use now as
    /// sshd's authmethods_get does: those enabled for them, narrowed by
    /// AuthenticationMethods. Given to russh explicitly because its default
    /// drops `password` after one wrong password, so clients would not ask again
    /// (OpenSSH's NumberOfPasswordPrompts, PuTTY's retries).
    pub(super) fn failure(&mut self, user: &str) -> Auth {
        let s = Arc::clone(&self.candidate(user).settings);
        let pam = s.use_pam && pam::available().is_ok();
        let enabled = [
            ("publickey", MethodKind::PublicKey, s.pubkey_authentication),
            (
                "password",
                MethodKind::Password,
                pam && s.password_authentication,
            ),
            (
                "keyboard-interactive",
                MethodKind::KeyboardInteractive,
                pam && s.kbd_interactive_authentication,
            ),
        ];
        let chains = methods::chains(&s.authentication_methods);
        let done = self.done_for(user).clone();
        let next = methods::next_allowed(&chains, &done);
        let kinds: Vec<MethodKind> = enabled
            .into_iter()
            .filter(|(name, _, on)| {
                *on && next.as_ref().is_none_or(|n| n.iter().any(|m| m == name))
            })
            .map(|(_, kind, _)| kind)
            .collect();
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&kinds[..])),
            partial_success: false,
        }
    }

    /// Log a PAM outcome in sshd's words; true if it was a success.
    pub(super) fn log_pam(&mut self, user: &str, method: &str, outcome: &AuthOutcome) -> bool {
        let p = peer(&self.ctx.peer);
        match outcome {
            AuthOutcome::Accepted => return true,
            AuthOutcome::Failed(_) => {
                let invalid = if self.is_invalid(user) {
                    "invalid user "
                } else {
                    ""
                };
                tracing::info!("Failed {method} for {invalid}{user} from {p} ssh2")
            }
            AuthOutcome::AccountRefused(why) => {
                tracing::info!("PAM: {why} for {user} from {p}");
                tracing::info!("Failed {method} for {user} from {p} ssh2");
            }
            AuthOutcome::PasswordChangeRequired => {
                tracing::info!(
                    "PAM: password change required for {user} from {p}; refusing: change it another way first"
                );
                tracing::info!("Failed {method} for {user} from {p} ssh2");
            }
            AuthOutcome::Unavailable(e) => tracing::error!("PAM unavailable: {e}"),
        }
        self.count_failure(user);
        false
    }

    /// Log a failure for a user PAM was never asked about.
    pub(super) fn log_fail_without_pam(&mut self, user: &str, method: &str) {
        let p = peer(&self.ctx.peer);
        if self.is_invalid(user) {
            tracing::info!("Failed {method} for invalid user {user} from {p} ssh2");
        } else {
            tracing::info!("Failed {method} for {user} from {p} ssh2");
        }
        self.count_failure(user);
    }

    /// Finish a keyboard-interactive exchange.
    pub(super) async fn kbd_step(&mut self, event: KbdEvent) -> Auth {
        let Some(state) = self.kbd.as_ref() else {
            return Auth::reject();
        };
        let (user, started) = (state.user.clone(), state.started);
        match event {
            KbdEvent::Prompts {
                instructions,
                prompts,
            } => Auth::Partial {
                name: "".into(),
                instructions: instructions.into(),
                prompts: prompts
                    .into_iter()
                    .map(|(t, echo)| (t.into(), echo))
                    .collect::<Vec<_>>()
                    .into(),
            },
            KbdEvent::Done(outcome) => {
                self.kbd = None;
                let notice = match &outcome {
                    AuthOutcome::AccountRefused(why) => {
                        Some(format!("rsshd: {why}; ask your administrator."))
                    }
                    AuthOutcome::PasswordChangeRequired => Some(
                        "rsshd: your password has expired and must be changed; \
                         it cannot be changed here."
                            .to_string(),
                    ),
                    _ => None,
                };
                if let Some(text) = notice {
                    // Keyboard-interactive can carry text: tell the user why (an
                    // info request without prompts), then fail on their reply.
                    self.log_pam(&user, "keyboard-interactive/pam", &outcome);
                    self.kbd = Some(KbdState {
                        user,
                        started,
                        pam: None,
                        notice_shown: true,
                    });
                    return Auth::Partial {
                        name: "".into(),
                        instructions: text.into(),
                        prompts: Vec::new().into(),
                    };
                }
                if self.log_pam(&user, "keyboard-interactive/pam", &outcome) {
                    let (auth, complete) =
                        self.method_succeeded(&user, "keyboard-interactive", None);
                    let word = if complete { "Accepted" } else { "Partial" };
                    tracing::info!(
                        "{word} keyboard-interactive/pam for {user} from {} ssh2",
                        peer(&self.ctx.peer)
                    );
                    auth
                } else {
                    tokio::time::sleep_until((started + FAIL_DELAY).into()).await;
                    Auth::reject()
                }
            }
        }
    }

    /// What every authentication request goes through first, as sshd once the user
    /// name arrives: the client's name under `UseDNS` (once per connection), the
    /// user's `Match` settings, and `RefuseConnection`, which ends the connection
    /// (an `Err`) with sshd's log line.
    pub(super) async fn admit(&mut self, user: &str) -> Result<(), ConnError> {
        self.shared.set_user(user);
        self.ctx.look_up_name().await;
        let c = self.candidate(user);
        if !c.settings.refuse_connection {
            return Ok(());
        }
        let invalid = if c.info.is_some() {
            ""
        } else {
            "invalid user "
        };
        tracing::info!(
            "administratively prohibited connection for {invalid}{user} from {} port {}",
            crate::log::display_ip(&self.ctx.peer),
            self.ctx.peer.port()
        );
        self.shared.refused();
        Err(ConnError::Protocol(russh::Error::Disconnect))
    }

    /// Look the user up once per name, resolve `Match` for them, and log refusals in
    /// sshd's words the first time.
    pub(super) fn candidate(&mut self, user: &str) -> &Candidate {
        if !self.candidates.contains_key(user) {
            let ctx = &self.ctx;
            let info = match host::lookup_user(user) {
                Ok(info) => info,
                Err(e) => {
                    tracing::error!("user lookup for {user} failed: {e}");
                    None
                }
            };
            let spec = ctx.spec(Some(user), info.as_ref().map(|i| i.group_names.clone()));
            let settings = Arc::new(ctx.config.resolve(&spec));
            let refused = match &info {
                None => {
                    tracing::info!("Invalid user {user} from {}", peer(&ctx.peer));
                    None
                }
                Some(i) => {
                    let r = access::check_user(
                        i,
                        &ctx.remote_host(),
                        ctx.peer.ip(),
                        &settings,
                        ctx.daemon_uid,
                    )
                    .err();
                    if let Some(Refusal::InvalidPattern(k, p)) = &r {
                        tracing::error!("Invalid {k} pattern \"{p}\"");
                    }
                    if let Some(r) = &r {
                        tracing::info!(
                            "User {user} from {} not allowed because {}",
                            ctx.remote_host(),
                            r.reason()
                        );
                    }
                    r
                }
            };
            self.candidates.insert(
                user.to_string(),
                Candidate {
                    info,
                    settings,
                    refused,
                },
            );
        }
        &self.candidates[user]
    }

    /// Whether `key` may log `user` in: allowed user, publickey enabled, key not
    /// already used in this login, key listed (with its `from=`), PermitRootLogin.
    /// Returns the key's options. The files are read once per (user, key): the
    /// client's query and its signed request share the verdict.
    /// A certificate (`cert`, of `key`) is judged by the host against its CA; its
    /// verdict is not cached, so that it is never taken for its plain key's.
    /// `algorithm` is `None` only after russh checked the signature against the
    /// algorithm an earlier call here (the offer) already accepted.
    pub(super) async fn check_key(
        &mut self,
        user: &str,
        key: &PublicKey,
        algorithm: Option<&Algorithm>,
        cert: Option<&Certificate>,
    ) -> Option<KeyOptions> {
        if self.keys.already_used(key) {
            // sshd's auth2_key_already_used: `publickey,publickey` needs two keys.
            tracing::info!("refusing previously-used {} key", key_type_name(key));
            return None;
        }
        // PubkeyAcceptedAlgorithms (no ssh-rsa, a SHA-1 signature, by default) and
        // RequiredRSASize, in sshd's order and words.
        let settings = &self.candidate(user).settings;
        if let Some(alg) = algorithm {
            let name = match cert {
                Some(_) => alg.to_certificate_type(),
                None => alg.as_str().to_string(),
            };
            if let Err(line) = crate::daemon::algorithms::check_user_key_named(settings, key, &name)
            {
                tracing::info!("{line}");
                return None;
            }
        }
        if cert.is_some() {
            return self.lookup_key(user, key, cert).await?;
        }
        if let Some(verdict) = self.keys.cached(user, key) {
            return verdict;
        }
        let verdict = self.lookup_key(user, key, None).await?;
        self.keys.remember(user, key, verdict.clone());
        verdict
    }

    /// The uncached decision; the outer `None` means it could not be made (the
    /// files could not be read in time) and must not be remembered.
    async fn lookup_key(
        &mut self,
        user: &str,
        key: &PublicKey,
        cert: Option<&Certificate>,
    ) -> Option<Option<KeyOptions>> {
        let remote_host = self.ctx.remote_host();
        let remote_ip = self.ctx.peer.ip();
        let peer_text = peer(&self.ctx.peer);
        let c = self.candidate(user);
        let (Some(info), None) = (&c.info, &c.refused) else {
            return Some(None);
        };
        if !c.settings.pubkey_authentication {
            return Some(None);
        }
        let settings = Arc::clone(&c.settings);
        let info = info.clone();
        // sshd checks RevokedKeys before reading any authorized_keys file (the host
        // checks a certificate's, with its CA).
        if let (Some(file), None) = (&settings.revoked_keys, cert) {
            let (kind, fp) = (
                key_type_name(key),
                crate::daemon::algorithms::fingerprint(key, self.ctx.pre_auth.fingerprint_hash),
            );
            let file_text = file.display();
            match host::revoked(file, host::Revocable::Key(key.key_data().clone())).await {
                Ok(false) => {}
                Ok(true) => {
                    tracing::error!("Authentication key {kind} {fp} revoked by file {file_text}");
                    return Some(None);
                }
                Err(e) => {
                    // An unreadable or malformed file refuses every key, as in sshd.
                    tracing::error!(
                        "Error checking authentication key {kind} {fp} in revoked keys file {file_text}: {e}"
                    );
                    // A file that could not be read in time is asked again.
                    return (!e.is_transient()).then_some(None);
                }
            }
        }
        let hash = self.ctx.pre_auth.fingerprint_hash;
        let query = host::KeyQuery {
            user: info.clone(),
            files: settings.authorized_keys_file.clone(),
            strict_modes: settings.strict_modes,
            key: key.clone(),
            remote_host,
            remote_ip,
            cert: cert.map(|c| host::CertPolicy::new(c, &settings, hash)),
            commands: host::KeyCommands::from_settings(
                &settings,
                self.ctx.peer,
                self.ctx.local,
                self.ctx.rdomain.as_deref(),
                hash,
            ),
        };
        let uid = info.uid;
        let options = match host::find_authorized_key(query).await {
            Ok(KeyLookup::Found(found)) => found.options,
            // Logged where the line was judged, in sshd's words.
            Ok(KeyLookup::NotFound | KeyLookup::FromRejected { .. }) => return Some(None),
            Err(e) => {
                tracing::info!(
                    "Could not read authorized keys of user {user} from {peer_text}: {e}; key refused"
                );
                return None;
            }
        };
        if uid == 0 {
            let forced = options.command.is_some() || settings.force_command.is_some();
            if !access::root_key_login_allowed(&settings, forced) {
                tracing::info!("ROOT LOGIN REFUSED FROM {peer_text}");
                return Some(None);
            }
        }
        Some(Some(options))
    }
}

/// A connection's publickey state.
#[derive(Default)]
pub(super) struct KeyState {
    /// The last (user, key) looked up and its verdict: a client asks about a key
    /// and then signs with it, and the files are read for the first only.
    last: Option<(String, PublicKey, Option<KeyOptions>)>,
    /// Keys that completed the publickey method in this connection.
    used: Vec<PublicKey>,
}

impl KeyState {
    fn cached(&self, user: &str, key: &PublicKey) -> Option<Option<KeyOptions>> {
        self.last
            .as_ref()
            .filter(|(u, k, _)| u == user && k.key_data() == key.key_data())
            .map(|(_, _, v)| v.clone())
    }

    fn remember(&mut self, user: &str, key: &PublicKey, verdict: Option<KeyOptions>) {
        self.last = Some((user.to_string(), key.clone(), verdict));
    }

    fn already_used(&self, key: &PublicKey) -> bool {
        self.used.iter().any(|k| k.key_data() == key.key_data())
    }

    /// `key` completed publickey: it may not complete it again.
    pub(super) fn used(&mut self, key: &PublicKey) {
        self.used.push(key.clone());
    }
}

/// sshd's name for a key type in `Accepted publickey ... ssh2: ED25519 SHA256:...`.
pub(super) fn key_type_name(key: &PublicKey) -> &'static str {
    match key.algorithm() {
        Algorithm::Ed25519 => "ED25519",
        Algorithm::Ecdsa { .. } => "ECDSA",
        Algorithm::Rsa { .. } => "RSA",
        Algorithm::Dsa => "DSA",
        Algorithm::SkEd25519 => "ED25519-SK",
        Algorithm::SkEcdsaSha2NistP256 => "ECDSA-SK",
        _ => "UNKNOWN",
    }
}
