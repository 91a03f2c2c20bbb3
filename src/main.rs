//! The binary's edge: command-line flags to daemon, `-t`, or `-T`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use rsshd::config::{ConnSpec, dump};
use rsshd::daemon::{self, ConfigSource};
use rsshd::log::{self, Sink};

/// rsshd: an OpenSSH-compatible SSH server that ends idle sessions on time.
#[derive(Parser, Debug)]
#[command(name = "rsshd", version, disable_help_flag = true)]
struct Args {
    /// Do not detach; stay in the foreground.
    #[arg(short = 'D')]
    no_detach: bool,
    /// Debug mode: foreground, verbose logs on stderr.
    #[arg(short = 'd')]
    debug: bool,
    /// Log to stderr instead of syslog.
    #[arg(short = 'e')]
    stderr: bool,
    /// Configuration file (default /etc/rsshd/sshd_config, else built-in defaults).
    #[arg(short = 'f', value_name = "config_file")]
    config: Option<PathBuf>,
    /// Listen on this port (overrides Port in the config).
    #[arg(short = 'p', value_name = "port")]
    port: Vec<u16>,
    /// Host key file (may be repeated).
    #[arg(short = 'h', value_name = "host_key_file")]
    host_keys: Vec<PathBuf>,
    /// A config line, as in the file ('Keyword value'); may be repeated.
    #[arg(short = 'o', value_name = "option")]
    options: Vec<String>,
    /// Test mode: check the config and host keys, then exit.
    #[arg(short = 't')]
    test: bool,
    /// Extended test mode: print the effective configuration and exit.
    #[arg(short = 'T')]
    dump: bool,
    /// Connection spec for -T: user=,host=,addr=,laddr=,lport=
    #[arg(short = 'C', value_name = "connection_spec")]
    spec: Option<String>,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(subcommand)]
    admin: Option<Admin>,
}

/// Talking to a running daemon over its control socket.
#[derive(clap::Subcommand, Debug)]
enum Admin {
    /// List live sessions, like `w`.
    Sessions {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// The control socket (default: ControlSocket from the config, else
        /// /run/rsshd.sock as root or the state directory otherwise).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// End a session now, showing the reason to its user.
    Kill {
        /// The session ID from `rsshd sessions`.
        id: u64,
        /// The text shown to the user and logged.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Before anything opens a descriptor: 0-2 open, and everything inherited
    // from 3 up close-on-exec (kept open for systemd socket activation).
    rsshd::host::fds::sanitize_at_start();
    // The PAM session helper is this same binary; it must not parse our flags.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == rsshd::host::pam::HELPER_ARG)
    {
        std::process::exit(rsshd::host::pam::helper_main());
    }
    let args = Args::parse();
    match real_main(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rsshd: {e:#}");
            ExitCode::from(255)
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<ExitCode> {
    let source = ConfigSource::choose(args.config.clone());
    if let Some(admin) = &args.admin {
        return run_admin(admin, &source, &args.options);
    }
    let mut overrides: Vec<String> = args.port.iter().map(|p| format!("Port {p}")).collect();
    overrides.extend(args.options.iter().cloned());

    if args.test || args.dump {
        log::init(Sink::Stderr, args.debug);
        let (config, warnings) = match source.load(&overrides) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(1));
            }
        };
        for w in &warnings {
            eprintln!("{w}");
        }
        if args.test {
            let paths = daemon::host_key_paths(config.global(), &args.host_keys, false)?;
            let generated = config.global().host_key.is_empty() && args.host_keys.is_empty();
            if generated && !paths[0].exists() {
                // The quick-start key is created on first start; nothing to check yet.
                return Ok(ExitCode::SUCCESS);
            }
            if let Err(e) = daemon::hostkeys::load(&paths) {
                eprintln!("{e}");
                return Ok(ExitCode::from(1));
            }
            return Ok(ExitCode::SUCCESS);
        }
        let settings = match &args.spec {
            Some(spec) => {
                let spec = match ConnSpec::parse_cli(spec) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("{e}");
                        return Ok(ExitCode::from(1));
                    }
                };
                config.resolve(&spec)
            }
            None => config.global().clone(),
        };
        print!("{}", dump(&settings));
        return Ok(ExitCode::SUCCESS);
    }

    let embedded = matches!(source, ConfigSource::Embedded);
    let foreground = args.no_detach || args.debug || embedded;
    let sink = if args.stderr
        || args.debug
        || embedded
        || args.no_detach && std::env::var_os("INVOCATION_ID").is_none()
    {
        Sink::Stderr
    } else {
        Sink::Syslog
    };
    log::init(sink, args.debug);
    let prepared =
        daemon::prepare(source, overrides, args.host_keys.clone()).context("cannot start")?;
    if embedded {
        let user = rsshd::host::current_user()
            .map(|u| u.name)
            .unwrap_or_else(|_| "USER".into());
        let port = prepared
            .listeners
            .first()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
            .unwrap_or(2222);
        eprintln!(
            "rsshd: no config file ({}); running on built-in defaults.\n\
             rsshd: connect with: ssh -p {port} {user}@127.0.0.1   (keys from ~/.ssh/authorized_keys)",
            rsshd::paths::SYSTEM_CONFIG
        );
    }
    if !foreground {
        nix::unistd::daemon(false, false).context("daemon")?;
    }
    if let Some(pid_file) = &prepared.config.global().pid_file
        && let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id()))
    {
        tracing::error!("Couldn't create pid file \"{}\": {e}", pid_file.display());
    }
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let pid_file = prepared.config.global().pid_file.clone();
    let result = runtime.block_on(daemon::run(prepared));
    if let Some(p) = pid_file {
        let _ = std::fs::remove_file(p);
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The control socket a client should use: `--socket`, else the config's
/// `ControlSocket`, else the built-in place.
fn socket_for(explicit: &Option<PathBuf>, source: &ConfigSource, overrides: &[String]) -> PathBuf {
    if let Some(p) = explicit {
        return p.clone();
    }
    source
        .load(overrides)
        .ok()
        .and_then(|(c, _)| c.global().control_socket.clone())
        .unwrap_or_else(rsshd::admin::server::default_socket_path)
}

fn run_admin(
    admin: &Admin,
    source: &ConfigSource,
    overrides: &[String],
) -> anyhow::Result<ExitCode> {
    use rsshd::admin::client;
    use rsshd::admin::protocol::Command;
    match admin {
        Admin::Sessions { json, socket } => {
            let path = socket_for(socket, source, overrides);
            let resp = client::request(&path, Command::List)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&resp.sessions)?);
            } else {
                print!("{}", client::table(&resp.sessions));
            }
        }
        Admin::Kill { id, reason, socket } => {
            let path = socket_for(socket, source, overrides);
            client::request(
                &path,
                Command::Kill {
                    id: *id,
                    reason: reason.clone(),
                },
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Each connection holds two descriptors (its socket and the duplicate used for a
/// hard close) plus its sessions' PTYs and pipes; the usual soft limit of 1024 would
/// cap rsshd near 500 connections, so take what the hard limit allows.
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
