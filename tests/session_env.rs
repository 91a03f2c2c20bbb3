//! With `AcceptEnv PATH SSH_* ...`, what a client sends must
//! not replace what the server sets. The same OpenSSH client, sending the same
//! variables, asks both rsshd and the reference `/usr/sbin/sshd` for `env`; the
//! two environments must be the same.

mod session_common;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use support::*;

use session_common::{RefSshd, SSHD};
const ACCEPT: &str = "AcceptEnv PATH SSH_* USER LOGNAME HOME SHELL MAIL TERM LANG RSSHD_*";

/// What the client sends, all of it hostile or at least not the server's.
const SENT: [(&str, &str); 12] = [
    ("PATH", "/evil/bin:/usr/bin:/bin"),
    ("SSH_ORIGINAL_COMMAND", "evil"),
    ("SSH_CONNECTION", "6.6.6.6 1 6.6.6.6 2"),
    ("SSH_CLIENT", "6.6.6.6 1 2"),
    ("SSH_TTY", "/dev/evil"),
    ("USER", "evil"),
    ("LOGNAME", "evil"),
    ("HOME", "/evil"),
    ("SHELL", "/evil/sh"),
    ("MAIL", "/evil/mail"),
    ("LANG", "C"),
    ("RSSHD_CLIENT", "sent"),
];

/// `env` as seen by `user` on `port`, asked for with `command` (none: shell) and
/// `-tt` if `tty`, the client sending every variable of [`SENT`].
fn env_seen(
    port: u16,
    key: &Path,
    user: &str,
    tty: bool,
    command: Option<&str>,
) -> BTreeMap<String, String> {
    let mut c = Command::new("ssh");
    c.args(client_opts(key));
    for (k, v) in SENT {
        c.env(k, v).args(["-o", &format!("SendEnv={k}")]);
    }
    if tty {
        c.arg("-tt");
    }
    c.args(["-p", &port.to_string()])
        .arg(format!("{user}@127.0.0.1"));
    if let Some(cmd) = command {
        c.arg(cmd);
    }
    let o = run_with_input(&mut c, b"");
    let text = String::from_utf8_lossy(&o.stdout).replace('\r', "");
    assert!(
        o.status.success(),
        "ssh to port {port} failed: {}{}",
        text,
        String::from_utf8_lossy(&o.stderr)
    );
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), normalise(k, v)))
        .collect()
}

/// What legitimately differs between two servers: ports and PTY numbers.
fn normalise(name: &str, value: &str) -> String {
    match name {
        // "rip rport lport" and "rip rport lip lport": every number is a port.
        "SSH_CLIENT" | "SSH_CONNECTION" => value
            .split(' ')
            .map(|w| if w.parse::<u16>().is_ok() { "PORT" } else { w })
            .collect::<Vec<_>>()
            .join(" "),
        "SSH_TTY" if value.starts_with("/dev/pts/") => "/dev/pts/N".into(),
        _ => value.to_string(),
    }
}

#[test]
fn client_variables_never_replace_the_servers_and_match_sshd() {
    compare_with_sshd(false);
}

/// The same with PAM sessions: PAM's variables (pam_env, pam_motd) go where sshd
/// puts them, under the connection's own.
#[test]
fn with_pam_the_environment_still_matches_sshd() {
    compare_with_sshd(true);
}

fn compare_with_sshd(use_pam: bool) {
    if skip_without(&["ssh", "ssh-keygen", SSHD]) || skip_unless_root_with(TEST_USER) {
        return;
    }
    if use_pam && let Err(e) = rsshd::host::pam::available() {
        skip(&e);
        return;
    }
    let pam = if use_pam { "yes" } else { "no" };
    // A forced `env`, so that SSH_ORIGINAL_COMMAND is the server's business.
    let srv = Server::start_with_keys(&format!("{ACCEPT}\nUsePAM {pam}"), Some("command=\"env\""));
    let pam = if use_pam { "yes" } else { "no" };
    let reference = RefSshd::start(
        &srv.dir,
        &srv.dir.join("authorized_keys"),
        &format!("UsePAM {pam}\n{ACCEPT}"),
    );
    for (tty, command) in [(false, Some("asked")), (true, Some("asked")), (true, None)] {
        let ours = env_seen(srv.port, &srv.client_key, TEST_USER, tty, command);
        let theirs = env_seen(reference.port, &srv.client_key, TEST_USER, tty, command);
        assert_eq!(
            ours, theirs,
            "UsePAM {pam}, tty {tty}, command {command:?}: rsshd (left) and sshd (right) differ"
        );
        // And the point of it, said plainly.
        assert_eq!(ours.get("USER").map(String::as_str), Some(TEST_USER));
        assert_ne!(ours.get("PATH").map(String::as_str), Some(SENT[0].1));
        assert_eq!(ours.get("RSSHD_CLIENT").map(String::as_str), Some("sent"));
        if command.is_some() {
            assert_eq!(
                ours.get("SSH_ORIGINAL_COMMAND").map(String::as_str),
                Some("asked")
            );
        }
        if tty {
            assert_eq!(ours.get("SSH_TTY").map(String::as_str), Some("/dev/pts/N"));
        }
    }
}
