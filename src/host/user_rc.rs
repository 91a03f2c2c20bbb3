//! `~/.ssh/rc` and `/etc/ssh/sshrc`, run as sshd's `do_rc_files` runs them: in the
//! session's own process, already the user (identity, environment, working
//! directory and terminal of the session), just before the shell or command.
//!
//! The session's program is started as this same binary with [`RC_ARG`] (the launch
//! has switched identity before exec, so everything below runs as the user and
//! opens the user's file with the user's rights). It runs the rc file, waits for it,
//! and then execs the real program in place, keeping the session's pid. Which file:
//! the user's when allowed (`PermitUserRC`, no `no-user-rc`/`restrict` key option,
//! no subsystem, no `ForceCommand`) and present; else the system one if present.
//! As in sshd, the user's file is run as `SHELL -c '/bin/sh FILE'` through
//! `/bin/sh`, the system one as `/bin/sh FILE`, each with standard input at end of
//! file (sshd's popen pipe with no X11 data written), output to the session's.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The first argument that makes this binary the rc runner.
pub const RC_ARG: &str = "__session-rc";

/// sshd's `_PATH_SSH_SYSTEM_RC`.
pub(crate) const SYSTEM_RC: &str = "/etc/ssh/sshrc";

/// The user's rc file (sshd's `_PATH_SSH_USER_RC` under the home directory).
pub(crate) fn user_rc(home: &Path) -> PathBuf {
    home.join(".ssh/rc")
}

/// The argv that runs `program` (`argv0`, `args`) after the rc files:
/// `[RC_ARG, user|system, home, shell, program, argv0, args...]` after our own
/// argv0. Plain strings, as the launch takes them.
pub(crate) fn wrap(
    user_allowed: bool,
    home: &Path,
    shell: &Path,
    program: &Path,
    argv0: &str,
    args: &[String],
) -> Vec<String> {
    let mut v = vec![
        "rsshd".to_string(),
        RC_ARG.to_string(),
        if user_allowed { "user" } else { "system" }.to_string(),
        home.to_string_lossy().into_owned(),
        shell.to_string_lossy().into_owned(),
        program.to_string_lossy().into_owned(),
        argv0.to_string(),
    ];
    v.extend(args.iter().cloned());
    v
}

/// Whether a session needs the runner: some rc file might run. Checked from the
/// daemon by a plain `stat` (the runner checks again as the user), so that a
/// session with no rc file costs nothing extra; a home the daemon cannot look
/// into counts as "might".
pub(crate) fn may_run(user_allowed: bool, home: &Path) -> bool {
    let present = |p: &Path| match std::fs::symlink_metadata(p) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    };
    (user_allowed && present(&user_rc(home))) || Path::new(SYSTEM_RC).exists()
}

/// The runner's main: run the rc file, then become the program. Returns only on
/// failure (an exit status).
pub fn rc_main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(2).collect();
    let [mode, home, shell, program, argv0, rest @ ..] = &args[..] else {
        eprintln!("rsshd: {RC_ARG} is internal to rsshd");
        return 2;
    };
    let home = Path::new(home);
    let rc = user_rc(home);
    // sshd: stat(2) as the user; any result but success means "no file".
    let command = if mode == "user" && std::fs::metadata(&rc).is_ok() {
        let mut text = shell.as_bytes().to_vec();
        text.extend_from_slice(b" -c '/bin/sh ");
        text.extend_from_slice(rc.as_os_str().as_bytes());
        text.push(b'\'');
        Some(OsString::from(std::ffi::OsStr::from_bytes(&text)))
    } else if std::fs::metadata(SYSTEM_RC).is_ok() {
        Some(OsString::from(format!("/bin/sh {SYSTEM_RC}")))
    } else {
        None
    };
    if let Some(command) = command {
        let run = Command::new("/bin/sh")
            .arg("-c")
            .arg(&command)
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                // No X11 data to give it: end of file at once, as sshd's pclose.
                drop(child.stdin.take());
                child.wait()
            });
        if let Err(e) = run {
            eprintln!("Could not run {}: {e}", command.to_string_lossy());
        }
    }
    let err = Command::new(program).arg0(argv0).args(rest).exec();
    eprintln!("rsshd: exec {}: {err}", Path::new(program).display());
    1
}
