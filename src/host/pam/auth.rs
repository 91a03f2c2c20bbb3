//! Password and keyboard-interactive authentication through PAM. PAM calls block
//! (and modules may sleep on failure), so they run on their own thread; the
//! keyboard-interactive bridge carries prompts out to the client and answers back.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::decoy;
use super::ffi;
use super::handle::{Conversation, Pam, Prompt};

/// Who is logging in from where, for `pam_start` and its items.
#[derive(Debug, Clone)]
pub struct AuthParams {
    pub service: String,
    pub user: String,
    pub rhost: String,
    /// `PermitEmptyPasswords`.
    pub allow_empty: bool,
    /// The caller has already decided that this attempt fails: the user does not
    /// exist, is refused (AllowUsers, DenyUsers, ...), or is root where
    /// PermitRootLogin forbids passwords. PAM still runs for that user name, as in
    /// sshd, but every answer is replaced with junk of the same length that no
    /// password can equal, so a refusal costs what a wrong password costs (PAM's
    /// delay on failure included) and the outcome is always `Failed`.
    pub decoy: bool,
}

/// How an attempt ended, in terms the caller logs and answers with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AuthOutcome {
    Accepted,
    /// Wrong password or unknown user.
    Failed(String),
    /// Authenticated, but `pam_acct_mgmt` refused: expired, locked, not allowed.
    AccountRefused(String),
    /// The password must be changed first; rsshd refuses rather than guess.
    PasswordChangeRequired,
    /// PAM itself is not usable (library missing, bad service file).
    Unavailable(String),
}

/// Run `pam_authenticate` then `pam_acct_mgmt`. Blocking.
pub fn authenticate(p: &AuthParams, conv: Box<dyn Conversation>) -> AuthOutcome {
    let exists = nix::unistd::User::from_name(&p.user)
        .ok()
        .flatten()
        .is_some();
    let conv = if p.decoy {
        Box::new(DecoyConversation {
            inner: conv,
            pad: !exists,
        })
    } else {
        conv
    };
    let mut pam = match Pam::start(&p.service, &p.user, conv) {
        Ok(pam) => pam,
        Err(e) => return AuthOutcome::Unavailable(e.to_string()),
    };
    let _ = pam.set_item(ffi::PAM_RHOST, &p.rhost);
    // As sshd: PAM_TTY "ssh" during authentication so modules like pam_securetty
    // know this is not a console.
    let _ = pam.set_item(ffi::PAM_TTY, "ssh");
    let flags = if p.allow_empty {
        0
    } else {
        ffi::PAM_DISALLOW_NULL_AUTHTOK
    };
    let cpu = decoy::thread_cpu();
    let result = pam.authenticate(flags);
    if exists && result.is_err() {
        decoy::learn(decoy::thread_cpu().saturating_sub(cpu));
    }
    if p.decoy {
        // Whatever PAM said: a stack that accepts anything (or a blank password
        // with nullok) must not let a refused name in, nor reveal through the
        // account check that it exists.
        return AuthOutcome::Failed(match result {
            Err(e) => e.text,
            Ok(()) => "refused before PAM".into(),
        });
    }
    if let Err(e) = result {
        return AuthOutcome::Failed(e.text);
    }
    match pam.acct_mgmt(flags) {
        Ok(()) => AuthOutcome::Accepted,
        Err(e) if e.code == ffi::PAM_NEW_AUTHTOK_REQD => AuthOutcome::PasswordChangeRequired,
        Err(e) => AuthOutcome::AccountRefused(e.text),
    }
}

/// `pam_acct_mgmt` alone, for logins PAM did not authenticate (public keys), so an
/// expired or locked account is refused whatever the method, as with sshd. Blocking.
pub fn account(p: &AuthParams) -> AuthOutcome {
    let mut pam = match Pam::start(&p.service, &p.user, Box::new(PasswordConversation(None))) {
        Ok(pam) => pam,
        Err(e) => return AuthOutcome::Unavailable(e.to_string()),
    };
    let _ = pam.set_item(ffi::PAM_RHOST, &p.rhost);
    let _ = pam.set_item(ffi::PAM_TTY, "ssh");
    match pam.acct_mgmt(0) {
        Ok(()) => AuthOutcome::Accepted,
        Err(e) if e.code == ffi::PAM_NEW_AUTHTOK_REQD => AuthOutcome::PasswordChangeRequired,
        Err(e) => AuthOutcome::AccountRefused(e.text),
    }
}

/// Answers every secret prompt with one password (the `password` method).
pub struct PasswordConversation(Option<String>);

impl PasswordConversation {
    pub fn boxed(password: &str) -> Box<dyn Conversation> {
        Box::new(PasswordConversation(Some(password.to_string())))
    }
}

impl Conversation for PasswordConversation {
    fn converse(&mut self, prompts: &[Prompt]) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for p in prompts {
            match p {
                Prompt::Secret(_) => out.push(self.0.clone()?),
                // A second factor that needs typing cannot be answered here.
                Prompt::Visible(_) => return None,
                Prompt::Info(_) | Prompt::Error(_) => {}
            }
        }
        Some(out)
    }
}

impl Drop for PasswordConversation {
    fn drop(&mut self) {
        // Overwrite the password before its memory is released.
        if let Some(p) = self.0.take() {
            let mut bytes = p.into_bytes();
            bytes.iter_mut().for_each(|b| *b = 0);
            std::hint::black_box(&bytes);
        }
    }
}

/// What a decoy answers: text as long as the client's answer (the work of
/// hashing a password can depend on its length), made of control characters and a
/// word no one types, so it cannot be anyone's password.
fn junk(len: usize) -> String {
    const JUNK: &[u8] = b"\x08\n\r\x7fNOT-A-PASSWORD";
    (0..len).map(|i| char::from(JUNK[i % JUNK.len()])).collect()
}

/// Passes prompts to the real conversation (so the client sees the same prompts
/// and PAM waits for the same answers) but hands PAM junk instead of the answers.
struct DecoyConversation {
    inner: Box<dyn Conversation>,
    /// The name has no account, so PAM will not hash the answer: do the hashing
    /// here, once, at the point of the exchange where PAM would (after the answer,
    /// before PAM's delay on failure), so the two cost the same at the same time.
    pad: bool,
}

impl Conversation for DecoyConversation {
    fn converse(&mut self, prompts: &[Prompt]) -> Option<Vec<String>> {
        let answers = self.inner.converse(prompts)?;
        let answers: Vec<String> = answers
            .into_iter()
            .map(|a| {
                let fake = junk(a.len());
                let mut bytes = a.into_bytes();
                bytes.iter_mut().for_each(|b| *b = 0);
                std::hint::black_box(&bytes);
                fake
            })
            .collect();
        if std::mem::take(&mut self.pad)
            && let Some(last) = answers.last()
        {
            decoy::pad(last);
        }
        Some(answers)
    }
}

/// What the keyboard-interactive bridge reports.
#[derive(Debug)]
pub enum KbdEvent {
    /// Show these prompts (text, echo) with these instructions and send answers.
    Prompts {
        instructions: String,
        prompts: Vec<(String, bool)>,
    },
    Done(AuthOutcome),
}

/// A PAM conversation carried over keyboard-interactive round trips.
pub struct KbdAuth {
    answers: std_mpsc::Sender<Vec<String>>,
    events: mpsc::UnboundedReceiver<KbdEvent>,
}

struct BridgeConversation {
    events: mpsc::UnboundedSender<KbdEvent>,
    answers: std_mpsc::Receiver<Vec<String>>,
    /// Info and error text waiting to be shown with the next prompts.
    pending: Vec<String>,
}

/// How long a client may take to answer one round of prompts.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

impl Conversation for BridgeConversation {
    fn converse(&mut self, prompts: &[Prompt]) -> Option<Vec<String>> {
        let mut asks = Vec::new();
        for p in prompts {
            match p {
                Prompt::Secret(t) => asks.push((t.clone(), false)),
                Prompt::Visible(t) => asks.push((t.clone(), true)),
                Prompt::Info(t) | Prompt::Error(t) => self.pending.push(t.clone()),
            }
        }
        if asks.is_empty() {
            return Some(Vec::new());
        }
        let instructions = std::mem::take(&mut self.pending).join("\n");
        self.events
            .send(KbdEvent::Prompts {
                instructions,
                prompts: asks.clone(),
            })
            .ok()?;
        let answers = self.answers.recv_timeout(ANSWER_TIMEOUT).ok()?;
        (answers.len() == asks.len()).then_some(answers)
    }
}

impl KbdAuth {
    /// Start the PAM transaction on its own thread.
    pub fn start(params: AuthParams) -> KbdAuth {
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (ans_tx, ans_rx) = std_mpsc::channel();
        let done = ev_tx.clone();
        std::thread::spawn(move || {
            let conv = BridgeConversation {
                events: ev_tx,
                answers: ans_rx,
                pending: Vec::new(),
            };
            let outcome = authenticate(&params, Box::new(conv));
            let _ = done.send(KbdEvent::Done(outcome));
        });
        KbdAuth {
            answers: ans_tx,
            events: ev_rx,
        }
    }

    /// The next thing to do: prompt the client, or the result.
    pub async fn next(&mut self) -> KbdEvent {
        self.events
            .recv()
            .await
            .unwrap_or(KbdEvent::Done(AuthOutcome::Unavailable(
                "PAM thread ended".into(),
            )))
    }

    /// The client's answers to the last prompts.
    pub fn answer(&self, answers: Vec<String>) {
        let _ = self.answers.send(answers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decoy_passes_prompts_through_and_hands_pam_junk_of_the_same_length() {
        let mut c = DecoyConversation {
            inner: PasswordConversation::boxed("hunter2-\u{e9}"),
            pad: false,
        };
        let out = c
            .converse(&[
                Prompt::Info("hello".into()),
                Prompt::Secret("Password: ".into()),
            ])
            .expect("answered");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), "hunter2-\u{e9}".len());
        assert_ne!(out[0], "hunter2-\u{e9}");
        assert!(out[0].starts_with('\u{8}'));
        // What the real conversation refuses, the decoy refuses too.
        assert!(c.converse(&[Prompt::Visible("Code: ".into())]).is_none());
    }
}
