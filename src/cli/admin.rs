//! `rsshd sessions` and `rsshd kill`: talking to a running daemon over its control
//! socket.

use std::path::PathBuf;
use std::process::ExitCode;

use rsshd::admin::client;
use rsshd::admin::protocol::Command;
use rsshd::daemon::ConfigSource;

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Admin {
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
        /// The control socket (as for `sessions`).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

pub(super) fn run(admin: &Admin, source: &ConfigSource, overrides: &[String]) -> ExitCode {
    match request(admin, source, overrides) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rsshd: {}", super::error_text(&e));
            ExitCode::from(255)
        }
    }
}

fn request(admin: &Admin, source: &ConfigSource, overrides: &[String]) -> anyhow::Result<()> {
    match admin {
        Admin::Sessions { json, socket } => {
            let path = socket_for(socket, source, overrides)?;
            let resp = client::request(&path, Command::List)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&resp.sessions)?);
            } else {
                print!("{}", client::table(&resp.sessions));
            }
        }
        Admin::Kill { id, reason, socket } => {
            let path = socket_for(socket, source, overrides)?;
            client::request(
                &path,
                Command::Kill {
                    id: *id,
                    reason: reason.clone(),
                },
            )?;
        }
    }
    Ok(())
}

/// The control socket a client should use: `--socket`, else the config's
/// `ControlSocket`, else the built-in place. An error if the config turns it off.
fn socket_for(
    explicit: &Option<PathBuf>,
    source: &ConfigSource,
    overrides: &[String],
) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.clone());
    }
    let configured = source
        .load(overrides)
        .ok()
        .map(|(c, _)| c.global().control_socket.clone())
        .unwrap_or_default();
    configured.path().ok_or_else(|| {
        anyhow::anyhow!(
            "the config sets ControlSocket none: the daemon has no control socket (--socket PATH names one)"
        )
    })
}
