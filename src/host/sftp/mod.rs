//! `internal-sftp`: sshd's built-in SFTP server, for `Subsystem sftp
//! internal-sftp` and `ForceCommand internal-sftp`, with sftp-server's arguments.
//!
//! It runs in a helper, rsshd itself re-executed as `rsshd __internal-sftp`
//! (started like any session program, by the daemon or by the PAM helper). The
//! helper starts as root, so that no program has to exist inside a jail: it
//! opens the syslog socket, enters the `ChrootDirectory` (checked as sshd
//! checks it), becomes the user (groups, gid, uid; root must be gone for good),
//! applies `-u`, goes to the home directory and then `-d`, and serves SFTP on
//! its stdin/stdout with the `russh-sftp` crate's server on a small
//! current-thread runtime. The requests themselves are in `server` and `ext`.

mod ext;
mod files;
mod handler;
mod log;
mod options;
mod server;

use std::path::PathBuf;

use super::HostError;
use super::spawn::{ExecPlan, SpawnRequest};
use log::Log;
use options::Parsed;

/// The hidden first argument that selects the helper.
pub const HELPER_ARG: &str = "__internal-sftp";
/// The variable that carries the helper's [`Request`].
const REQUEST_ENV: &str = "RSSHD_INTERNAL_SFTP";

/// What a session asks of `internal-sftp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InternalSftp {
    /// Serve SFTP; sftp-server's argument vector, `internal-sftp` first.
    Serve(Vec<String>),
    /// A shell or command under `ForceCommand internal-sftp`: sshd prints
    /// "This service allows sftp connections only." and exits 1.
    Refuse,
}

/// The helper's instructions, from the daemon (through the environment).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Request {
    user: String,
    uid: u32,
    gid: u32,
    gids: Vec<u32>,
    home: PathBuf,
    /// The checked `ChrootDirectory`, expanded.
    jail: Option<PathBuf>,
    /// Become the user (rsshd runs as root); else rsshd already is the user.
    switch: bool,
    /// sftp-server's arguments; `None` to refuse a non-SFTP session.
    args: Option<Vec<String>>,
    /// The client's address, for `session opened for local user U from [A]`.
    client_addr: String,
}

/// How to start the helper for `req`: rsshd itself, as root, with the request
/// in its environment; it enters `jail` and drops to the user on its own.
pub(crate) fn plan(
    req: &SpawnRequest,
    what: &InternalSftp,
    jail: Option<PathBuf>,
) -> Result<ExecPlan, HostError> {
    let u = &req.user;
    let client_addr = req
        .env
        .connection
        .iter()
        .find(|(k, _)| k == "SSH_CONNECTION")
        .and_then(|(_, v)| v.split(' ').next().map(str::to_string))
        .unwrap_or_else(|| "UNKNOWN".into());
    let request = Request {
        user: u.name.clone(),
        uid: u.uid,
        gid: u.gid,
        gids: u.gids.clone(),
        home: u.home.clone(),
        jail,
        switch: super::Privilege::current().is_root() && u.uid != super::Privilege::current().uid(),
        args: match what {
            InternalSftp::Serve(a) => Some(a.clone()),
            InternalSftp::Refuse => None,
        },
        client_addr,
    };
    let json = serde_json::to_string(&request).map_err(|e| HostError::Io(e.into()))?;
    Ok(ExecPlan {
        program: PathBuf::from("/proc/self/exe"),
        argv0: "rsshd".into(),
        args: vec![HELPER_ARG.into()],
        env: Vec::new(),
        env_over_pam: vec![(REQUEST_ENV.into(), json)],
        cwd: PathBuf::from("/"),
        uid: u.uid,
        gid: u.gid,
        gids: u.gids.clone(),
        // The helper needs root to enter the jail; it drops to the user itself.
        switch: false,
        chroot: None,
    })
}

/// Entry point of `rsshd __internal-sftp`; returns the exit status.
#[allow(unsafe_code)] // remove_var, single-threaded; see below
pub fn helper_main() -> i32 {
    let Ok(text) = std::env::var(REQUEST_ENV) else {
        eprintln!("rsshd: {HELPER_ARG} is internal to rsshd");
        return 2;
    };
    // SAFETY: single-threaded (no runtime yet), so nothing reads the
    // environment concurrently.
    unsafe { std::env::remove_var(REQUEST_ENV) };
    let req: Request = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rsshd: bad {HELPER_ARG} request: {e}");
            return 2;
        }
    };
    let argv = req
        .args
        .clone()
        .unwrap_or_else(|| vec!["internal-sftp".into()]);
    let opts = match options::parse(&argv) {
        Parsed::Serve(o) => o,
        Parsed::Exit {
            code,
            stdout,
            stderr,
        } => {
            print!("{stdout}");
            eprint!("{stderr}");
            return code;
        }
    };
    let log = Log::open(opts.level, opts.facility, opts.stderr);
    if let Some(mask) = opts.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    // Before the jail hides /etc/localtime; glibc keeps the zone afterwards.
    crate::host::local_time::load_zone();
    if let Err(code) = become_user(&req, &log) {
        return code;
    }
    // As sshd: the home directory inside the jail if it is there, else `/`;
    // only outside a jail is a missing home worth a word.
    if let Err(e) = std::env::set_current_dir(&req.home)
        && req.jail.is_none()
    {
        eprintln!(
            "Could not chdir to home directory {}: {}",
            req.home.display(),
            super::chroot::strerror(&e)
        );
    }
    if req.args.is_none() {
        println!("This service allows sftp connections only.");
        return 1;
    }
    log.info(&format!(
        "session opened for local user {} from [{}]",
        req.user, req.client_addr
    ));
    if let Some(dir) = &opts.start_dir {
        let home = req.home.to_string_lossy();
        match options::expand_start_dir(dir, &home, &req.user, req.uid) {
            Ok(d) => {
                if let Err(e) = std::env::set_current_dir(&d) {
                    log.error(&format!(
                        "chdir to \"{d}\" failed: {}",
                        super::chroot::strerror(&e)
                    ));
                }
            }
            Err(e) => {
                log.fatal(&e);
                return 255;
            }
        }
    }
    let session = server::Session {
        options: opts,
        log,
        user: req.user.clone(),
        home: req.home.to_string_lossy().into_owned(),
        client_addr: req.client_addr.clone(),
        jailed: req.jail.is_some(),
    };
    match serve(session) {
        Ok(()) => 0,
        Err(e) => {
            log.error(&format!("internal-sftp: {e}"));
            1
        }
    }
}

/// Enter the jail and drop root, as sshd's `do_setusercontext`: groups and gid,
/// chroot, uid; then make sure root cannot come back, and keep the user from
/// reading this process's memory through `/proc` (sftp-server's
/// `platform_disable_tracing`).
fn become_user(req: &Request, log: &Log) -> Result<(), i32> {
    use nix::unistd::{Gid, Uid};
    let die = |msg: String| {
        log.fatal(&msg);
        eprintln!("rsshd: {msg}");
        255
    };
    if req.switch {
        let gids: Vec<Gid> = req.gids.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&gids).map_err(|e| die(format!("setgroups: {e}")))?;
        nix::unistd::setgid(Gid::from_raw(req.gid)).map_err(|e| die(format!("setgid: {e}")))?;
    }
    if let Some(jail) = &req.jail {
        if !nix::unistd::geteuid().is_root() {
            return Err(die(super::chroot::NO_PRIVILEGE.into()));
        }
        super::chroot::enter(jail).map_err(|e| die(e.to_string()))?;
    }
    if req.switch {
        nix::unistd::setuid(Uid::from_raw(req.uid)).map_err(|e| die(format!("setuid: {e}")))?;
        if req.uid != 0 && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err(die("was able to restore old [e]uid".into()));
        }
    }
    let (uid, euid) = (nix::unistd::getuid(), nix::unistd::geteuid());
    if uid.as_raw() != req.uid || euid.as_raw() != req.uid {
        return Err(die(format!("Failed to set uids to {}.", req.uid)));
    }
    let _ = nix::sys::prctl::set_dumpable(false);
    Ok(())
}

/// Serve until the client closes the channel.
fn serve(session: server::Session) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let (input, output) = stdio()?;
        let (done, ended) = tokio::sync::oneshot::channel::<()>();
        let handler = server::Server::new(session, done);
        let config = russh_sftp::server::Config {
            max_client_packet_len: server::MAX_PACKET,
        };
        russh_sftp::server::run_with_config(tokio::io::join(input, output), handler, config).await;
        // The server task drops the handler (and with it `done`) when the
        // client's side ends.
        let _ = ended.await;
        Ok(())
    })
}

type Input = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
type Output = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// Standard input and output as non-blocking pipes (the usual case), or
/// through tokio's blocking stdio otherwise (a terminal).
fn stdio() -> std::io::Result<(Input, Output)> {
    use std::os::fd::AsFd;
    use tokio::net::unix::pipe;
    let fifo = |fd: std::os::fd::BorrowedFd<'_>| {
        nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO)
    };
    let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
    // Duplicates (close-on-exec) become non-blocking; 0 and 1 stay open.
    let input: Input = if fifo(stdin.as_fd()) {
        Box::new(pipe::Receiver::from_owned_fd(
            stdin.as_fd().try_clone_to_owned()?,
        )?)
    } else {
        Box::new(tokio::io::stdin())
    };
    let output: Output = if fifo(stdout.as_fd()) {
        Box::new(pipe::Sender::from_owned_fd(
            stdout.as_fd().try_clone_to_owned()?,
        )?)
    } else {
        Box::new(tokio::io::stdout())
    };
    Ok((input, output))
}
