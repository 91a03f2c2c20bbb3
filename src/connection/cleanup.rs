//! The end of a session channel's program, and what it means for the processes
//! of its session (`SessionCleanup`).
//!
//! The host decides what an end means for the session's processes, from its own
//! SessionCleanup; this side tells it which end came (`HangUp`), and closes its
//! own copies of the program's input, output and terminal.
//!
//! A session ends in one of three ways, whichever comes first:
//!
//! - its program exits: the session task sends the exit status and closes the
//!   channel ([`SessionEnd::program_exited`], [`SessionEnd::after_exit`]);
//! - the client closes the channel ([`SessionEnd::closed`]);
//! - the connection is lost or a lifetime limit ends it (idle, not responding,
//!   `rsshd kill`, shutdown, `ChannelTimeout`) ([`SessionEnd::lost`]).
//!
//! The first two are normal ends. Under `hangup` they do what sshd does: the
//! program's input and output are closed (for a terminal that hangs it up, and
//! the kernel signals its session as a closed terminal does), and nothing is
//! signalled. A lost session also has its input and output closed, and once its
//! program has ended, or after `LOST_SETTLE`, SIGHUP goes to every process left
//! in it (sshd sends nothing, and a command keeps running after its client is
//! gone). Under `kill`, every end also sends SIGHUP, then SIGKILL after the grace,
//! to every process of the session.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::host::Grant;
use crate::host::api::HangUpHow;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// No program yet.
    #[default]
    Idle,
    Running,
    /// The program exited first: a normal end, finished by the session task.
    Exited,
    /// The client closed the channel first.
    Closed,
}

#[derive(Default)]
struct State {
    /// The running program, as the host numbered it, and the login's grant.
    program: Option<(Grant, u64)>,
    /// The tasks that hold the program's input and output.
    io: Vec<AbortHandle>,
    phase: Phase,
    /// Ended as lost (at most once; possibly before the program started).
    lost: bool,
}

/// One session channel's end, shared by its reader (the client's close), its
/// session task (the program's exit) and the connection (loss, lifetime).
pub(crate) struct SessionEnd {
    channel: u32,
    state: Mutex<State>,
    /// Becomes true when the channel is closed or the session lost before the
    /// program exited.
    ended: watch::Sender<bool>,
    /// Becomes true once the host was told how the session ended and has dealt
    /// with it (or there was nothing to tell): the connection's end waits for
    /// it, so that the host closes the connection after, not before, the
    /// session's own end.
    told: watch::Sender<bool>,
}

/// The longest a connection's end waits for a session's end to be told to the
/// host (the session task tells it after the program's last output, within
/// `PTY_DRAIN`, and the hang-up under `kill` takes up to `HANGUP_GRACE`).
const TOLD_MAX: std::time::Duration = std::time::Duration::from_secs(10);

impl SessionEnd {
    pub(crate) fn new(channel: u32) -> Arc<Self> {
        Arc::new(SessionEnd {
            channel,
            state: Mutex::default(),
            ended: watch::channel(false).0,
            told: watch::channel(false).0,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn channel(&self) -> u32 {
        self.channel
    }

    /// Whether the program was started, for a client's `signal` request.
    pub(crate) fn started(&self) -> bool {
        self.state().program.is_some()
    }

    /// The program started (the host's number `process`, for `grant`'s login).
    pub(crate) fn running(self: &Arc<Self>, grant: Grant, process: u64) {
        let lost = {
            let mut st = self.state();
            st.program = Some((grant, process));
            if st.phase == Phase::Idle {
                st.phase = Phase::Running;
            }
            st.lost
        };
        if lost {
            // The connection went while the program was being started.
            let this = Arc::clone(self);
            tokio::spawn(async move { this.apply_lost().await });
        }
    }

    /// A task holding the program's input or output, which any end stops.
    pub(crate) fn add_io(&self, task: AbortHandle) {
        let mut st = self.state();
        if st.lost || st.phase == Phase::Closed {
            task.abort();
        } else {
            st.io.push(task);
        }
    }

    /// Resolves once the channel is closed or the session lost.
    pub(crate) async fn ended(&self) {
        let mut rx = self.ended.subscribe();
        let _ = rx.wait_for(|e| *e).await;
    }

    /// The session task saw the program exit. True if that is the session's end
    /// (a normal one, for the task to finish); false if the client's close came
    /// first.
    pub(crate) fn program_exited(&self) -> bool {
        let mut st = self.state();
        match st.phase {
            Phase::Running | Phase::Idle => {
                st.phase = Phase::Exited;
                true
            }
            Phase::Exited => true,
            Phase::Closed => false,
        }
    }

    /// Stop the I/O tasks (with them go this side's copies of the program's
    /// pipes or terminal) and take the program to tell the host about.
    fn stop_io(st: &mut State) -> Option<(Grant, u64)> {
        for task in st.io.drain(..) {
            task.abort();
        }
        st.program.clone()
    }

    /// Tell the host how the session ended; returns once it has dealt with it.
    async fn hang_up(&self, program: Option<(Grant, u64)>, how: HangUpHow) {
        if let Some((grant, process)) = program
            && let Err(e) = grant.hang_up(process, how).await
        {
            tracing::debug!("session program {process}: hang-up: {e}");
        }
        self.told.send_replace(true);
    }

    /// The program exited and its output went out: its terminal is closed and,
    /// under `kill`, what is left of its session hung up.
    pub(crate) async fn after_exit(&self) {
        let program = Self::stop_io(&mut self.state());
        self.hang_up(program, HangUpHow::Ended).await;
    }

    /// The channel is gone (the client closed it, or the connection went) while
    /// the program runs: its input, output and terminal are closed, as sshd's
    /// `session_close_by_channel`; under `kill` its session is hung up.
    pub(crate) async fn closed(&self) {
        let taken = {
            let mut st = self.state();
            // Not running, or already ended by a loss or a lifetime limit.
            if st.phase != Phase::Running || st.lost {
                return;
            }
            st.phase = Phase::Closed;
            Self::stop_io(&mut st)
        };
        self.ended.send_replace(true);
        self.hang_up(taken, HangUpHow::Ended).await;
    }

    /// The connection is lost or a lifetime limit ended the session (see the
    /// module comment). Returns once the hang-up is done, or, for a session that
    /// had already ended, once the host was told of that end.
    pub(crate) async fn lost(&self) {
        if self.mark_lost() {
            self.apply_lost().await;
        } else {
            let mut told = self.told.subscribe();
            let _ = tokio::time::timeout(TOLD_MAX, told.wait_for(|t| *t)).await;
        }
    }

    /// The decision part of [`Self::lost`], taken at once (so that a close seen
    /// meanwhile is not mistaken for a normal end); false if the session had
    /// already ended. [`Self::apply_lost`] then does the hanging up.
    pub(crate) fn mark_lost(&self) -> bool {
        {
            let mut st = self.state();
            // A session that already ended normally is not ended again.
            if matches!(st.phase, Phase::Exited | Phase::Closed)
                || std::mem::replace(&mut st.lost, true)
            {
                return false;
            }
        }
        self.ended.send_replace(true);
        true
    }

    pub(crate) async fn apply_lost(&self) {
        let program = Self::stop_io(&mut self.state());
        self.hang_up(program, HangUpHow::Lost).await;
    }
}

/// The sessions of a connection, for its end. Entries of sessions that are gone
/// are dropped as new ones come.
#[derive(Default)]
pub(crate) struct Sessions(Mutex<Vec<std::sync::Weak<SessionEnd>>>);

impl Sessions {
    fn list(&self) -> MutexGuard<'_, Vec<std::sync::Weak<SessionEnd>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn track(&self, end: &Arc<SessionEnd>) {
        let mut list = self.list();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(end));
    }

    /// The live sessions, optionally only those of channel `n`.
    pub(crate) fn live(&self, channel: Option<u32>) -> Vec<Arc<SessionEnd>> {
        self.list()
            .iter()
            .filter_map(|w| w.upgrade())
            .filter(|e| channel.is_none_or(|n| e.channel() == n))
            .collect()
    }
}
