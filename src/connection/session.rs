//! Session channels: the requests that shape a user's process (pty-req, env, shell,
//! exec, subsystem) and the pumps that move bytes between the channel and it.
//!
//! Flow control (see [`super::inflow`]): client data is taken from russh at once
//! and queued for the process, and the channel's window re-opens only as the
//! process reads it, so a process that stops reading stops its own channel and
//! nothing else: not the connection's other channels, not its own output.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use russh::server::{Handle, Msg};
use russh::{ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::channels::{Kind, Retired};
use super::cleanup::SessionEnd;
use super::flow::ConnQueue;
use super::inflow::{self, ChannelWindow, Inflow, Input};
use super::limits::{ChannelSlot, FdLease};
use super::shared::ConnShared;
use crate::host::api::SpawnedIo;
use crate::host::{ExitOutcome, Grant, Master, PtyParams, PtyResizer};
use crate::lifetime::ChannelStamps;

/// How long to keep reading a PTY after its shell exited, for output still in flight.
const PTY_DRAIN: Duration = Duration::from_millis(300);

/// One open session channel, owned by the connection handler until its process starts.
pub(crate) struct SessionChannel {
    write: Option<ChannelWriteHalf<Msg>>,
    /// Client bytes on their way to the process, and the channel's window.
    pub(crate) inflow: Arc<Inflow>,
    pub(crate) pty: Option<PtyParams>,
    pub(crate) env: Vec<(String, String)>,
    /// The terminal's size control while the program runs: shared with the
    /// session's task, which lets go of it when the program ends so that nothing
    /// the handler keeps holds the terminal open.
    resizer: Arc<std::sync::Mutex<Option<PtyResizer>>>,
    /// How its program's session ends (see `cleanup`).
    pub(crate) end: Arc<SessionEnd>,
    /// Where this channel's input and output are stamped for the lifetime engine.
    pub(crate) stamps: Arc<ChannelStamps>,
    /// The connection's state, to retire the channel when we close it.
    shared: Arc<ConnShared>,
    /// The user's descriptors its process's PTY or pipes take, claimed before
    /// they are created; held until the process ends.
    pub(crate) fds: Option<FdLease>,
    /// Why client signals are refused, as sshd words it: "forced-command" or
    /// "subsystem" (set before the process starts).
    pub(crate) signals_refused: Option<&'static str>,
    /// The running program as the host numbered it, and the login's grant that
    /// may signal it.
    pub(crate) program: Option<(Grant, u64)>,
}

/// A program's I/O on this side: its terminal's master, or its pipes.
struct ProcessIo {
    input: Box<dyn AsyncWrite + Send + Unpin>,
    output: Box<dyn AsyncRead + Send + Unpin>,
    /// `None` with a PTY, where stderr goes to the terminal.
    stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    resizer: Option<PtyResizer>,
}

impl ProcessIo {
    /// Wrap the descriptors `Spawn` attached (see [`SpawnedIo`]).
    fn from_fds(kind: SpawnedIo, fds: Vec<OwnedFd>) -> std::io::Result<ProcessIo> {
        let mut fds = fds.into_iter();
        let mut next = || {
            fds.next()
                .ok_or_else(|| std::io::Error::other("a descriptor is missing"))
        };
        Ok(match kind {
            SpawnedIo::Pty => {
                let m = Master::new(next()?).map_err(std::io::Error::other)?;
                ProcessIo {
                    input: Box::new(m.clone()),
                    output: Box::new(m.clone()),
                    stderr: None,
                    resizer: Some(PtyResizer::new(m)),
                }
            }
            SpawnedIo::Pipes => {
                use tokio::net::unix::pipe;
                ProcessIo {
                    input: Box::new(pipe::Sender::from_owned_fd(next()?)?),
                    output: Box::new(pipe::Receiver::from_owned_fd(next()?)?),
                    stderr: Some(Box::new(pipe::Receiver::from_owned_fd(next()?)?)),
                    resizer: None,
                }
            }
        })
    }
}

impl SessionChannel {
    /// Take over a freshly accepted channel and enter it, with its input queue
    /// and its place among the connection's channels (`slot`), in the
    /// connection's table; client data and EOF start flowing into the input
    /// queue at once, and the close of the channel hangs up whatever process it
    /// ends up running.
    pub(crate) fn open(
        channel: russh::Channel<Msg>,
        handle: Handle,
        stamps: Arc<ChannelStamps>,
        conn: &Arc<ConnQueue>,
        slot: ChannelSlot,
        shared: Arc<ConnShared>,
    ) -> Self {
        let id = channel.id();
        let end = SessionEnd::new(u32::from(id));
        let (read, write) = channel.split();
        let inflow = Arc::new(Inflow::new(ChannelWindow { handle, id }, Arc::clone(conn)));
        let retired: Retired =
            shared
                .channels
                .open(id, Kind::Session { pty: false }, slot, Arc::clone(&inflow));
        tokio::spawn(read_client(
            read,
            Arc::clone(&inflow),
            Arc::clone(&end),
            Arc::clone(&stamps),
            retired,
        ));
        SessionChannel {
            write: Some(write),
            inflow,
            pty: None,
            env: Vec::new(),
            resizer: Arc::default(),
            end,
            stamps,
            shared,
            fds: None,
            signals_refused: None,
            program: None,
        }
    }

    /// Whether shell/exec/subsystem already ran (a second one is refused).
    pub(crate) fn started(&self) -> bool {
        self.write.is_none()
    }

    /// The client's window-change: the running program's terminal, or the PTY
    /// still to be created.
    pub(crate) fn resize(&mut self, cols: u32, rows: u32, pix_width: u32, pix_height: u32) {
        if let Some(r) = self.resizer.lock().ok().as_deref().and_then(Option::as_ref) {
            let _ = r.resize(cols, rows, pix_width, pix_height);
        } else if let Some(p) = &mut self.pty {
            p.cols = cols;
            p.rows = rows;
            p.pix_width = pix_width;
            p.pix_height = pix_height;
        }
    }

    /// The client's `signal` request: the program's process group gets it, as
    /// from sshd's killpg, with sshd's refusals and their log lines. Only while
    /// the program runs: see `host::process` for why it cannot reach anyone else.
    pub(crate) async fn signal(&self, requested: &Sig) {
        let name = sig_name(requested);
        let Some(sig) = signal_for(requested) else {
            tracing::error!("session_signal_req: unsupported signal \"{name}\"");
            return;
        };
        let (true, Some((grant, program))) = (self.end.started(), &self.program) else {
            let id = self.write.as_ref().map(|w| u32::from(w.id())).unwrap_or(0);
            tracing::error!("session_signal_req: no pid for session {id}");
            return;
        };
        if let Some(kind) = self.signals_refused {
            tracing::error!("session_signal_req: refusing to send signal {name} to {kind} session");
            return;
        }
        // The host signals its own program for this login, never a pid we name.
        if grant.signal(*program, sig as i32).await.unwrap_or(false) {
            tracing::debug!("session_signal_req: signal {name}");
        } else {
            tracing::debug!("session_signal_req: signal {name}: the program has ended");
        }
    }

    /// Wire a started program (`process`, the host's number for it, with the
    /// descriptors `Spawn` attached) to the channel; `preamble` (the login
    /// messages) goes out first. The host writes its utmp/wtmp records and
    /// decides what the session's end means for its processes (see `cleanup`).
    pub(crate) fn start(
        &mut self,
        grant: Grant,
        process: u64,
        io: (SpawnedIo, Vec<OwnedFd>),
        handle: Handle,
        preamble: Option<Bytes>,
    ) {
        let Some(write) = self.write.take() else {
            return;
        };
        let end = Arc::clone(&self.end);
        end.running(grant.clone(), process);
        let io = match ProcessIo::from_fds(io.0, io.1) {
            Ok(io) => io,
            Err(e) => {
                // Nothing of ours can reach the program: end its session.
                tracing::error!("session program {process}: {e}");
                drop(write);
                tokio::spawn(async move { end.lost().await });
                return;
            }
        };
        if let Ok(mut r) = self.resizer.lock() {
            *r = io.resizer.clone();
        }
        let resizer = Arc::clone(&self.resizer);
        let shared = Arc::clone(&self.shared);
        // The terminal's modes and the client's variables went into the process;
        // a long idle session need not keep them.
        let has_pty = self.pty.take().is_some();
        self.env = Vec::new();
        let stamps = Arc::clone(&self.stamps);
        let fds = self.fds.take();
        let feed = tokio::spawn(feed_process(Arc::clone(&self.inflow), io.input, has_pty));
        end.add_io(feed.abort_handle());
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
            end.add_io(out.abort_handle());
            let err = io.stderr.map(|e| {
                tokio::spawn(copy_out(
                    e,
                    write.make_writer_ext(Some(1)),
                    Arc::clone(&stamps),
                ))
            });
            if let Some(err) = &err {
                end.add_io(err.abort_handle());
            }
            // The program's exit, unless the channel's close or the connection's
            // loss comes first. One long poll for the program's life.
            let mut wait = Box::pin(grant.wait(process));
            let exited = tokio::select! {
                biased;
                outcome = &mut wait => Some(outcome),
                _ = end.ended() => None,
            };
            // Boxed: this task lives as long as the process, and only the wait
            // above needs to be in its state all that time.
            Box::pin(async move {
                // The program is gone: no more resizing, and the terminal is not
                // held open by the handler's copy of its master.
                if let Ok(mut r) = resizer.lock() {
                    r.take();
                }
                let outcome = match exited {
                    Some(outcome) if end.program_exited() => Some(outcome),
                    // Ended otherwise (see `cleanup`): the program is left to end
                    // as its session's end made it; the host reaps it then.
                    Some(_) => None,
                    None => {
                        let _ = wait.await;
                        None
                    }
                };
                if let Some(outcome) = outcome {
                    if has_pty {
                        // The shell is gone; take what it wrote last, but do not
                        // wait on background jobs that still hold the terminal.
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
                    // russh forgot the channel with our CLOSE and will drop the
                    // client's answer: retire it here (a no-op if the client
                    // closed it first).
                    shared.retire(u32::from(id));
                    end.after_exit().await;
                }
                drop(fds);
            })
            .await;
        });
    }
}

/// Drain the channel's messages for the life of the channel: data and EOF go to the
/// input queue; the channel's end (the client's close, or the connection's) is
/// the end of its session unless its program ended first.
async fn read_client(
    mut read: ChannelReadHalf,
    inflow: Arc<Inflow>,
    end: Arc<SessionEnd>,
    stamps: Arc<ChannelStamps>,
    retired: Retired,
) {
    let closed_by_client = tokio::select! {
        c = super::pump::from_client(&mut read, &inflow, &stamps) => Some(c),
        // We closed the channel (its program ended, or ChannelTimeout, which
        // ended the session itself): russh keeps its end of this reader open for
        // the connection's life, so the loop above would never end.
        _ = retired => None,
    };
    // Let go of the reader and end the input queue (the feeder ends with it).
    drop(read);
    inflow.close();
    // Boxed so the end's state is not part of the idle reader's. Without the
    // client's close, the channel went with its connection: a lost session
    // (a no-op after a normal end). Retired: the client's close, which the
    // handler may see before this reader does, or our own (a no-op after the
    // program's exit or a lifetime end, both decided before our close).
    match closed_by_client {
        Some(false) => Box::pin(end.lost()).await,
        Some(true) | None => Box::pin(end.closed()).await,
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
pub(crate) fn signal_for(sig: &Sig) -> Option<nix::sys::signal::Signal> {
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
