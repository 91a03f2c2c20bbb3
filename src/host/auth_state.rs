//! What the host keeps per connection: the users asked about (looked up, `Match`
//! resolved, access checked, all once), the AuthenticationMethods progress, the
//! publickey verdicts and keys already used, a keyboard-interactive conversation
//! in flight, and, once a login is complete, the PAM session. Every decision that
//! leads to a login token is made from this state, never from what the caller says.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use russh::keys::{Certificate, PublicKey};

use super::access::{self, Refusal};
use super::api::{ConnId, LoginFacts, MethodResult, UserVerdict};
use super::auth_info::LoginKey;
use super::methods;
use super::pam::{self, KbdAuth};
use super::service::Service;
use super::{KeyOptions, Privilege, UserInfo};
use crate::config::{Config, ConnSpec, FingerprintHash, Settings};
use crate::log::peer;

/// What is known about a user name the client asked for.
pub(super) struct Candidate {
    pub(super) info: Option<UserInfo>,
    pub(super) settings: Arc<Settings>,
    pub(super) refused: Option<Refusal>,
}

/// A completed login, as the host recorded it.
#[derive(Debug)]
pub(crate) struct HostLogin {
    pub(crate) user: UserInfo,
    pub(crate) settings: Arc<Settings>,
    pub(crate) key_options: KeyOptions,
    /// What the `ExposeAuthInfo` file says: a line per method that succeeded.
    pub(crate) auth_info: String,
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

/// The connection's PAM session (`UsePAM yes`).
pub(super) enum PamState {
    NotOpened,
    Open(Arc<pam::PamLogin>),
    /// `pam_open_session` failed: sessions end at once (status 254), as sshd's.
    Failed,
}

/// One connection's state; see the module docs.
pub(crate) struct ConnState {
    pub(super) id: ConnId,
    pub(super) privilege: Privilege,
    pub(super) config: Arc<Config>,
    pub(super) peer: SocketAddr,
    pub(super) local: SocketAddr,
    pub(super) rdomain: Option<String>,
    /// FingerprintHash before a user is known: all the host needs of the
    /// pre-auth settings, kept instead of a whole `Settings` for the
    /// connection's life (a few kB per connection).
    pub(super) fingerprint_hash: FingerprintHash,
    /// The `Banner` file before a user is known (the only time it is sent).
    pub(super) banner: Option<std::path::PathBuf>,
    /// Under `UseDNS yes`, the peer's confirmed name once looked up.
    pub(super) dns_name: Option<String>,
    pub(super) candidates: HashMap<String, Candidate>,
    /// AuthenticationMethods progress: the user it is for and methods completed.
    pub(super) progress: Option<(String, Vec<String>)>,
    /// Options of the key that completed `publickey`, kept for the final login.
    pub(super) key_options: Option<KeyOptions>,
    /// The methods that succeeded so far, as the `ExposeAuthInfo` file lists
    /// them, and the keys among them (see `auth_info`).
    pub(super) auth_lines: Vec<String>,
    pub(super) login_keys: Vec<LoginKey>,
    /// The `ExposeAuthInfo` file, once a session made it (removed at close).
    pub(super) auth_info_file: Option<(UserInfo, std::path::PathBuf)>,
    pub(super) keys: KeyState,
    pub(super) kbd: Option<KbdState>,
    /// The completed login, once there is one.
    pub(super) login: Option<Arc<HostLogin>>,
    pub(super) pam: PamState,
}

impl ConnState {
    pub(super) fn new(
        id: ConnId,
        privilege: Privilege,
        config: Arc<Config>,
        peer: SocketAddr,
        local: SocketAddr,
        rdomain: Option<String>,
    ) -> ConnState {
        let mut state = ConnState {
            id,
            privilege,
            fingerprint_hash: FingerprintHash::Sha256,
            banner: None,
            config,
            peer,
            local,
            rdomain,
            dns_name: None,
            candidates: HashMap::new(),
            progress: None,
            key_options: None,
            auth_lines: Vec::new(),
            login_keys: Vec::new(),
            auth_info_file: None,
            keys: KeyState::default(),
            kbd: None,
            login: None,
            pam: PamState::NotOpened,
        };
        let pre_auth = state.config.resolve(&state.spec(None, None));
        state.fingerprint_hash = pre_auth.fingerprint_hash;
        state.banner = pre_auth.banner;
        state
    }

    /// The name `Match Host`, `from=`, `AllowUsers user@host`, PAM's RHOST and utmp
    /// see (as `ConnContext::remote_host`).
    pub(super) fn remote_host(&self) -> String {
        match &self.dns_name {
            Some(name) => name.clone(),
            None => crate::log::display_ip(&self.peer),
        }
    }

    /// The Match criteria of this connection, for `user` once known.
    pub(super) fn spec(&self, user: Option<&str>, groups: Option<Vec<String>>) -> ConnSpec {
        ConnSpec::of_connection(
            user,
            self.remote_host(),
            self.peer,
            self.local,
            self.rdomain.clone(),
            groups,
        )
    }

    /// With `UseDNS yes`, look the peer's name up once (when the first user name
    /// arrives, as sshd).
    async fn look_up_name(&mut self) {
        if !self.config.global().use_dns || self.dns_name.is_some() {
            return;
        }
        let ip = self.peer.ip();
        let name = if ip.is_unspecified() {
            // sshd's UNKNOWN (pipes): nothing to look up.
            crate::log::display_ip(&self.peer)
        } else {
            super::remote_hostname(ip).await
        };
        self.dns_name = Some(name);
    }

    /// `BeginUser`: the name under UseDNS, the user's Match settings and access
    /// verdict (logged in sshd's words the first time).
    pub(super) async fn begin_user(&mut self, user: &str) -> UserVerdict {
        self.look_up_name().await;
        let c = self.candidate(user);
        UserVerdict {
            exists: c.info.is_some(),
            refused: c.refused.is_some(),
            groups: c.info.as_ref().map(|i| i.group_names.clone()),
            remote_host: self.remote_host(),
        }
    }

    /// Look the user up once per name, resolve `Match` for them, and log refusals in
    /// sshd's words the first time.
    pub(super) fn candidate(&mut self, user: &str) -> &Candidate {
        if !self.candidates.contains_key(user) {
            let info = match super::lookup_user(user) {
                Ok(info) => info,
                Err(e) => {
                    tracing::error!("user lookup for {user} failed: {e}");
                    None
                }
            };
            let spec = self.spec(Some(user), info.as_ref().map(|i| i.group_names.clone()));
            let settings = self.config.resolve_shared(&spec);
            let refused = match &info {
                None => {
                    tracing::info!("Invalid user {user} from {}", peer(&self.peer));
                    None
                }
                Some(i) => {
                    let r = access::check_user(
                        i,
                        &self.remote_host(),
                        self.peer.ip(),
                        &settings,
                        self.privilege.uid(),
                    )
                    .err();
                    if let Some(Refusal::InvalidPattern(k, p)) = &r {
                        tracing::error!("Invalid {k} pattern \"{p}\"");
                    }
                    if let Some(r) = &r {
                        tracing::info!(
                            "User {user} from {} not allowed because {}",
                            self.remote_host(),
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

    /// Whether sshd would call `user` an invalid user in its failure lines: one that
    /// does not exist, or one AllowUsers/DenyUsers/... refuse.
    pub(super) fn is_invalid(&mut self, user: &str) -> bool {
        let c = self.candidate(user);
        c.info.is_none() || c.refused.is_some()
    }

    /// Methods completed so far for `user` (a new user name starts over).
    pub(super) fn done_for(&mut self, user: &str) -> &mut Vec<String> {
        if self.progress.as_ref().is_some_and(|(u, _)| u != user) {
            self.progress = None;
            self.key_options = None;
            self.auth_lines.clear();
            self.login_keys.clear();
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

    /// Record a successful method. The login completes, and a token is issued,
    /// only when the methods the host itself recorded satisfy its own
    /// AuthenticationMethods; otherwise partial success with the methods that may
    /// come next. `line`: the method as the `ExposeAuthInfo` file lists it;
    /// `key`: the key it used.
    pub(super) fn method_succeeded(
        &mut self,
        host: &Service,
        user: &str,
        method: &str,
        options: Option<KeyOptions>,
        line: String,
        key: Option<LoginKey>,
    ) -> MethodResult {
        let refused = MethodResult::Failed {
            count: false,
            methods: Vec::new(),
        };
        if self.login.is_some() {
            // One login per connection.
            return refused;
        }
        if options.is_some() {
            self.key_options = options;
        }
        self.done_for(user).push(method.to_string());
        self.auth_lines.push(line);
        self.login_keys.extend(key);
        let done = self.done_for(user).clone();
        let Some(c) = self.candidates.get(user) else {
            return refused;
        };
        let (Some(info), None) = (c.info.clone(), &c.refused) else {
            return refused;
        };
        let chains = methods::chains(&c.settings.authentication_methods);
        if !methods::satisfied(&chains, &done) {
            let next = methods::next_allowed(&chains, &done).unwrap_or_default();
            return MethodResult::Partial { next };
        }
        let login = Arc::new(HostLogin {
            user: info,
            settings: Arc::clone(&c.settings),
            key_options: self.key_options.take().unwrap_or_default(),
            auth_info: self.auth_lines.concat(),
        });
        let token = match host.issue(self.id, Arc::clone(&login)) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("login token for {user}: {e}");
                return refused;
            }
        };
        let facts = LoginFacts {
            user: login.user.clone(),
            key_options: login.key_options.clone(),
            remote_host: self.remote_host(),
            keys: std::mem::take(&mut self.login_keys),
        };
        self.login = Some(login);
        self.auth_lines = Vec::new();
        // Authentication is over for good: what it kept per user name would
        // otherwise stay for the connection's life (about 1 kB each).
        self.candidates = HashMap::new();
        self.progress = None;
        self.keys = KeyState::default();
        MethodResult::Complete {
            token,
            login: Box::new(facts),
        }
    }

    /// The methods a failed attempt's answer lists, as sshd's authmethods_get:
    /// those enabled for `user`, narrowed by AuthenticationMethods.
    pub(super) fn failure_methods(&mut self, user: &str) -> Vec<String> {
        let s = Arc::clone(&self.candidate(user).settings);
        let pam = s.use_pam && pam::available().is_ok();
        let enabled = [
            ("publickey", s.pubkey_authentication),
            ("password", pam && s.password_authentication),
            (
                "keyboard-interactive",
                pam && s.kbd_interactive_authentication,
            ),
        ];
        let chains = methods::chains(&s.authentication_methods);
        let done = self.done_for(user).clone();
        let next = methods::next_allowed(&chains, &done);
        enabled
            .into_iter()
            .filter(|(name, on)| *on && next.as_ref().is_none_or(|n| n.iter().any(|m| m == name)))
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// The connection is over: close its PAM session.
    pub(super) fn close(&mut self) {
        if let Some((user, path)) = self.auth_info_file.take() {
            super::auth_info::remove(&user, path);
        }
        if let PamState::Open(login) = std::mem::replace(&mut self.pam, PamState::NotOpened) {
            login.close();
        }
    }
}

impl Drop for ConnState {
    fn drop(&mut self) {
        self.close();
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
    /// The last key (or certificate) `KeyAllowed` allowed, for whom, with its
    /// options: the only one a `KeyVerify` may complete (sshd's monitor keeps
    /// the same one key blob between its keyallowed and keyverify answers).
    pub(super) allowed: Option<AllowedKey>,
}

/// What `KeyAllowed` last allowed.
pub(super) struct AllowedKey {
    pub(super) user: String,
    pub(super) key: PublicKey,
    pub(super) cert: Option<Box<Certificate>>,
    pub(super) options: KeyOptions,
}

impl KeyState {
    pub(super) fn cached(&self, user: &str, key: &PublicKey) -> Option<Option<KeyOptions>> {
        self.last
            .as_ref()
            .filter(|(u, k, _)| u == user && k.key_data() == key.key_data())
            .map(|(_, _, v)| v.clone())
    }

    pub(super) fn remember(&mut self, user: &str, key: &PublicKey, verdict: Option<KeyOptions>) {
        self.last = Some((user.to_string(), key.clone(), verdict));
    }

    pub(super) fn already_used(&self, key: &PublicKey) -> bool {
        self.used.iter().any(|k| k.key_data() == key.key_data())
    }

    /// `key` completed publickey: it may not complete it again.
    pub(super) fn used(&mut self, key: &PublicKey) {
        self.used.push(key.clone());
    }
}
