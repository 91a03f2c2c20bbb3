//! `rsshd __sandbox-check`: confines itself as the network process will, then
//! serves SSH with russh on an inherited listener, so tests can drive it with the
//! real OpenSSH client and inspect it from outside through /proc.
//!
//! `rsshd __sandbox-check [--no-sandbox] [--cold] [--empty-dir=DIR] [--user=NAME]
//! LISTEN_FD HOST_KEY AUTHORIZED_PUBKEY`
//!
//! It prints `before root=... uid=...`, then (confined) the lines of its
//! /proc/self/status that matter, read through a descriptor opened before the
//! chroot, then `ready`. Any user with the authorized key is let in; an exec
//! request `probe NAME` makes the confined process attempt something the sandbox
//! must stop (see [`probe`]) and answers with the outcome, any other command
//! answers `sandboxed-ok`. With `--no-sandbox` it serves the same way unconfined
//! (for measuring what confinement costs).

use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use russh::keys::ssh_key::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};

use super::{SandboxOptions, WARM_BLOCKING_THREADS, enter, runtime};

/// The hidden first argument that selects the harness.
pub const CHECK_ARG: &str = "__sandbox-check";

/// The /proc/self/status fields the harness reports.
const STATUS_FIELDS: &[&str] = &[
    "Uid:",
    "Gid:",
    "Groups:",
    "NoNewPrivs:",
    "Seccomp:",
    "CapInh:",
    "CapPrm:",
    "CapEff:",
    "CapBnd:",
    "CapAmb:",
    "Threads:",
];

struct Args {
    sandbox: bool,
    /// Skip warming the blocking pool (to show what RLIMIT_NPROC 0 does to
    /// spawn_blocking without it).
    cold: bool,
    opts: SandboxOptions,
    listen_fd: RawFd,
    host_key: String,
    authorized: String,
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut opts = SandboxOptions::default();
    let mut sandbox = true;
    let mut cold = false;
    let mut positional = Vec::new();
    for a in argv {
        if a == "--no-sandbox" {
            sandbox = false;
        } else if a == "--cold" {
            cold = true;
        } else if let Some(d) = a.strip_prefix("--empty-dir=") {
            opts.empty_dir = d.into();
        } else if let Some(u) = a.strip_prefix("--user=") {
            opts.user = u.into();
        } else if a.starts_with("--") {
            return Err(format!("unknown option {a}"));
        } else {
            positional.push(a.clone());
        }
    }
    let [fd, key, auth] = positional.as_slice() else {
        return Err("usage: LISTEN_FD HOST_KEY AUTHORIZED_PUBKEY".into());
    };
    let listen_fd = fd.parse().map_err(|_| format!("bad descriptor {fd}"))?;
    Ok(Args {
        sandbox,
        cold,
        opts,
        listen_fd,
        host_key: key.clone(),
        authorized: auth.clone(),
    })
}

/// Entry point of `rsshd __sandbox-check`; returns the exit status.
pub fn check_main() -> i32 {
    let argv: Vec<String> = std::env::args().skip(2).collect();
    match run(&argv) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rsshd: {CHECK_ARG}: {e}");
            1
        }
    }
}

/// Claim the inherited listening socket.
fn take_listener(fd: RawFd) -> Result<std::net::TcpListener, String> {
    // 0 as for inetd-style activation (the listener as standard input), else
    // one from 3 up; never stdout or stderr.
    if fd < 0 || fd == 1 || fd == 2 {
        return Err(format!("descriptor {fd} is not an inherited listener"));
    }
    // Checked before claiming: open, a socket, listening.
    let borrowed_ok = nix::fcntl::fcntl(
        // SAFETY: only borrowed for this call; F_GETFD on a closed number fails
        // with EBADF and touches nothing.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .is_ok();
    if !borrowed_ok {
        return Err(format!("descriptor {fd} is not open"));
    }
    // SAFETY: `fd` is open (checked above) and was inherited across exec: no
    // object of this process owns it (std's stdin handle does not own or close
    // descriptor 0, and nothing else reads it), and the harness claims it once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let listening =
        nix::sys::socket::getsockopt(&owned.as_fd(), nix::sys::socket::sockopt::AcceptConn)
            .map_err(|e| format!("descriptor {fd}: {e}"))?;
    if !listening {
        return Err(format!("descriptor {fd} is not a listening socket"));
    }
    let l = std::net::TcpListener::from(owned);
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(l)
}

fn run(argv: &[String]) -> Result<(), String> {
    let args = parse(argv)?;
    let listener = take_listener(args.listen_fd)?;
    let key = russh::keys::load_secret_key(&args.host_key, None)
        .map_err(|e| format!("host key {}: {e}", args.host_key))?;
    let authorized = std::fs::read_to_string(&args.authorized)
        .map_err(|e| e.to_string())
        .and_then(|t| PublicKey::from_openssh(t.trim()).map_err(|e| e.to_string()))
        .map_err(|e| format!("authorized key {}: {e}", args.authorized))?;
    // Opened now: after the chroot there is no /proc to open.
    let mut status = std::fs::File::open("/proc/self/status").map_err(|e| e.to_string())?;
    let root = std::fs::read_link("/proc/self/root").map_err(|e| e.to_string())?;
    say(&format!(
        "before root={} uid={}",
        root.display(),
        nix::unistd::getuid()
    ));

    let entered = if args.sandbox {
        let e = enter(&args.opts).map_err(|e| e.to_string())?;
        for w in &e.warnings {
            eprintln!("rsshd: {CHECK_ARG}: warning: {w}");
        }
        say(&format!("user {} uid {}", e.user.name, e.user.uid));
        Some(e)
    } else {
        None
    };
    let warm = if args.cold { 0 } else { WARM_BLOCKING_THREADS };
    let runtime = runtime(warm).map_err(|e| e.to_string())?;
    let listener = runtime.block_on(async { tokio::net::TcpListener::from_std(listener) });
    let listener = listener.map_err(|e| e.to_string())?;
    if let Some(e) = entered {
        let debug = e.debug();
        e.lock().map_err(|e| e.to_string())?;
        say(&format!("locked debug={debug}"));
        // Plain read(2) calls: read_to_string would also stat and seek, which
        // the network process has no use for and the filter does not allow.
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match status.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("reading /proc/self/status: {e}")),
            }
        }
        let text = String::from_utf8_lossy(&raw);
        for line in text.lines() {
            if STATUS_FIELDS.iter().any(|f| line.starts_with(f)) {
                say(&format!("status {line}"));
            }
        }
    }
    drop(status);
    say("ready");
    runtime.block_on(serve(listener, key, authorized))
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn serve(
    listener: tokio::net::TcpListener,
    key: russh::keys::PrivateKey,
    authorized: PublicKey,
) -> Result<(), String> {
    // rsshd's daemon style: our key, no russh timers, no rejection delay.
    let config = Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-rsshd_sandbox_check".into()),
        auth_rejection_time: std::time::Duration::ZERO,
        auth_rejection_time_initial: Some(std::time::Duration::ZERO),
        keys: vec![key],
        inactivity_timeout: None,
        keepalive_interval: None,
        nodelay: true,
        ..Default::default()
    });
    let authorized = Arc::new(authorized);
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| format!("accept: {e}"))?;
        let handler = Probe {
            authorized: Arc::clone(&authorized),
        };
        let config = Arc::clone(&config);
        tokio::spawn(async move {
            if let Ok(running) = russh::server::run_stream(config, stream, handler).await {
                let _ = running.await;
            }
        });
    }
}

struct Probe {
    authorized: Arc<PublicKey>,
}

impl russh::server::Handler for Probe {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.judge(offer.public_key))
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.judge(key.public_key))
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        let answer = match command.strip_prefix("probe ") {
            Some(name) => format!("probe {name}: {}\n", probe(name).await),
            None => "sandboxed-ok\n".to_string(),
        };
        session.channel_success(channel)?;
        session.data(channel, answer.into_bytes())?;
        session.exit_status_request(channel, 0)?;
        session.eof(channel)?;
        session.close(channel)
    }
}

impl Probe {
    fn judge(&self, key: &PublicKey) -> Auth {
        if key.key_data() == self.authorized.key_data() {
            Auth::Accept
        } else {
            Auth::reject()
        }
    }
}

/// Attempt, from inside the confined process, something the sandbox must stop;
/// the outcome in words (if the process survives it).
async fn probe(name: &str) -> String {
    fn outcome(r: libc::c_long) -> String {
        if r < 0 {
            format!("failed: {}", std::io::Error::last_os_error())
        } else {
            format!("SUCCEEDED ({r})")
        }
    }
    match name {
        "open" => {
            // SAFETY: a NUL-terminated literal path; the descriptor, should one
            // come back, is closed at once.
            let fd =
                unsafe { libc::open(c"/etc/shadow".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            close_if_open(fd);
            outcome(fd.into())
        }
        "open-dir" => {
            // SAFETY: as above.
            let fd = unsafe {
                libc::open(
                    c"/".as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            close_if_open(fd);
            outcome(fd.into())
        }
        "exec" => {
            let argv = [
                c"/bin/sh".as_ptr(),
                c"-c".as_ptr(),
                c"exit 0".as_ptr(),
                std::ptr::null(),
            ];
            let envp = [std::ptr::null()];
            // SAFETY: NUL-terminated path and NULL-terminated argv/envp arrays
            // that outlive the call. Should it succeed, the process becomes
            // /bin/sh: the test sees that as a failure of the sandbox.
            outcome(unsafe { libc::execve(argv[0], argv.as_ptr(), envp.as_ptr()) }.into())
        }
        "fork" => {
            // SAFETY: a child, should one be created, calls only _exit(2).
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: async-signal-safe exit of the child.
                unsafe { libc::_exit(0) };
            }
            outcome(pid.into())
        }
        // SAFETY (the raw system calls below): integer arguments only, no memory.
        "setuid" => outcome(unsafe { libc::syscall(libc::SYS_setuid, 0) }),
        "ptrace" => {
            outcome(unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_ATTACH, 1, 0, 0) })
        }
        "kill" => outcome(unsafe { libc::syscall(libc::SYS_kill, 1, 0) }),
        "socket" => {
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_socket,
                    libc::AF_INET,
                    libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                    0,
                )
            };
            close_if_open(fd as libc::c_int);
            outcome(fd)
        }
        "thread" => match std::thread::Builder::new().spawn(|| ()) {
            Ok(h) => {
                let _ = h.join();
                "SUCCEEDED".into()
            }
            Err(e) => format!("failed: {e}"),
        },
        "blocking" => {
            // More calls at once than warm threads: the rest must queue.
            let tasks: Vec<_> = (0..WARM_BLOCKING_THREADS * 2)
                .map(|i| {
                    tokio::task::spawn_blocking(move || {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        i
                    })
                })
                .collect();
            let mut done = 0;
            for t in tasks {
                if t.await.is_ok() {
                    done += 1;
                }
            }
            format!(
                "{done} of {} blocking calls done",
                WARM_BLOCKING_THREADS * 2
            )
        }
        other => format!("unknown probe {other}"),
    }
}

fn close_if_open(fd: libc::c_int) {
    if fd >= 0 {
        // SAFETY: `fd` was just returned to us by the kernel and nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}
