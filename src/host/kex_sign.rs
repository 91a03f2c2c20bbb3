//! The host keys, held by the host only: it signs each key exchange's hash for
//! the network side (`SignKex`), or has the ssh-agent that holds the key sign it
//! (`HostKeyAgent`, host_key_agent.rs), and tells it the public keys and
//! certificates to offer (`HostKeys`). It remembers the hashes it signed, because the first
//! hash of a connection is that connection's session identifier, which every
//! `publickey` signature covers: `KeyVerify` accepts a session identifier only
//! if the host signed it, and binds it to the first connection that uses it
//! (sshd's `mm_answer_keyverify`), so a signature made for one connection never
//! logs another in.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::signature::Signer;
use russh::keys::ssh_encoding::Encode;
use russh::keys::ssh_key::private::KeypairData;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Algorithm, PrivateKey, PublicKey};
use tokio::time::Instant;

use super::HostError;
use super::api::ConnId;
use super::host_key_agent::{self, AgentError};
use super::host_keys::{HostKey, HostKeySet};
use super::service::Service;

/// The lengths of the hashes a key exchange signs: SHA-1 (the `-sha1` groups),
/// SHA-256 (curve25519, nistp256, group14/16-sha256), SHA-384 (nistp384) and
/// SHA-512 (nistp521, group16/18-sha512). Anything else is not an exchange hash,
/// and the host key signs nothing else: not a `publickey` request, not a
/// certificate, not a `hostkeys-prove` answer.
const HASH_LENGTHS: [usize; 4] = [20, 32, 48, 64];

/// How many signatures per second, per CPU, may be asked for (twice that at
/// once). Each connection needs one for its key exchange and one per rekey. The
/// limit must sit above what the machine can handshake, or real clients meet it:
/// a fixed 512 a second did, when the benchmark's load generator logged in 606
/// connections a second on 2 cores, and the one refusal closed a connection
/// before authentication, which PerSourcePenalties then held against the
/// address (5,611 of 10,000 connections lost). A handshake costs the network
/// process at least 0.5 ms of CPU (curve25519, measured under a flood: at most
/// 1,750 a second on 2 cores), so 2,048 per CPU is out of reach of real
/// connections, while a network process that wants the host key as a signing
/// service gets no more than a flood of real connections would give it (as
/// sshd's pre-auth child gets one signature per connection), and the refusals
/// are logged.
const PER_CPU_PER_SECOND: f64 = 2048.0;

/// Hashes signed and not yet bound to a connection, at most. A connection's
/// first hash waits here until its `publickey` login (or until LoginGraceTime:
/// a password login never claims it). At the rate above and the default
/// LoginGraceTime of 120 s there could be hundreds of thousands; the cap keeps
/// the table under about 2 MB (a hash, its time and the map's overhead are about
/// 130 bytes) and drops the oldest first, which fails only a `publickey` login
/// whose key exchange is more than 16,384 signatures old (8 s at 2,048 a second,
/// a rate only a flood reaches).
const MAX_PENDING: usize = 16384;

/// With `LoginGraceTime 0` (no limit), how long a signed hash stays claimable.
const UNLIMITED_GRACE: Duration = Duration::from_secs(3600);

/// See the module docs.
pub(super) struct KexSigner {
    keys: Arc<HostKeySet>,
    /// Keys of earlier configurations: connections made before a reload still
    /// rekey with the key they began with (as sshd's children keep theirs).
    retired: Vec<HostKey>,
    /// Signed, not yet bound: hash -> when it stops being claimable.
    pending: HashMap<Vec<u8>, Instant>,
    /// The same hashes, oldest first (entries already bound are skipped).
    order: VecDeque<Vec<u8>>,
    /// Session identifiers bound to their connection, both ways.
    bound: HashMap<Vec<u8>, ConnId>,
    by_conn: HashMap<ConnId, Vec<u8>>,
    /// The rate (see [`PER_CPU_PER_SECOND`]) and the burst, for this machine.
    per_second: f64,
    burst: f64,
    tokens: f64,
    filled: Instant,
    /// Refusals for the rate since the last log line (logged at most once a second).
    refused: u64,
    logged: Option<Instant>,
}

impl KexSigner {
    pub(super) fn new() -> KexSigner {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_second = PER_CPU_PER_SECOND * cpus as f64;
        KexSigner {
            per_second,
            burst: 2.0 * per_second,
            keys: Arc::new(HostKeySet::default()),
            retired: Vec::new(),
            pending: HashMap::new(),
            order: VecDeque::new(),
            bound: HashMap::new(),
            by_conn: HashMap::new(),
            tokens: 2.0 * per_second,
            filled: Instant::now(),
            refused: 0,
            logged: None,
        }
    }

    /// New keys (start or reload); the old ones stay usable for rekeys.
    pub(super) fn set_keys(&mut self, set: HostKeySet) {
        let old = std::mem::replace(&mut self.keys, Arc::new(set));
        for k in old.keys.iter() {
            let known = |r: &HostKey| r.public_key().key_data() == k.public_key().key_data();
            if !self.retired.iter().any(known) && !self.keys.keys.iter().any(known) {
                self.retired.push(k.clone());
            }
        }
    }

    pub(super) fn keys(&self) -> Arc<HostKeySet> {
        Arc::clone(&self.keys)
    }

    /// The host key `key` (its private half, or the agent holding it), if it
    /// is one of the host's, and a token of the rate.
    fn take(&mut self, key: &KeyData, now: Instant) -> Result<HostKey, String> {
        let held = (self.keys.keys.iter())
            .chain(self.retired.iter())
            .find(|k| k.public_key().key_data() == key)
            .cloned()
            .ok_or_else(|| "not a host key of this host".to_string())?;
        let elapsed = now.saturating_duration_since(self.filled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.filled = now;
        if self.tokens < 1.0 {
            self.refused += 1;
            return Err("rate".into());
        }
        self.tokens -= 1.0;
        Ok(held)
    }

    /// Whether to log the rate's refusals now, and how many there were.
    fn refusals_to_log(&mut self, now: Instant) -> Option<u64> {
        if self
            .logged
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.refused))
    }

    /// Forget hashes past their time, and the oldest beyond the cap.
    fn expire(&mut self, now: Instant) {
        while let Some(oldest) = self.order.front() {
            let over = self.order.len() > MAX_PENDING;
            let until = self.pending.get(oldest).copied();
            if until.is_some_and(|u| u > now) && !over {
                break;
            }
            if let Some(hash) = self.order.pop_front()
                && until.is_some()
            {
                self.pending.remove(&hash);
            }
        }
    }

    fn record(&mut self, hash: Vec<u8>, until: Instant, now: Instant) {
        if self.bound.contains_key(&hash) || self.pending.contains_key(&hash) {
            return;
        }
        self.pending.insert(hash.clone(), until);
        self.order.push_back(hash);
        self.expire(now);
    }

    /// Bind `session_id` to `conn`: it must be a hash the host signed, not bound
    /// to another connection, and `conn` may have no other session identifier.
    pub(super) fn bind(
        &mut self,
        session_id: &[u8],
        conn: ConnId,
        now: Instant,
    ) -> Result<(), &'static str> {
        self.expire(now);
        if let Some(owner) = self.bound.get(session_id) {
            return if *owner == conn {
                Ok(())
            } else {
                Err("session identifier already used by another connection (replay)")
            };
        }
        if self.by_conn.contains_key(&conn) {
            return Err("not this connection's session identifier");
        }
        if self.pending.remove(session_id).is_none() {
            return Err("session identifier the host did not sign (or signed too long ago)");
        }
        self.bound.insert(session_id.to_vec(), conn);
        self.by_conn.insert(conn, session_id.to_vec());
        Ok(())
    }

    /// The connection is gone: its session identifier can never be claimed again
    /// (it is neither pending nor bound).
    pub(super) fn conn_closed(&mut self, conn: ConnId) {
        if let Some(id) = self.by_conn.remove(&conn) {
            self.bound.remove(&id);
        }
    }
}

/// Sign `data` with `key` for the negotiated host key `algorithm` (for RSA, it
/// names the hash).
fn sign(
    key: &PrivateKey,
    algorithm: &Algorithm,
    data: &[u8],
) -> Result<russh::keys::ssh_key::Signature, String> {
    let signed = match (key.key_data(), algorithm) {
        (KeypairData::Rsa(rsa), Algorithm::Rsa { hash }) => (rsa, *hash).try_sign(data),
        (_, a) if key.algorithm() == *a => key.try_sign(data),
        _ => return Err(format!("{} is not an algorithm of that key", algorithm)),
    };
    signed.map_err(|e| format!("signing: {e}"))
}

/// Whether HostKeyAlgorithms allows signing with `algorithm`: named plainly, or
/// through a certificate type it names.
fn algorithm_allowed(listed: &[&str], algorithm: &Algorithm) -> bool {
    let (plain, cert) = (algorithm.as_str(), algorithm.to_certificate_type());
    listed.iter().any(|n| *n == plain || *n == cert)
}

/// An agent signature that failed: sshd's lines (the monitor's for a refusal
/// or a broken answer; its key loading's when the agent cannot be reached), and
/// this key exchange fails; the daemon and other connections go on.
fn agent_failed(e: AgentError) -> HostError {
    match e {
        AgentError::Connect { shown, reason } => {
            tracing::error!("Could not connect to agent \"{shown}\": {reason}");
            HostError::NotPermitted(format!("host key agent: {reason}"))
        }
        AgentError::Sign { reason, detail } => {
            tracing::error!("mm_answer_sign: agent sign: {reason}");
            tracing::debug!("host key agent: {detail}");
            HostError::NotPermitted(format!("host key agent: {reason}"))
        }
    }
}

impl Service {
    /// `HostKeys` as the host has loaded them: their public keys and the host
    /// certificates, in OpenSSH's text form.
    pub(super) fn host_key_texts(&self) -> Result<(Vec<String>, Vec<String>), HostError> {
        let set = self.kex().keys();
        let text = |e: &dyn std::fmt::Display| HostError::NotPermitted(format!("host key: {e}"));
        let keys = (set.keys.iter())
            .map(|k| k.public_key().to_openssh().map_err(|e| text(&e)))
            .collect::<Result<_, _>>()?;
        let certs = (set.certificates.iter())
            .map(|c| c.to_openssh().map_err(|e| text(&e)))
            .collect::<Result<_, _>>()?;
        Ok((keys, certs))
    }

    /// `SignKex`: sign an exchange hash with the host key named, for `algo`.
    pub(super) async fn sign_kex(
        &self,
        key_openssh: &str,
        algo: &str,
        data: &[u8],
    ) -> Result<Vec<u8>, HostError> {
        let refuse = |why: String| {
            tracing::error!("host: refused SignKex from network side: {why}");
            HostError::NotPermitted(why)
        };
        if !HASH_LENGTHS.contains(&data.len()) {
            return Err(refuse(format!(
                "{} bytes is not a key exchange hash",
                data.len()
            )));
        }
        let algorithm =
            Algorithm::new(algo).map_err(|_| refuse(format!("unknown algorithm {algo:?}")))?;
        let key = PublicKey::from_openssh(key_openssh)
            .map_err(|e| refuse(format!("unreadable key: {e}")))?;
        let config = self.config();
        let global = config.global();
        if !algorithm_allowed(&global.host_key_algorithms, &algorithm) {
            return Err(refuse(format!("{algo} is not in HostKeyAlgorithms")));
        }
        let now = Instant::now();
        let held = {
            let mut kex = self.kex();
            match kex.take(key.key_data(), now) {
                Ok(k) => k,
                Err(why) if why == "rate" => {
                    if let Some(n) = kex.refusals_to_log(now) {
                        tracing::error!(
                            "host: refused SignKex from network side: more than {} \
                             signatures a second ({n} refused)",
                            kex.per_second
                        );
                    }
                    return Err(HostError::Busy("host key signatures: rate".into()));
                }
                Err(why) => return Err(refuse(why)),
            }
        };
        let signature = match held {
            HostKey::Private(private) => sign(&private, &algorithm, data).map_err(refuse)?,
            HostKey::Agent { public, agent } => {
                // Off the lock; bounded by the agent's timeout.
                host_key_agent::sign(&agent, &public, &algorithm, data)
                    .await
                    .map_err(agent_failed)?
            }
        };
        let mut encoded = Vec::new();
        signature
            .encode(&mut encoded)
            .map_err(|e| refuse(format!("encoding: {e}")))?;
        let grace = match global.login_grace_time {
            Duration::ZERO => UNLIMITED_GRACE,
            g => g,
        };
        self.kex().record(data.to_vec(), now + grace, now);
        tracing::debug!("host: signed a key exchange hash with {algo}");
        Ok(encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_binds_once_and_dies_with_its_connection() {
        let mut k = KexSigner::new();
        let now = Instant::now();
        let (h1, h2) = (vec![1u8; 32], vec![2u8; 32]);
        k.record(h1.clone(), now + Duration::from_secs(120), now);
        k.record(h2.clone(), now + Duration::from_secs(120), now);
        let (a, b) = (ConnId(1), ConnId(2));
        assert!(k.bind(&[9u8; 32], a, now).is_err(), "never signed");
        k.bind(&h1, a, now).expect("first use");
        k.bind(&h1, a, now).expect("same connection again");
        assert!(k.bind(&h1, b, now).is_err(), "replay on another connection");
        assert!(
            k.bind(&h2, a, now).is_err(),
            "a second id for one connection"
        );
        k.conn_closed(a);
        assert!(k.bind(&h1, b, now).is_err(), "gone with its connection");
        k.bind(&h2, b, now).expect("b's own");
    }

    #[test]
    fn signed_hashes_expire_and_are_capped() {
        let mut k = KexSigner::new();
        let now = Instant::now();
        k.record(vec![1; 32], now + Duration::from_secs(120), now);
        let later = now + Duration::from_secs(121);
        assert!(k.bind(&[1; 32], ConnId(1), later).is_err(), "expired");
        for i in 0..=MAX_PENDING as u32 {
            let mut h = vec![0u8; 32];
            h[..4].copy_from_slice(&i.to_be_bytes());
            k.record(h, now + Duration::from_secs(120), now);
        }
        assert!(k.pending.len() <= MAX_PENDING && k.order.len() <= MAX_PENDING);
        // The oldest went first.
        assert!(k.bind(&[0u8; 32], ConnId(2), now).is_err());
        let mut newest = vec![0u8; 32];
        newest[..4].copy_from_slice(&(MAX_PENDING as u32).to_be_bytes());
        k.bind(&newest, ConnId(2), now).expect("newest kept");
    }

    #[test]
    fn the_rate_refuses_past_the_burst_and_refills() {
        let mut k = KexSigner::new();
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).expect("key");
        let data = key.public_key().key_data().clone();
        k.set_keys(HostKeySet {
            keys: vec![HostKey::Private(Box::new(key))],
            certificates: Vec::new(),
        });
        let now = Instant::now();
        assert!(k.per_second >= PER_CPU_PER_SECOND);
        for _ in 0..k.burst as usize {
            k.take(&data, now).expect("within the burst");
        }
        assert_eq!(k.take(&data, now).err().as_deref(), Some("rate"));
        let later = now + Duration::from_millis(100);
        for _ in 0..(k.per_second / 10.0) as usize {
            k.take(&data, later).expect("refilled");
        }
        assert!(k.take(&data, later).is_err());
    }
}
