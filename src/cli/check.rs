//! `-t` (check config and host keys), `-T` (the same, then print the effective
//! configuration) and `-G` (print it without looking at host keys, for use before
//! keys exist; OpenSSH 9.3's flag).

use std::process::ExitCode;

use rsshd::config::{Config, ConnSpec, dump};
use rsshd::daemon::{self, ConfigSource};
use rsshd::log::{self, Sink};

use super::Args;

pub(super) fn run(args: &Args, source: &ConfigSource, overrides: &[String]) -> ExitCode {
    log::init(
        Sink::Stderr,
        super::cli_log_level(args).unwrap_or(rsshd::config::LogLevel::Info),
        "AUTH",
    );
    let (config, warnings) = match source.load(overrides) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    for w in &warnings {
        eprintln!("{w}");
    }
    if (args.test || args.dump)
        && let Err(e) = check_host_keys(&config)
    {
        eprintln!("{e}");
        return ExitCode::from(1);
    }
    if !(args.dump || args.print_config) {
        return ExitCode::SUCCESS;
    }
    let settings = if args.spec.is_empty() {
        config.global().clone()
    } else {
        match ConnSpec::parse_cli(&args.spec.join(",")) {
            Ok(spec) => config.resolve(&spec),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        }
    };
    print!("{}", dump(&settings));
    ExitCode::SUCCESS
}

/// Every host key loads; the quick-start key that is generated on first start is
/// fine not to exist yet.
fn check_host_keys(config: &Config) -> Result<(), String> {
    let paths = daemon::host_key_paths(config, &[], false).map_err(|e| e.to_string())?;
    if config.generated_host_key().is_some_and(|p| !p.exists()) {
        // The quick-start key is created on first start; nothing to check yet.
        return Ok(());
    }
    let keys = daemon::hostkeys::load(&paths, config.global().host_key_agent.as_deref())
        .map_err(|e| e.to_string())?;
    daemon::algorithms::check_host_keys(&paths, &keys, config.global()).map_err(|e| e.to_string())
}
