//! Starting the daemon, or one connection in inetd mode (`-i`): where logs go,
//! the PID file, and the hints a first run needs.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use rsshd::config::{LogLevel, Settings};
use rsshd::daemon::{self, ConfigSource, inetd, pidfile};
use rsshd::log::{self, Sink};

use super::{Args, error_text};

pub(super) fn run(args: &Args, source: ConfigSource, overrides: Vec<String>) -> ExitCode {
    // Decided here, once, before any thread exists that could switch identity:
    // defaults, access and the boundary all read this value from now on.
    rsshd::host::Privilege::current();
    if let Ok(Some(n)) = super::utmp_len(args) {
        rsshd::host::set_utmp_host_len(n);
    }
    let embedded = matches!(source, ConfigSource::Embedded);
    // LogLevel and SyslogFacility come from the config, so read it once before
    // logging starts; a config that does not load is reported when it is loaded
    // for real below.
    let (config_level, facility) = source
        .load(&overrides)
        .map(|(c, _)| (c.global().log_level, c.global().syslog_facility.clone()))
        .unwrap_or((LogLevel::Info, "AUTH".into()));
    let level = super::cli_log_level(args).unwrap_or(config_level);
    let sink = match sink(args, embedded) {
        Ok(s) => s,
        Err((path, e)) => {
            eprintln!("Couldn't open logfile {}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    if args.inetd {
        rsshd::daemon::activation::discard();
        return run_inetd(source, overrides, sink, level, &facility);
    }
    run_daemon(args, source, overrides, sink, level, &facility)
}

/// sshd's choice: `-E` appends to a file; `-e`, `-d` and `-D` on a terminal (not
/// under systemd) log to stderr, and so does the quick start; otherwise syslog.
/// Under `-i` only `-e`/`-E` move logs off syslog: stderr may be the connection.
fn sink(args: &Args, embedded: bool) -> Result<Sink, (PathBuf, std::io::Error)> {
    if let Some(p) = &args.log_file {
        return log::open_log_file(p)
            .map(Sink::File)
            .map_err(|e| (p.clone(), e));
    }
    let stderr = if args.inetd {
        args.stderr
    } else {
        args.stderr
            || args.debug > 0
            || embedded
            || args.no_detach && std::env::var_os("INVOCATION_ID").is_none()
    };
    Ok(if stderr {
        Sink::Stderr
    } else {
        Sink::Syslog(rsshd::host::syslog::CLIENT)
    })
}

fn run_daemon(
    args: &Args,
    source: ConfigSource,
    overrides: Vec<String>,
    sink: Sink,
    level: LogLevel,
    facility: &str,
) -> ExitCode {
    let to_stderr = matches!(sink, Sink::Stderr);
    // A root daemon runs as a monitor and a network process (daemon::split),
    // which logs where the monitor does.
    let split = daemon::split::wanted();
    log::init(sink, level, facility);
    tracing::debug!("rsshd version {}", super::version_line());
    let embedded = matches!(source, ConfigSource::Embedded);
    let foreground = args.no_detach || args.debug > 0 || embedded;
    let fail = |what: &str, e: anyhow::Error| {
        let text = format!("{what}: {}", error_text(&e));
        // Always on the terminal; in the log too when the log is elsewhere.
        eprintln!("rsshd: {text}");
        if !to_stderr {
            tracing::error!("{text}");
        }
        ExitCode::from(255)
    };
    let mut prepared = match daemon::prepare(source, overrides, Vec::new()) {
        Ok(p) => p,
        Err(e) => return fail("cannot start", e.into()),
    };
    // As sshd's -d: one connection, then exit.
    prepared.once = args.debug > 0;
    let settings = prepared.config.global().clone();
    if embedded {
        quick_start_hint(&prepared, &settings);
    }
    // The user who runs the quick start, or any unprivileged rsshd, is the only
    // one it can serve.
    if (embedded || !rsshd::host::Privilege::current().is_root())
        && let Some(hint) = authorized_keys_hint(&settings)
    {
        eprintln!("{hint}");
    }
    if let Some(why) = rsshd::host::accounting_off_reason() {
        tracing::info!("utmp accounting is off: {why}; w and who will not list rsshd sessions");
    }
    if !foreground && let Err(e) = nix::unistd::daemon(false, false) {
        return fail("daemon", e.into());
    }
    // sshd writes no PID file in debug mode.
    if args.debug == 0 {
        pidfile::start(settings.pid_file.as_deref());
    }
    raise_fd_limit();
    // After daemon(): the fork would not carry the thread over.
    rsshd::host::memory::start_trimmer();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail("tokio runtime", e.into()),
    };
    let result = if split {
        runtime.block_on(daemon::split::monitor::run(prepared, level))
    } else {
        runtime.block_on(daemon::run(prepared))
    };
    pidfile::finish();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("error", e.into()),
    }
}

fn run_inetd(
    source: ConfigSource,
    overrides: Vec<String>,
    sink: Sink,
    level: LogLevel,
    facility: &str,
) -> ExitCode {
    let keep_stderr = matches!(sink, Sink::Stderr);
    let stdio = match inetd::take_stdio(keep_stderr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rsshd: inetd mode: {e}");
            return ExitCode::from(255);
        }
    };
    log::init(sink, level, facility);
    tracing::debug!("rsshd version {}, inetd mode", super::version_line());
    let prepared = match inetd::prepare(&source, &overrides, &[]) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("cannot start: {}", error_text(&e.into()));
            return ExitCode::from(255);
        }
    };
    if let Some(why) = rsshd::host::accounting_off_reason() {
        tracing::debug!("utmp accounting is off: {why}");
    }
    // One connection: one thread is enough.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("tokio runtime: {e}");
            return ExitCode::from(255);
        }
    };
    let result = runtime.block_on(inetd::serve(prepared, stdio));
    // Work left on blocking threads (a PAM call, a utmp write) must not keep a
    // finished connection's process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(served) => ExitCode::from(served.exit_code()),
        Err(e) => {
            tracing::error!("inetd mode: {}", error_text(&e.into()));
            ExitCode::from(255)
        }
    }
}

/// What a newcomer needs on the terminal: how to connect, as whom (the real
/// account name: `$USER` may be empty, as for root in a container), with which
/// keys, and how to see sessions.
fn quick_start_hint(prepared: &daemon::Prepared, settings: &Settings) {
    let user = rsshd::host::current_user().ok();
    let keys = user
        .as_ref()
        .map(|u| {
            key_files(settings, u)
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "~/.ssh/authorized_keys".into());
    let user = user.map(|u| u.name).unwrap_or_else(|| "USER".into());
    let port = prepared
        .listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.port())
        .unwrap_or(2222);
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "rsshd".into());
    eprintln!(
        "rsshd: no config file ({}); running on built-in defaults (publickey logins only).\n\
         rsshd: connect with: ssh -p {port} {user}@127.0.0.1   (keys from {keys})",
        rsshd::paths::SYSTEM_CONFIG
    );
    // `-o ControlSocket` may have moved the socket (or turned it off).
    match settings.control_socket.path() {
        Some(p) if p == rsshd::paths::control_socket() => {
            eprintln!("rsshd: list sessions with: {me} sessions")
        }
        Some(p) => eprintln!(
            "rsshd: list sessions with: {me} sessions --socket {}",
            p.display()
        ),
        None => {}
    }
}

/// A hint when the user this rsshd can serve has no authorized key at all (every
/// `AuthorizedKeysFile` missing or without a key line), since publickey is then the
/// only way in and it cannot succeed.
fn authorized_keys_hint(settings: &Settings) -> Option<String> {
    if !settings.pubkey_authentication {
        return None;
    }
    let user = rsshd::host::current_user().ok()?;
    let files = key_files(settings, &user);
    if files.iter().any(|f| has_key_line(f)) {
        return None;
    }
    let first = files.first()?;
    Some(format!(
        "rsshd: {} has no authorized keys ({} has no key), so nobody can log in yet.\n\
         rsshd: add one: ssh-keygen -t ed25519   (if you have no key), then\n\
         rsshd:          cat ~/.ssh/id_ed25519.pub >> {}",
        user.name,
        first.display(),
        first.display()
    ))
}

/// `AuthorizedKeysFile` for `user`, expanded.
fn key_files(settings: &Settings, user: &rsshd::host::UserInfo) -> Vec<PathBuf> {
    settings
        .authorized_keys_file
        .iter()
        .filter(|p| !p.eq_ignore_ascii_case("none"))
        .map(|p| rsshd::host::expand_path(p, user))
        .collect()
}

/// Whether a file has a line that could be a key; bounded, as key files are small.
fn has_key_line(path: &std::path::Path) -> bool {
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut text = String::new();
    if f.take(1 << 20).read_to_string(&mut text).is_err() {
        return false;
    }
    text.lines().any(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#')
    })
}

/// Each connection holds its socket plus its sessions' PTYs and pipes; the usual
/// soft limit of 1024 would cap rsshd well below the connections it is built for,
/// so take what the hard limit allows. One user may have a quarter of it held for
/// them (`connection::limits`).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
            tracing::debug!("could not raise RLIMIT_NOFILE from {soft} to {hard}");
        } else {
            // Sessions get the limit they would have had under sshd.
            rsshd::host::spawn::set_session_nofile(soft, hard);
        }
    }
}
