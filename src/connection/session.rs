//! Session channels: the requests that shape a user's process (pty-req, env, shell,
//! exec, subsystem) and the pumps that move bytes between the channel and it.
//!
//! Flow control (see [`super::inflow`]): client data is taken from russh at once
//! and queued for the process, and the channel's window re-opens only as the
//! process reads it, so a process that stops reading stops its own channel and
//! nothing else: not the connection's other channels, not its own output.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use russh::server::{Handle, Msg};
use russh::{ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::flow::ConnQueue;
use super::inflow::{self, ChannelWindow, Inflow, Input};
use super::limits::{ChannelSlot, FdLease};
use crate::host::{
    ExitOutcome, LoginRecord, ProcessKiller, PtyParams, PtyResizer, SessionProcess, record_login,
    record_logout,
};
use crate::lifetime::ChannelStamps;

/// The window every channel starts with, and gets back as its consumer takes the
/// data (russh's `manual_window`): OpenSSH's session window
/// (CHAN_SES_WINDOW_DEFAULT, 64 packets of 32 KiB). It is also the most client
/// data one channel can make the daemon hold (`flow::Credits`). On loopback a
/// window this size carries over 1 GB/s; a larger one would only let a stalled
/// channel hold more.
pub const WINDOW: u32 = 2 * 1024 * 1024;

/// How long to keep reading a PTY after its shell exited, for output still in flight.
const PTY_DRAIN: Duration = Duration::from_millis(300);
/// Grace between SIGHUP and SIGKILL when a session is hung up.
pub const HANGUP_GRACE: Duration = crate::host::HANGUP_GRACE;

/// One open session channel, owned by the connection handler until its process starts.
pub struct SessionChannel {
    write: Option<ChannelWriteHalf<Msg>>,
    /// Client bytes on their way to the process, and the channel's window.
    pub(crate) inflow: Arc<Inflow>,
    pub pty: Option<PtyParams>,
    pub env: Vec<(String, String)>,
    pub resizer: Option<PtyResizer>,
    killer: Arc<std::sync::Mutex<Option<ProcessKiller>>>,
    /// Where this channel's input and output are stamped for the lifetime engine.
    pub stamps: Arc<ChannelStamps>,
    /// Its place among the connection's open channels.
    _slot: ChannelSlot,
    /// The user's descriptors its process's PTY or pipes take, claimed before
    /// they are created; held until the process ends.
    pub(crate) fds: Option<FdLease>,
    /// Why client signals are refused, as sshd words it: "forced-command" or
    /// "subsystem" (set before the process starts).
    pub signals_refused: Option<&'static str>,
}

impl SessionChannel {
    /// Take over a freshly accepted channel; client data and EOF start flowing into
    /// its input queue at once, and the close of the channel hangs up whatever
    /// process it ends up running.
    pub(crate) fn open(
        channel: russh::Channel<Msg>,
        handle: Handle,
        stamps: Arc<ChannelStamps>,
        conn: &Arc<ConnQueue>,
        slot: ChannelSlot,
    ) -> Self {
        let id = channel.id();
        let (read, write) = channel.split();
        let killer = Arc::new(std::sync::Mutex::new(None));
        let inflow = Arc::new(Inflow::new(ChannelWindow { handle, id }, Arc::clone(conn)));
        tokio::spawn(read_client(
            read,
            Arc::clone(&inflow),
            Arc::clone(&killer),
            Arc::clone(&stamps),
        ));
        SessionChannel {
            write: Some(write),
            inflow,
            pty: None,
            env: Vec::new(),
            resizer: None,
            killer,
            stamps,
            _slot: slot,
            fds: None,
            signals_refused: None,
        }
    }

    /// Whether shell/exec/subsystem already ran (a second one is refused).
    pub fn started(&self) -> bool {
        self.write.is_none()
    }

    /// The client's `signal` request: the program's process group gets it, as
    /// from sshd's killpg, with sshd's refusals and their log lines. Only while
    /// the program runs: see `host::process` for why it cannot reach anyone else.
    pub fn signal(&self, requested: &Sig) {
        let name = sig_name(requested);
        let Some(sig) = signal_for(requested) else {
            tracing::error!("session_signal_req: unsupported signal \"{name}\"");
            return;
        };
        let Some(killer) = self.killer.lock().ok().and_then(|k| k.clone()) else {
            let id = self.write.as_ref().map(|w| u32::from(w.id())).unwrap_or(0);
            tracing::error!("session_signal_req: no pid for session {id}");
            return;
        };
        if let Some(kind) = self.signals_refused {
            tracing::error!("session_signal_req: refusing to send signal {name} to {kind} session");
            return;
        }
        if killer.signal(sig) {
            tracing::debug!("session_signal_req: signal {name}");
        } else {
            tracing::debug!("session_signal_req: signal {name}: the program has ended");
        }
    }

    /// Wire a started process to the channel; `preamble` (the motd) goes out first.
    /// `login` is the utmp/wtmp record of a PTY session, written now and closed
    /// when the process ends.
    pub fn start(
        &mut self,
        mut process: SessionProcess,
        handle: Handle,
        preamble: Option<Bytes>,
        login: Option<LoginRecord>,
    ) {
        let Some(write) = self.write.take() else {
            return;
        };
        self.resizer = process.resizer();
        let killer = process.killer();
        if let Ok(mut slot) = self.killer.lock() {
            *slot = Some(killer.clone());
        }
        // The terminal's modes and the client's variables went into the process;
        // a long idle session need not keep them.
        let has_pty = self.pty.take().is_some();
        self.env = Vec::new();
        let stamps = Arc::clone(&self.stamps);
        let fds = self.fds.take();
        let io = process.take_io();
        tokio::spawn(feed_process(Arc::clone(&self.inflow), io.input, has_pty));
        if let Some(rec) = login.clone() {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = record_login(&rec) {
                    tracing::error!("utmp/wtmp login record for {}: {e}", rec.tty.display());
                }
            });
        }
        tokio::spawn(async move {
            let id = write.id();
            if let Some(text) = preamble {
                let _ = Box::pin(write.data_bytes(text)).await;
            }
            let out = tokio::spawn(copy_out(
                io.output,
                write.make_writer(),
                Arc::clone(&stamps),
            ));
            let err = io.stderr.map(|e| {
                tokio::spawn(copy_out(
                    e,
                    write.make_writer_ext(Some(1)),
                    Arc::clone(&stamps),
                ))
            });
            let outcome = process.wait().await;
            // Boxed: this task lives as long as the process, and only the wait
            // above needs to be in its state all that time.
            Box::pin(async move {
                if let Some(rec) = login {
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Err(e) = record_logout(&rec.tty, rec.pid) {
                            tracing::error!(
                                "utmp/wtmp logout record for {}: {e}",
                                rec.tty.display()
                            );
                        }
                    })
                    .await;
                }
                if has_pty {
                    // The shell is gone; take what it wrote last, but do not wait on
                    // background jobs that still hold the terminal.
                    let abort = out.abort_handle();
                    if tokio::time::timeout(PTY_DRAIN, out).await.is_err() {
                        abort.abort();
                    }
                } else {
                    let _ = out.await;
                    if let Some(err) = err {
                        let _ = err.await;
                    }
                }
                match outcome {
                    Ok(ExitOutcome::Code(code)) => {
                        let _ = write.exit_status(code as u32).await;
                    }
                    Ok(ExitOutcome::Signal { name, core_dumped }) => {
                        let _ = handle
                            .exit_signal_request(
                                id,
                                Sig::Custom(name),
                                core_dumped,
                                String::new(),
                                String::new(),
                            )
                            .await;
                    }
                    Err(e) => tracing::debug!("wait for session process failed: {e}"),
                }
                let _ = write.eof().await;
                let _ = write.close().await;
                // Hang up what is left of the session, then reap its leader.
                process.finish().await;
                drop(fds);
            })
            .await;
        });
    }
}

/// Drain the channel's messages for the life of the channel: data and EOF go to the
/// input queue; the channel's end hangs up its process.
async fn read_client(
    mut read: ChannelReadHalf,
    inflow: Arc<Inflow>,
    killer: Arc<std::sync::Mutex<Option<ProcessKiller>>>,
    stamps: Arc<ChannelStamps>,
) {
    super::pump::from_client(&mut read, &inflow, &stamps).await;
    // The client closed the channel: its process goes with it.
    let killer = killer.lock().ok().and_then(|k| k.clone());
    if let Some(killer) = killer {
        // Boxed so the hang-up's state is not part of the idle reader's.
        Box::pin(killer.hang_up(HANGUP_GRACE)).await;
    }
}

/// Write client input to the process; what it has written is the window the
/// client gets back. EOF closes a pipe; a PTY has no half-close, so there EOF is
/// only the end of input, as in sshd.
async fn feed_process(
    inflow: Arc<Inflow>,
    mut sink: Box<dyn AsyncWrite + Send + Unpin>,
    has_pty: bool,
) {
    while let Some(input) = inflow.next().await {
        match input {
            Input::Data(data) => {
                let ok = sink.write_all(&data).await.is_ok();
                inflow.consumed(data.len());
                if !ok {
                    break;
                }
            }
            Input::Eof if !has_pty => {
                let _ = sink.shutdown().await;
                break;
            }
            Input::Eof => {}
        }
    }
    drop(sink);
    // Input closed, process gone or channel closed: the client is never blocked
    // by a stdin nobody reads.
    inflow::discard(&inflow).await;
}

/// Copy process output to the channel writer, which waits for the client's window.
async fn copy_out(
    from: Box<dyn AsyncRead + Send + Unpin>,
    mut to: impl AsyncWrite + Unpin,
    stamps: Arc<ChannelStamps>,
) {
    let _ = super::pump::to_client(from, &mut to, &stamps).await;
    let _ = to.flush().await;
}

/// Map a signal request to the signal sent to the session's process group:
/// the ones sshd's name2sig accepts, and no others.
pub fn signal_for(sig: &Sig) -> Option<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    Some(match sig {
        Sig::HUP => Signal::SIGHUP,
        Sig::INT => Signal::SIGINT,
        Sig::KILL => Signal::SIGKILL,
        Sig::QUIT => Signal::SIGQUIT,
        Sig::TERM => Signal::SIGTERM,
        Sig::USR1 => Signal::SIGUSR1,
        Sig::Custom(name) if name == "USR2" => Signal::SIGUSR2,
        _ => return None,
    })
}

/// The signal's name as the client sent it (RFC 4254 section 6.10).
fn sig_name(sig: &Sig) -> &str {
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name,
    }
}

/// Shared list of every process the connection started, for the final hang-up.
pub type ProcessList = Arc<std::sync::Mutex<Vec<ProcessKiller>>>;
