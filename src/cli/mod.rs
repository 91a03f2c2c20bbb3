//! sshd's command line (OpenSSH 9.x, every flag with its meaning) plus rsshd's
//! admin commands, and the dispatch to daemon, inetd mode, `-t`, `-T` and `-G`.

mod admin;
mod check;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use rsshd::config::LogLevel;
use rsshd::daemon::ConfigSource;

/// rsshd: an OpenSSH-compatible SSH server that ends idle sessions on time.
///
/// The flags are sshd's (sshd(8)); `-h` names a host key, so help is `--help`.
#[derive(Parser, Debug)]
#[command(
    name = "rsshd",
    disable_help_flag = true,
    disable_version_flag = true,
    override_usage = "rsshd [-46DdeGiqrTtV] [-C connection_spec] [-c host_cert_file]\n             \
                      [-E log_file] [-f config_file] [-g login_grace_time]\n             \
                      [-h host_key_file] [-o option] [-p port] [-u len]\n       \
                      rsshd sessions [--json] | rsshd kill ID [--reason TEXT]"
)]
pub(crate) struct Args {
    /// Listen on IPv4 addresses only (AddressFamily inet).
    #[arg(short = '4')]
    inet4: bool,
    /// Listen on IPv6 addresses only (AddressFamily inet6).
    #[arg(short = '6')]
    inet6: bool,
    /// Connection spec for -T/-G: user=,host=,addr=,laddr=,lport= (may be repeated).
    #[arg(short = 'C', value_name = "connection_spec")]
    spec: Vec<String>,
    /// Host certificate file, as a HostCertificate line would name it.
    #[arg(short = 'c', value_name = "host_certificate_file")]
    host_certs: Vec<PathBuf>,
    /// Do not detach; stay in the foreground.
    #[arg(short = 'D')]
    no_detach: bool,
    /// Debug mode: foreground, debug logs on stderr (-dd, -ddd: more verbose).
    #[arg(short = 'd', action = clap::ArgAction::Count)]
    debug: u8,
    /// Append logs to this file instead of syslog.
    #[arg(short = 'E', value_name = "log_file")]
    log_file: Option<PathBuf>,
    /// Log to stderr instead of syslog.
    #[arg(short = 'e')]
    stderr: bool,
    /// Configuration file (default /etc/rsshd/sshd_config, else built-in defaults).
    #[arg(short = 'f', value_name = "config_file")]
    config: Option<PathBuf>,
    /// Print the effective configuration without checking host keys, then exit.
    #[arg(short = 'G')]
    print_config: bool,
    /// LoginGraceTime: seconds (or a time like 2m) to authenticate in.
    #[arg(short = 'g', value_name = "login_grace_time")]
    grace: Option<String>,
    /// Host key file (may be repeated).
    #[arg(short = 'h', value_name = "host_key_file")]
    host_keys: Vec<PathBuf>,
    /// Inetd mode: serve one connection on stdin/stdout (inetd, systemd Accept=yes).
    #[arg(short = 'i')]
    inetd: bool,
    /// Obsolete (SSH protocol 1 key regeneration time): accepted and ignored.
    #[arg(short = 'k', value_name = "key_gen_time")]
    key_gen_time: Option<String>,
    /// Obsolete (SSH protocol 1 server key bits): accepted and ignored.
    #[arg(short = 'b', value_name = "bits", hide = true)]
    bits: Option<String>,
    /// A config line, as in the file ('Keyword value'); may be repeated.
    #[arg(short = 'o', value_name = "option")]
    options: Vec<String>,
    /// Listen on this port (overrides Port in the config); may be repeated.
    #[arg(short = 'p', value_name = "port")]
    port: Vec<u16>,
    /// Quiet: log nothing (LogLevel QUIET).
    #[arg(short = 'q')]
    quiet: bool,
    /// Ignored (sshd's "no re-exec"); rsshd never re-executes itself.
    #[arg(short = 'r')]
    no_rexec: bool,
    /// Ignored, as by sshd.
    #[arg(short = 'Q', hide = true)]
    q_ignored: bool,
    /// Extended test mode: check config and host keys, print the effective config.
    #[arg(short = 'T')]
    dump: bool,
    /// Test mode: check the config and host keys, then exit.
    #[arg(short = 't')]
    test: bool,
    /// utmp host field length: longer host names are recorded as addresses
    /// (-u0: always addresses).
    #[arg(short = 'u', value_name = "len")]
    utmp_len: Option<String>,
    /// Print the version and exit.
    #[arg(short = 'V', long = "version")]
    version: bool,
    /// Print help (also after `sessions` and `kill`).
    #[arg(long = "help", action = clap::ArgAction::Help, global = true)]
    help: Option<bool>,
    #[command(subcommand)]
    admin: Option<admin::Admin>,
}

/// The russh this build uses (pinned in Cargo.toml; a test checks Cargo.lock).
const RUSSH_VERSION: &str = "0.65.1";

/// sshd's `-V` line (`OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.17`), for rsshd:
/// its own name and version, and the SSH library and crypto backend it is built on.
fn version_line() -> String {
    format!(
        "rsshd_{}, russh {RUSSH_VERSION} (aws-lc-rs)",
        env!("CARGO_PKG_VERSION")
    )
}

/// Exit status for command-line and startup errors, as sshd: 1 for bad usage.
const USAGE_EXIT: u8 = 1;

pub(crate) fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp => ExitCode::SUCCESS,
                _ => ExitCode::from(USAGE_EXIT),
            };
        }
    };
    // First, while this is the only thread: take sockets passed for socket
    // activation (and unset the variables that passed them).
    if let Err(e) = rsshd::daemon::activation::adopt() {
        eprintln!("rsshd: socket activation: {e}");
        return ExitCode::from(255);
    }
    if args.version {
        // sshd prints it on stderr.
        eprintln!("{}", version_line());
        return ExitCode::SUCCESS;
    }
    let source = ConfigSource::choose(args.config.clone());
    if let Some(admin) = &args.admin {
        rsshd::daemon::activation::discard();
        return admin::run(admin, &source, &args.options);
    }
    let overrides = match overrides(&args) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(USAGE_EXIT);
        }
    };
    if args.key_gen_time.is_some() || args.bits.is_some() {
        eprintln!("rsshd: -k and -b are obsolete (SSH protocol 1) and are ignored");
    }
    if args.test || args.dump || args.print_config {
        rsshd::daemon::activation::discard();
        return check::run(&args, &source, &overrides);
    }
    if !args.spec.is_empty() {
        eprintln!("Config test connection parameter (-C) provided without test mode (-T)");
        return ExitCode::from(255);
    }
    serve::run(&args, source, overrides)
}

/// Flags that are config lines in disguise, as `-o` lines (which, like sshd's
/// command-line values, come first and so win): `-p`, `-4`/`-6`, `-c`, `-g`.
/// `-u` is validated here too. Errors are sshd's messages.
fn overrides(args: &Args) -> Result<Vec<String>, String> {
    let mut o: Vec<String> = args.port.iter().map(|p| format!("Port {p}")).collect();
    match (args.inet4, args.inet6) {
        (true, false) => o.push("AddressFamily inet".into()),
        (false, true) => o.push("AddressFamily inet6".into()),
        // sshd: the last of -4/-6 wins; clap does not keep their order, so
        // refuse the ambiguous pair rather than guess.
        (true, true) => return Err("-4 and -6 cannot be combined".into()),
        (false, false) => {}
    }
    // As sshd: -h is a HostKey line ahead of the file, so that a -h key takes the
    // place of sshd's default keys instead of joining them.
    for key in &args.host_keys {
        o.push(format!("HostKey {}", quoted(key)));
    }
    for cert in &args.host_certs {
        o.push(format!("HostCertificate {}", quoted(cert)));
    }
    if let Some(g) = &args.grace {
        if rsshd::config::parse_time(g).is_none() {
            return Err("Invalid login grace time.".into());
        }
        o.push(format!("LoginGraceTime {g}"));
    }
    utmp_len(args)?;
    o.extend(args.options.iter().cloned());
    Ok(o)
}

/// A path as one config-file argument: quoted, with `\\` and `"` escaped.
fn quoted(p: &std::path::Path) -> String {
    let s = p.to_string_lossy();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `-u len`, checked as sshd does (0 to HOST_NAME_MAX + 1).
fn utmp_len(args: &Args) -> Result<Option<usize>, String> {
    let Some(u) = &args.utmp_len else {
        return Ok(None);
    };
    match u.parse::<usize>() {
        Ok(n) if n <= rsshd::host::DEFAULT_UTMP_HOST_LEN => Ok(Some(n)),
        _ => Err("Invalid utmp length.".into()),
    }
}

/// sshd's LogLevel from the command line, which wins over the config's: `-d`
/// (repeated: more), `-q`.
fn cli_log_level(args: &Args) -> Option<LogLevel> {
    match args.debug {
        0 if args.quiet => Some(LogLevel::Quiet),
        0 => None,
        1 => Some(LogLevel::Debug1),
        2 => Some(LogLevel::Debug2),
        _ => Some(LogLevel::Debug3),
    }
}

/// An error chain as one line, each cause once: a cause whose text the message
/// already shows (thiserror messages often embed their source) is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn russh_version_matches_the_lock_file() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
            .expect("Cargo.lock");
        let entry = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"russh\"\n"))
            .expect("russh in Cargo.lock");
        assert!(
            entry.contains(&format!("version = \"{RUSSH_VERSION}\"")),
            "-V would name the wrong russh: {entry}"
        );
    }

    #[test]
    fn chained_errors_print_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        #[derive(Debug, thiserror::Error)]
        #[error("/x: could not load: {source}")]
        struct Embeds {
            source: std::io::Error,
        }
        let e = anyhow::Error::new(Embeds { source: io }).context("cannot start");
        assert_eq!(
            error_text(&e),
            "cannot start: /x: could not load: No such file"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&plain), "outer: inner");
    }

    #[test]
    fn flags_that_are_config_lines() {
        let args = Args::try_parse_from([
            "rsshd",
            "-4",
            "-p",
            "2200",
            "-g",
            "30s",
            "-c",
            "/etc/cert.pub",
            "-o",
            "IdleTimeout 5m",
        ])
        .unwrap();
        assert_eq!(
            overrides(&args).unwrap(),
            vec![
                "Port 2200",
                "AddressFamily inet",
                "HostCertificate \"/etc/cert.pub\"",
                "LoginGraceTime 30s",
                "IdleTimeout 5m"
            ]
        );
        let bad = Args::try_parse_from(["rsshd", "-g", "soon"]).unwrap();
        assert_eq!(overrides(&bad).unwrap_err(), "Invalid login grace time.");
        let bad = Args::try_parse_from(["rsshd", "-u", "66"]).unwrap();
        assert_eq!(overrides(&bad).unwrap_err(), "Invalid utmp length.");
        let dd = Args::try_parse_from(["rsshd", "-dd", "-q"]).unwrap();
        assert_eq!(cli_log_level(&dd), Some(LogLevel::Debug2));
        let q = Args::try_parse_from(["rsshd", "-q"]).unwrap();
        assert_eq!(cli_log_level(&q), Some(LogLevel::Quiet));
    }
}
