//! A connection's PAM session helper: rsshd re-executed as `rsshd __pam-session`.
//!
//! Session modules act on the calling process (pam_systemd registers it with
//! logind, pam_limits sets its limits, pam_loginuid writes its loginuid), so they
//! must not run inside the daemon. The helper opens the connection's one PAM
//! session, starts each of the connection's programs in it with PAM's
//! environment, and closes it when the connection is over (as sshd, whose
//! monitor holds one PAM session per connection).
//!
//! Each program leads a session of its own (with its terminal, if any, as its
//! controlling terminal); the helper is in none of the user's sessions or
//! process groups, so no signal of the user's, of a client's or of a hang-up can
//! end it before it has closed the PAM session. The helper is each program's
//! parent and the only one to reap it, so it also delivers the daemon's signals
//! and hang-ups (see `process`: signalling by number is safe until the reap).
//! The protocol on its descriptor 3 is `link`'s; the end of the stream is the end
//! of the connection: what is left of the programs' sessions is hung up as
//! `SessionCleanup` says for a lost connection, then the PAM session is closed.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::ffi;
use super::handle::{Conversation, Pam, Prompt};
use super::link::{FromHelper, ToHelper};
use super::wire;
use crate::host::HostError;
use crate::host::child::Child;
use crate::host::process::{HANGUP_GRACE, LOST_SETTLE, ProcessKiller};
use crate::host::spawn::{ExecPlan, ExitOutcome, PamSession};

/// The hidden first argument that selects the helper.
pub const HELPER_ARG: &str = "__pam-session";
/// The environment variable that carries the request (the helper's environment is
/// otherwise empty).
pub const HELPER_ENV: &str = "RSSHD_PAM_SESSION";

/// What the daemon asks of a helper when it starts it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HelperRequest {
    pub pam: PamSession,
    pub user: String,
    /// `SessionCleanup kill`: what the connection leaves gets SIGKILL after the
    /// grace, not only SIGHUP.
    pub kill: bool,
}

impl HelperRequest {
    pub fn encode(&self) -> Result<String, HostError> {
        serde_json::to_string(self).map_err(|e| HostError::Io(std::io::Error::other(e)))
    }
}

/// Session modules may show text (pam_motd, pam_echo): kept for the daemon,
/// which shows it as sshd shows its `loginmsg` (an interactive login only).
struct SessionConversation {
    messages: Arc<Mutex<Vec<String>>>,
}

impl Conversation for SessionConversation {
    fn converse(&mut self, prompts: &[Prompt]) -> Option<Vec<String>> {
        for p in prompts {
            match p {
                Prompt::Info(t) | Prompt::Error(t) => {
                    if let Ok(mut m) = self.messages.lock() {
                        m.push(t.clone());
                    }
                }
                // Nobody can answer questions at this stage.
                Prompt::Secret(_) | Prompt::Visible(_) => return None,
            }
        }
        Some(Vec::new())
    }
}

/// Entry point; returns the exit code.
pub fn helper_main() -> i32 {
    let Ok(text) = std::env::var(HELPER_ENV) else {
        eprintln!("rsshd: {HELPER_ARG} is internal to rsshd");
        return 2;
    };
    let req: HelperRequest = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rsshd: bad helper request: {e}");
            return 2;
        }
    };
    // Claimed before PAM's modules run, so none of them mistakes it for its own.
    let Some(control) = control_socket() else {
        eprintln!("rsshd: {HELPER_ARG} needs its control socket");
        return 2;
    };
    // Nothing meant for the user's programs or the daemon's terminal may end the
    // helper before it has closed the PAM session; programs get default
    // dispositions back before exec.
    // SAFETY: setting dispositions to SIG_IGN is always sound.
    unsafe {
        for sig in [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTERM,
            libc::SIGPIPE,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rsshd: {HELPER_ARG}: {e}");
            return 2;
        }
    };
    rt.block_on(run(req, control))
}

/// Open the PAM session, serve the connection's requests, close the session.
async fn run(req: HelperRequest, control: OwnedFd) -> i32 {
    let Ok((mut reader, writer)) = wire::split(control) else {
        return 2;
    };
    let (tx, mut queue) = mpsc::unbounded_channel::<FromHelper>();
    let sender = tokio::spawn(async move {
        while let Some(msg) = queue.recv().await {
            if writer.send(&msg, &[]).await.is_err() {
                break;
            }
        }
    });
    let messages = Arc::new(Mutex::new(Vec::new()));
    let taken = |m: &Arc<Mutex<Vec<String>>>| {
        m.lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    };
    let status = match open(&req, Arc::clone(&messages)) {
        Err(error) => {
            let messages = taken(&messages);
            let _ = tx.send(FromHelper::OpenFailed { error, messages });
            254
        }
        Ok(mut pam) => {
            let _ = tx.send(FromHelper::Opened {
                messages: taken(&messages),
            });
            serve(&mut reader, &tx, &mut pam, req.kill).await;
            let _ = pam.close_session();
            let _ = pam.setcred(ffi::PAM_DELETE_CRED);
            0
        }
    };
    drop(tx);
    let _ = sender.await;
    status
}

/// `pam_start` to `pam_setcred`, as sshd's session (PAM_TTY "ssh", as sshd on
/// Linux sets it for every connection).
fn open(req: &HelperRequest, messages: Arc<Mutex<Vec<String>>>) -> Result<Pam, String> {
    let conv = Box::new(SessionConversation { messages });
    let mut pam = Pam::start(&req.pam.service, &req.user, conv).map_err(|e| e.to_string())?;
    let _ = pam.set_item(ffi::PAM_RHOST, &req.pam.rhost);
    let _ = pam.set_item(ffi::PAM_TTY, "ssh");
    pam.open_session()
        .map_err(|e| format!("pam_open_session(): {}", e.text))?;
    if let Err(e) = pam.setcred(ffi::PAM_ESTABLISH_CRED) {
        eprintln!("rsshd: PAM: {e}");
    }
    Ok(pam)
}

/// What a program's supervisor is asked to do.
enum Command {
    Signal(i32),
    HangUp,
    Kill(Duration),
    Release,
    /// A normal end: the connection's end does not hang it up.
    Leave,
    /// The connection is over.
    Lost,
}

/// Serve the daemon's requests until the end of the stream, then end what is
/// left of the programs' sessions.
async fn serve(
    reader: &mut wire::Reader,
    tx: &mpsc::UnboundedSender<FromHelper>,
    pam: &mut Pam,
    kill: bool,
) {
    let mut programs: HashMap<u32, mpsc::UnboundedSender<Command>> = HashMap::new();
    let mut tasks = JoinSet::new();
    while let Some(msg) = reader.next::<ToHelper>().await {
        while tasks.try_join_next().is_some() {}
        let (id, command) = match msg {
            ToHelper::Start { id, plan, tty } => {
                let fds = reader.take_fds(if tty { 1 } else { 3 });
                let plan = plan.with_env_under(pam.env());
                match fds
                    .ok_or_else(|| "descriptors missing".to_string())
                    .and_then(|fds| start(&plan, tty, fds).map_err(|e| e.to_string()))
                {
                    Ok(child) => {
                        let _ = tx.send(FromHelper::Started {
                            id,
                            pid: child.pid(),
                        });
                        let (commands, rx) = mpsc::unbounded_channel();
                        programs.insert(id, commands);
                        tasks.spawn(supervise(id, child, rx, tx.clone(), kill));
                    }
                    Err(e) => {
                        let error = format!("cannot start {}: {e}", plan.program.display());
                        let _ = tx.send(FromHelper::NotStarted { id, error });
                    }
                }
                continue;
            }
            ToHelper::Signal { id, signal } => (id, Command::Signal(signal)),
            ToHelper::HangUp { id } => (id, Command::HangUp),
            ToHelper::Kill { id, grace_ms } => (id, Command::Kill(Duration::from_millis(grace_ms))),
            ToHelper::Leave { id } => (id, Command::Leave),
            ToHelper::Release { id } => (id, Command::Release),
        };
        let release = matches!(command, Command::Release);
        if let Some(p) = programs.get(&id) {
            let _ = p.send(command);
        }
        if release {
            programs.remove(&id);
        }
    }
    for (_, p) in programs.drain() {
        let _ = p.send(Command::Lost);
    }
    while tasks.join_next().await.is_some() {}
}

/// Start `plan` on `fds`: the terminal, or stdin, stdout and stderr.
fn start(plan: &ExecPlan, tty: bool, fds: Vec<OwnedFd>) -> Result<Child, HostError> {
    let l = plan.launch()?;
    let child = if tty {
        l.stdio([fds[0].as_raw_fd(); 3]).controlling_tty().start()?
    } else {
        l.stdio([fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()])
            .new_session()
            .start()?
    };
    // The program has its own copies; ours go now, so that the end of the
    // terminal or the pipes is the program's alone.
    drop(fds);
    Ok(child)
}

/// One program, from its start to its reap: its end is reported, the daemon's
/// requests carried out; the reap comes after the release (or the end of the
/// connection) and the last hang-up.
async fn supervise(
    id: u32,
    mut child: Child,
    mut commands: mpsc::UnboundedReceiver<Command>,
    tx: mpsc::UnboundedSender<FromHelper>,
    kill: bool,
) {
    let killer = ProcessKiller::session(child.pid() as i32);
    // Hang-ups run on their own, so the program's end is seen meanwhile.
    let mut work = JoinSet::new();
    let (mut exited, mut released, mut lost, mut closed) = (false, false, false, false);
    let mut left = false;
    {
        let exit = child.exited();
        tokio::pin!(exit);
        loop {
            tokio::select! {
                outcome = &mut exit, if !exited => {
                    exited = true;
                    killer.exited();
                    let outcome = outcome.unwrap_or(ExitOutcome::Code(255));
                    let _ = tx.send(FromHelper::Exited { id, outcome });
                }
                command = commands.recv(), if !closed => match command {
                    Some(Command::Signal(n)) => {
                        if let Ok(sig) = nix::sys::signal::Signal::try_from(n) {
                            killer.signal(sig);
                        }
                    }
                    Some(Command::HangUp) => {
                        work.spawn(killer.hang_up_lost(LOST_SETTLE));
                    }
                    Some(Command::Kill(grace)) => {
                        work.spawn(killer.hang_up(grace));
                    }
                    Some(Command::Release) => released = true,
                    Some(Command::Leave) => left = true,
                    Some(Command::Lost) => {
                        lost = true;
                        if left && !kill {
                            // Ended normally before: nothing more to do.
                        } else if kill {
                            work.spawn(killer.hang_up(HANGUP_GRACE));
                        } else {
                            work.spawn(killer.hang_up_lost(LOST_SETTLE));
                        }
                    }
                    None => closed = true,
                },
                done = work.join_next(), if lost && !exited => {
                    if done.is_none() {
                        // The connection is over and its hang-ups are done; a
                        // program that outlives them (nohup) is left running,
                        // and goes to init when the helper exits.
                        return;
                    }
                }
            }
            if exited && (released || lost) {
                break;
            }
        }
    }
    while work.join_next().await.is_some() {}
    killer.begin_reap().await;
    let _ = child.reap();
}

/// Descriptor 3, if it is the control socket the daemon passed.
fn control_socket() -> Option<OwnedFd> {
    // SAFETY: fstat fills a plain struct for a descriptor number (or fails).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(3, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    // SAFETY: descriptor 3 was passed to us for this and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(3) };
    let _ = nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(fd)
}
