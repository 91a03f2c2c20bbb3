//! The host's side of each authentication method: which keys a user's files
//! allow, PAM for passwords and keyboard-interactive, the account check, and the
//! log lines sshd writes for them (word for word: fail2ban reads them).

use std::sync::Arc;

use russh::keys::{Algorithm, Certificate, PublicKey};

use super::access;
use super::api::{KbdStep, KeyAnswer, MethodResult};
use super::auth_state::{ConnState, KbdState};
use super::pam::{self, AuthOutcome, AuthParams, KbdAuth, KbdEvent, PasswordConversation};
use super::service::Service;
use super::{HostError, KeyLookup, KeyOptions};
use crate::config::PermitRootLogin;
use crate::log::peer;

/// Longer passwords fail without reaching PAM, as in sshd (`auth-passwd.c`): the
/// cost of some crypt(3) schemes grows with the password's length, and no one types
/// a kilobyte.
pub(super) const MAX_PASSWORD_LEN: usize = 1024;

/// A key as a publickey request names it: the signature algorithm (known for
/// a certificate only at its offer) and the certificate, if one was offered.
pub(super) struct OfferedKey {
    pub(super) key: PublicKey,
    pub(super) algo: Option<Algorithm>,
    pub(super) cert: Option<Box<Certificate>>,
}

/// The key, algorithm and certificate as a request names them. A certificate
/// must be of that key and signed by the CA it names (checked here, not taken
/// from the caller); whether that CA is trusted is the policy's question.
pub(super) fn parse_key(
    openssh: &str,
    algo: Option<&str>,
    cert: Option<&str>,
) -> Result<OfferedKey, HostError> {
    let refuse =
        |what: &str, e: &dyn std::fmt::Display| HostError::NotPermitted(format!("{what}: {e}"));
    let key = PublicKey::from_openssh(openssh).map_err(|e| refuse("unreadable key", &e))?;
    let algo = algo
        .map(Algorithm::new)
        .transpose()
        .map_err(|e| refuse("unknown key algorithm", &e))?;
    let cert = match cert {
        None if algo.is_none() => return Err(refuse("key", &"no signature algorithm")),
        None => None,
        Some(text) => {
            let cert = Certificate::from_openssh(text)
                .map_err(|e| refuse("unreadable certificate", &e))?;
            if cert.public_key() != key.key_data() {
                return Err(refuse("certificate", &"not of the key named"));
            }
            cert.verify_signature()
                .map_err(|e| refuse("certificate signature", &e))?;
            Some(Box::new(cert))
        }
    };
    Ok(OfferedKey { key, algo, cert })
}

/// sshd's name for a key type in `Accepted publickey ... ssh2: ED25519 SHA256:...`.
pub(crate) fn key_type_name(key: &PublicKey) -> &'static str {
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

fn failed(count: bool) -> MethodResult {
    MethodResult::Failed {
        count,
        methods: Vec::new(),
    }
}

impl ConnState {
    /// `KeyAllowed`.
    pub(super) async fn key_allowed(&mut self, user: &str, offered: &OfferedKey) -> KeyAnswer {
        if !self.method_ok(user, "publickey") {
            return KeyAnswer::NotNow;
        }
        match self.check_key(user, offered).await {
            Some(_) => {
                if let Some(cert) = &offered.cert {
                    self.keys.cert_allowed(user, cert);
                }
                KeyAnswer::Allowed
            }
            None => KeyAnswer::Refused,
        }
    }

    /// `PubkeyVerified`: the key proved, it completes publickey only if the host
    /// allows it for this user on this connection, now.
    pub(super) async fn pubkey_verified(
        &mut self,
        host: &Service,
        user: &str,
        offered: &OfferedKey,
    ) -> MethodResult {
        if !self.method_ok(user, "publickey") {
            return failed(true);
        }
        // Without the algorithm, only a certificate this connection's offer
        // had it checked for (russh verified the signature with that one).
        if let (None, Some(cert)) = (&offered.algo, &offered.cert)
            && !self.keys.was_cert_allowed(user, cert)
        {
            return failed(true);
        }
        let Some(options) = self.check_key(user, offered).await else {
            return failed(true);
        };
        let key = &offered.key;
        if let Some(params) = self.account_params(user) {
            let outcome = tokio::task::spawn_blocking(move || pam::account(&params))
                .await
                .unwrap_or_else(|e| AuthOutcome::Unavailable(e.to_string()));
            if !self.log_pam(user, "publickey", &outcome) {
                return failed(true);
            }
        }
        self.keys.used(key);
        let result = self.method_succeeded(host, user, "publickey", Some(options));
        let hash = self.fingerprint_hash;
        tracing::info!(
            "{} publickey for {user} from {} ssh2: {}",
            if matches!(result, MethodResult::Complete { .. }) {
                "Accepted"
            } else {
                "Partial"
            },
            peer(&self.peer),
            match &offered.cert {
                Some(c) => super::describe_cert(c, hash),
                None => format!(
                    "{} {}",
                    key_type_name(key),
                    crate::config::algorithms::fingerprint(key, hash)
                ),
            }
        );
        result
    }

    /// `Password`, through PAM (with the account check).
    pub(super) async fn password(
        &mut self,
        host: &Service,
        user: &str,
        password: &str,
    ) -> MethodResult {
        let Some(params) = self.pam_params(user, "password") else {
            self.log_fail_without_pam(user, "password");
            return MethodResult::Failed {
                count: true,
                methods: self.failure_methods(user),
            };
        };
        let outcome = if password.is_empty() && !params.allow_empty {
            AuthOutcome::Failed("empty password".into())
        } else if password.len() > MAX_PASSWORD_LEN {
            AuthOutcome::Failed("password too long".into())
        } else {
            let conv = PasswordConversation::boxed(password);
            tokio::task::spawn_blocking(move || pam::authenticate(&params, conv))
                .await
                .unwrap_or_else(|e| AuthOutcome::Unavailable(e.to_string()))
        };
        if self.log_pam(user, "password", &outcome) {
            let result = self.method_succeeded(host, user, "password", None);
            let word = if matches!(result, MethodResult::Complete { .. }) {
                "Accepted"
            } else {
                "Partial"
            };
            tracing::info!("{word} password for {user} from {} ssh2", peer(&self.peer));
            return result;
        }
        MethodResult::Failed {
            count: true,
            methods: self.failure_methods(user),
        }
    }

    /// `KbdStart`: a PAM conversation for `user`, or a decoy one that fails.
    pub(super) async fn kbd_start(&mut self, host: &Service, user: &str) -> KbdStep {
        let pam = self
            .pam_params(user, "keyboard-interactive")
            .map(KbdAuth::start);
        self.kbd = Some(KbdState {
            user: user.to_string(),
            started: std::time::Instant::now(),
            pam,
            notice_shown: false,
        });
        self.kbd_next(host).await
    }

    /// `KbdAnswer`.
    pub(super) async fn kbd_answer(&mut self, host: &Service, answers: Vec<String>) -> KbdStep {
        match self.kbd.as_ref() {
            Some(KbdState { pam: Some(k), .. }) => k.answer(answers),
            Some(KbdState {
                pam: None,
                user,
                notice_shown,
                ..
            }) => {
                // The decoy (or notice) round is over: fail like a wrong password.
                let (user, logged) = (user.clone(), *notice_shown);
                self.kbd = None;
                if !logged {
                    self.log_fail_without_pam(&user, "keyboard-interactive/pam");
                }
                return KbdStep::Done(failed(!logged));
            }
            None => return KbdStep::Done(failed(false)),
        }
        self.kbd_next(host).await
    }

    async fn kbd_next(&mut self, host: &Service) -> KbdStep {
        let event = match self.kbd.as_mut() {
            Some(KbdState { pam: Some(k), .. }) => k.next().await,
            Some(KbdState { pam: None, .. }) => KbdEvent::Prompts {
                instructions: String::new(),
                prompts: vec![("Password: ".into(), false)],
            },
            None => return KbdStep::Done(failed(false)),
        };
        self.kbd_step(host, event)
    }

    fn kbd_step(&mut self, host: &Service, event: KbdEvent) -> KbdStep {
        let Some(state) = self.kbd.as_ref() else {
            return KbdStep::Done(failed(false));
        };
        let (user, started) = (state.user.clone(), state.started);
        let outcome = match event {
            KbdEvent::Prompts {
                instructions,
                prompts,
            } => {
                return KbdStep::Prompts {
                    instructions,
                    prompts,
                    count: false,
                };
            }
            KbdEvent::Done(outcome) => outcome,
        };
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
            // Keyboard-interactive can carry text: tell the user why (an info
            // request without prompts), then fail on their reply.
            self.log_pam(&user, "keyboard-interactive/pam", &outcome);
            self.kbd = Some(KbdState {
                user,
                started,
                pam: None,
                notice_shown: true,
            });
            return KbdStep::Prompts {
                instructions: text,
                prompts: Vec::new(),
                count: true,
            };
        }
        if self.log_pam(&user, "keyboard-interactive/pam", &outcome) {
            let result = self.method_succeeded(host, &user, "keyboard-interactive", None);
            let word = if matches!(result, MethodResult::Complete { .. }) {
                "Accepted"
            } else {
                "Partial"
            };
            tracing::info!(
                "{word} keyboard-interactive/pam for {user} from {} ssh2",
                peer(&self.peer)
            );
            KbdStep::Done(result)
        } else {
            KbdStep::Done(failed(true))
        }
    }

    /// The PAM parameters for a password-style attempt by `user`, if the method
    /// may be used now. An invalid or refused user, or root where PermitRootLogin
    /// forbids passwords, gets a decoy: PAM runs for that name with a password made
    /// to fail, as sshd does (`auth-pam.c`, `fake_password`), so a refusal takes as
    /// long as a wrong password and user names cannot be probed by timing.
    fn pam_params(&mut self, user: &str, method: &str) -> Option<AuthParams> {
        let rhost = self.remote_host();
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

    /// With `UsePAM yes`, the parameters for an account check of `user`.
    fn account_params(&mut self, user: &str) -> Option<AuthParams> {
        let rhost = self.remote_host();
        let c = self.candidate(user);
        c.settings.use_pam.then(|| AuthParams {
            service: c.settings.pam_service_name.clone(),
            user: user.to_string(),
            rhost,
            allow_empty: false,
            decoy: false,
        })
    }

    /// Log a PAM outcome in sshd's words; true if it was a success (a failure is
    /// a failed attempt for MaxAuthTries, which the caller counts).
    fn log_pam(&mut self, user: &str, method: &str, outcome: &AuthOutcome) -> bool {
        let p = peer(&self.peer);
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
        false
    }

    /// Log a failure for a user PAM was never asked about.
    fn log_fail_without_pam(&mut self, user: &str, method: &str) {
        let p = peer(&self.peer);
        if self.is_invalid(user) {
            tracing::info!("Failed {method} for invalid user {user} from {p} ssh2");
        } else {
            tracing::info!("Failed {method} for {user} from {p} ssh2");
        }
    }

    /// Whether `key` may log `user` in: allowed user, publickey enabled, key not
    /// already used in this login, key listed (with its `from=`), PermitRootLogin.
    /// Returns the key's options. The files are read once per (user, key): the
    /// client's query and its signed request share the verdict.
    /// A certificate (of `key`) is judged against its CA; its verdict is not
    /// cached, so that it is never taken for its plain key's.
    async fn check_key(&mut self, user: &str, offered: &OfferedKey) -> Option<KeyOptions> {
        let (key, cert) = (&offered.key, offered.cert.as_deref());
        if self.keys.already_used(key) {
            // sshd's auth2_key_already_used: `publickey,publickey` needs two keys.
            tracing::info!("refusing previously-used {} key", key_type_name(key));
            return None;
        }
        // PubkeyAcceptedAlgorithms (no ssh-rsa, a SHA-1 signature, by default) and
        // RequiredRSASize, in sshd's order and words.
        // For a certificate, the algorithm is checked as its certificate type.
        let settings = &self.candidate(user).settings;
        if let Some(alg) = &offered.algo {
            let name = match cert {
                Some(_) => alg.to_certificate_type(),
                None => alg.as_str().to_string(),
            };
            if let Err(line) = crate::config::algorithms::check_user_key_named(settings, key, &name)
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
        let remote_host = self.remote_host();
        let remote_ip = self.peer.ip();
        let peer_text = peer(&self.peer);
        let hash = self.fingerprint_hash;
        let c = self.candidate(user);
        let (Some(info), None) = (&c.info, &c.refused) else {
            return Some(None);
        };
        if !c.settings.pubkey_authentication {
            return Some(None);
        }
        let settings = Arc::clone(&c.settings);
        let info = info.clone();
        // sshd checks RevokedKeys before reading any authorized_keys file (a
        // certificate's is checked with its CA, by the certificate policy).
        if let (Some(file), None) = (&settings.revoked_keys, cert) {
            let (kind, fp) = (
                key_type_name(key),
                crate::config::algorithms::fingerprint(key, hash),
            );
            let file_text = file.display();
            match super::revoked(file, super::Revocable::Key(key.key_data().clone())).await {
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
        let query = super::KeyQuery {
            user: info.clone(),
            files: settings.authorized_keys_file.clone(),
            strict_modes: settings.strict_modes,
            key: key.clone(),
            remote_host,
            remote_ip,
            // From the host's own resolved settings and the connection facts it
            // recorded at ConnOpened.
            cert: cert.map(|c| super::CertPolicy::new(c, &settings, hash)),
            commands: super::KeyCommands::from_settings(
                &settings,
                self.peer,
                self.local,
                self.rdomain.as_deref(),
                hash,
            ),
        };
        let uid = info.uid;
        let options = match super::find_authorized_key(query).await {
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
