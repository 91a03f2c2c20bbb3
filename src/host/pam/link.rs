//! The daemon's side of a connection's PAM session: its helper process, and the
//! requests and reports exchanged with it (see `helper` for the other side).
//!
//! As sshd, a connection has one PAM session, opened once (here, when its first
//! session channel starts a program) and closed when the connection ends, however
//! many session channels it runs: one helper serves them all, each program by an
//! id of the daemon's choosing.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::helper::{HELPER_ARG, HELPER_ENV, HelperRequest};
use super::wire;
use crate::config::SessionCleanup;
use crate::host::HostError;
use crate::host::launch::Launch;
use crate::host::spawn::{ExecPlan, ExitOutcome, PamSession};

/// Daemon to helper.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum ToHelper {
    /// Start `plan`; its terminal (one descriptor, when `tty`) or its stdin,
    /// stdout and stderr (three) come with this frame.
    Start {
        id: u32,
        plan: Box<ExecPlan>,
        tty: bool,
    },
    /// Send `signal` to the program's process group while it runs.
    Signal { id: u32, signal: i32 },
    /// `SessionCleanup hangup` after a lost connection: SIGHUP and SIGCONT to
    /// what is left of the program's session once it has ended, or after
    /// `LOST_SETTLE`.
    HangUp { id: u32 },
    /// SIGHUP and SIGCONT, and SIGKILL after `grace_ms`, to every process of
    /// the program's session.
    Kill { id: u32, grace_ms: u64 },
    /// The program's session ended normally under `SessionCleanup hangup`: the
    /// connection's end leaves what is left of it alone.
    Leave { id: u32 },
    /// No more requests for this program: reap it once it has ended.
    Release { id: u32 },
}

/// Helper to daemon.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum FromHelper {
    /// The PAM session is open; what its modules showed (pam_motd, pam_echo).
    Opened {
        messages: Vec<String>,
    },
    /// `pam_open_session` (or an earlier step) failed.
    OpenFailed {
        error: String,
        messages: Vec<String>,
    },
    Started {
        id: u32,
        pid: u32,
    },
    NotStarted {
        id: u32,
        error: String,
    },
    Exited {
        id: u32,
        outcome: ExitOutcome,
    },
}

/// What waits for one program's reports.
#[derive(Default)]
struct Waiters {
    started: Option<oneshot::Sender<Result<u32, String>>>,
    exited: Option<oneshot::Sender<ExitOutcome>>,
}

/// A frame for the writer task, with the descriptors it carries.
enum Outgoing {
    Frame(Box<ToHelper>, Vec<OwnedFd>),
    /// End of requests: the helper reads the end of the stream.
    Close,
}

/// The control socket to a helper, shared by the connection's sessions.
pub(crate) struct Link {
    out: mpsc::UnboundedSender<Outgoing>,
    waiters: Mutex<HashMap<u32, Waiters>>,
    next_id: AtomicU32,
    /// The helper hung up (or was never there).
    gone: AtomicBool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").finish_non_exhaustive()
    }
}

impl Link {
    /// Queue a request that carries no descriptors; false if the helper is gone.
    /// Never waits: the writer task sends queued requests in order.
    pub(crate) fn command(&self, msg: ToHelper) -> bool {
        !self.gone.load(Ordering::Acquire)
            && self
                .out
                .send(Outgoing::Frame(Box::new(msg), Vec::new()))
                .is_ok()
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Waiters>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ask the helper to start `plan` with `fds` as its terminal or pipes; the
    /// program's pid and a receiver for its end.
    pub(crate) async fn start(
        self: &Arc<Self>,
        plan: ExecPlan,
        tty: bool,
        fds: Vec<OwnedFd>,
    ) -> Result<(u32, u32, oneshot::Receiver<ExitOutcome>), HostError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (started_tx, started_rx) = oneshot::channel();
        let (exited_tx, exited_rx) = oneshot::channel();
        self.waiters().insert(
            id,
            Waiters {
                started: Some(started_tx),
                exited: Some(exited_tx),
            },
        );
        // Checked after the waiters are in place: the reader marks the helper
        // gone before it drops every waiter.
        let sent = !self.gone.load(Ordering::Acquire)
            && self
                .out
                .send(Outgoing::Frame(
                    Box::new(ToHelper::Start {
                        id,
                        plan: Box::new(plan),
                        tty,
                    }),
                    fds,
                ))
                .is_ok();
        let gone = || HostError::NotPermitted("the PAM session helper is gone".into());
        if !sent {
            self.waiters().remove(&id);
            return Err(gone());
        }
        match started_rx.await {
            Ok(Ok(pid)) => Ok((id, pid, exited_rx)),
            Ok(Err(e)) => {
                self.waiters().remove(&id);
                Err(HostError::NotPermitted(e))
            }
            Err(_) => Err(gone()),
        }
    }

    fn dispatch(&self, msg: FromHelper) {
        match msg {
            FromHelper::Started { id, pid } => {
                if let Some(tx) = self.waiters().get_mut(&id).and_then(|w| w.started.take()) {
                    let _ = tx.send(Ok(pid));
                }
            }
            FromHelper::NotStarted { id, error } => {
                if let Some(w) = self.waiters().remove(&id)
                    && let Some(tx) = w.started
                {
                    let _ = tx.send(Err(error));
                }
            }
            FromHelper::Exited { id, outcome } => {
                if let Some(tx) = self.waiters().remove(&id).and_then(|w| w.exited) {
                    let _ = tx.send(outcome);
                }
            }
            FromHelper::Opened { .. } | FromHelper::OpenFailed { .. } => {}
        }
    }
}

/// How the PAM session of a connection came out.
pub enum Opened {
    /// Open: the session's programs start in it; what PAM's modules showed.
    Open(PamLogin, Vec<String>),
    /// `pam_open_session` failed (logged): as in sshd, sessions then end at
    /// once with status 254.
    Failed(Vec<String>),
}

/// A connection's PAM session, in its helper. Closing it (or dropping it) ends
/// the helper's requests: the helper hangs up what is left of its programs'
/// sessions as `SessionCleanup` says for a lost connection, closes the PAM
/// session and exits.
pub struct PamLogin {
    link: Arc<Link>,
}

impl PamLogin {
    /// Start the helper for `user` and open the PAM session.
    pub async fn open(
        pam: &PamSession,
        user: &str,
        cleanup: SessionCleanup,
    ) -> Result<Opened, HostError> {
        let (ours, theirs) = UnixStream::pair()?;
        let request = HelperRequest {
            pam: pam.clone(),
            user: user.to_string(),
            kill: cleanup == SessionCleanup::Kill,
        };
        let null = nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| HostError::Os {
            what: "open /dev/null".into(),
            source: e,
        })?;
        // The helper (rsshd itself) stays root, out of the daemon's process
        // group and in none of the user's sessions, so neither the user nor a
        // hang-up can signal it. It reports everything on its control socket;
        // its standard descriptors go nowhere.
        let mut helper = Launch::new(
            Path::new("/proc/self/exe"),
            &["rsshd".to_string(), HELPER_ARG.to_string()],
            &[(HELPER_ENV.to_string(), request.encode()?)],
        )?
        .stdio([null.as_raw_fd(); 3])
        .pass(theirs.as_raw_fd())
        .new_group()
        .start()?;
        drop((theirs, null));
        // The daemon never signals the helper, so it may be reaped whenever it
        // exits.
        tokio::spawn(async move {
            let _ = helper.wait().await;
        });
        let (mut reader, writer) = wire::split(OwnedFd::from(ours))?;
        let (out, mut queue) = mpsc::unbounded_channel::<Outgoing>();
        tokio::spawn(async move {
            while let Some(item) = queue.recv().await {
                match item {
                    Outgoing::Frame(msg, fds) => {
                        let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
                        if writer.send(&*msg, &raw).await.is_err() {
                            break;
                        }
                    }
                    Outgoing::Close => break,
                }
            }
            writer.shutdown();
        });
        let link = Arc::new(Link {
            out,
            waiters: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            gone: AtomicBool::new(false),
        });
        let opened = reader.next::<FromHelper>().await;
        let reader_link = Arc::clone(&link);
        tokio::spawn(async move {
            while let Some(msg) = reader.next::<FromHelper>().await {
                reader_link.dispatch(msg);
            }
            // The helper is gone: no program of it will report again.
            reader_link.gone.store(true, Ordering::Release);
            reader_link.waiters().clear();
        });
        match opened {
            Some(FromHelper::Opened { messages }) => Ok(Opened::Open(PamLogin { link }, messages)),
            Some(FromHelper::OpenFailed { error, messages }) => {
                tracing::error!("PAM: {error}");
                let _ = link.out.send(Outgoing::Close);
                Ok(Opened::Failed(messages))
            }
            _ => {
                let _ = link.out.send(Outgoing::Close);
                Err(HostError::NotPermitted(
                    "the PAM session helper exited before opening the session".into(),
                ))
            }
        }
    }

    pub(crate) fn link(&self) -> &Arc<Link> {
        &self.link
    }

    /// The connection is over: no more requests (see [`PamLogin`]).
    pub fn close(&self) {
        let _ = self.link.out.send(Outgoing::Close);
    }
}

impl Drop for PamLogin {
    fn drop(&mut self) {
        self.close();
    }
}
