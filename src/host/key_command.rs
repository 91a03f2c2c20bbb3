//! `AuthorizedKeysCommand` and `AuthorizedPrincipalsCommand`, run as sshd runs them
//! (misc.c `subprocess`, auth2-pubkey.c): the command line split like a shell word
//! list, sshd's `%` tokens expanded in each word, the program checked (an absolute
//! path, owned by root or the run-as user, no component writable by others), run as
//! the `*CommandUser` (never as root by default: without one the command is skipped)
//! with sshd's minimal environment, stdin from /dev/null. What it prints is read as
//! an authorized_keys or principals file by the caller.
//!
//! Unlike sshd, the run is bounded: past `DEADLINE` or `CAP` bytes of output the
//! command is killed and its answer ignored (fewer logins, never more), and its
//! stderr goes to the log instead of /dev/null.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::users::lookup_user;

/// A configured command and the account it runs as.
#[derive(Debug, Clone)]
pub struct KeyCommand {
    /// The configured line, `%` tokens not yet expanded.
    pub command: String,
    /// `AuthorizedKeysCommandUser` / `AuthorizedPrincipalsCommandUser`.
    pub user: Option<String>,
}

/// How long a command may run. sss_ssh_authorizedkeys answers from its cache in
/// milliseconds and from LDAP within its own 10 s timeout; past this the login is
/// better refused than held until LoginGraceTime.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// The most output read: as much as an authorized_keys file may hold.
pub(crate) const CAP: u64 = 4 << 20;

/// The most stderr kept for the log.
const STDERR_CAP: u64 = 16 << 10;

/// Split a command line as sshd's `argv_split` does: words separated by blanks,
/// single or double quotes group, a backslash escapes a quote, a blank or itself.
/// `None` for an unterminated quote.
pub(crate) fn split(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) if matches!(chars.peek(), Some('\'' | '"' | '\\' | ' ' | '\t')) => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (' ' | '\t', None) => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            ('\'' | '"', None) => {
                quote = Some(c);
                in_word = true;
            }
            (q, Some(open)) if q == open => quote = None,
            (other, _) => {
                cur.push(other);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return None;
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

/// sshd's `safe_path` for a program run as root's choice: the file and every
/// directory above it owned by root (or `uid`) and writable by neither group nor
/// others.
fn safe_program(path: &Path, uid: u32) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let ok = |m: &std::fs::Metadata| (m.uid() == 0 || m.uid() == uid) && m.mode() & 0o022 == 0;
    if !ok(&meta) {
        return Err(format!(
            "bad ownership or modes for file {}",
            path.display()
        ));
    }
    let real = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
    for dir in real.ancestors().skip(1) {
        let m = std::fs::metadata(dir).map_err(|e| e.to_string())?;
        if !ok(&m) {
            return Err(format!(
                "bad ownership or modes for directory {}",
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Run `cmd` (sshd's `tag` names it in log lines) with `tokens`; its standard
/// output if it ran to a clean exit, else `None` (logged in sshd's words).
pub(crate) async fn run(tag: &str, cmd: &KeyCommand, tokens: &[(char, String)]) -> Option<Vec<u8>> {
    let Some(name) = &cmd.user else {
        tracing::error!("No user for {tag} specified, skipping");
        return None;
    };
    let runas = match lookup_user(name) {
        Ok(Some(u)) => u,
        Ok(None) => {
            tracing::error!("{tag}User \"{name}\" not found: No such user");
            return None;
        }
        Err(e) => {
            tracing::error!("{tag}User \"{name}\" not found: {e}");
            return None;
        }
    };
    let Some(words) = split(&cmd.command) else {
        tracing::error!("{tag} \"{}\" contains invalid quotes", cmd.command);
        return None;
    };
    if words.is_empty() {
        tracing::error!("{tag} \"{}\" yielded no arguments", cmd.command);
        return None;
    }
    let mut argv = Vec::with_capacity(words.len());
    for w in &words {
        match crate::percent::percent_expand(w, tokens) {
            Ok(v) => argv.push(v),
            Err(e) => {
                tracing::error!("{tag} \"{}\": percent_expand: {e}", cmd.command);
                return None;
            }
        }
    }
    let program = Path::new(&argv[0]);
    if !program.is_absolute() {
        tracing::error!("{tag} path is not absolute");
        return None;
    }
    if let Err(e) = std::fs::metadata(program) {
        tracing::error!("Could not stat {tag} \"{}\": {e}", program.display());
        return None;
    }
    if let Err(e) = safe_program(program, 0) {
        tracing::error!("Unsafe {tag} \"{}\": {e}", program.display());
        return None;
    }
    let mut c = tokio::process::Command::new(program);
    c.args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .env("USER", &runas.name)
        .env("LOGNAME", &runas.name)
        .env("HOME", &runas.home)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that what it started dies with it when it
        // is cut off (a shell script's `ldapsearch | ...` would otherwise
        // outlive it, holding the pipe).
        .process_group(0)
        .kill_on_drop(true);
    if let Ok(lang) = std::env::var("LANG") {
        c.env("LANG", lang);
    }
    let (uid, gid, gids) = (runas.uid, runas.gid, runas.gids.clone());
    let me = nix::unistd::geteuid().as_raw();
    if me == 0 || uid != me {
        // SAFETY: runs in the forked child before exec; setgroups, setgid and
        // setuid are plain system calls (async-signal-safe), and the closure only
        // reads values moved into it: no allocation, no locks.
        unsafe {
            c.pre_exec(move || {
                let groups: &[libc::gid_t] = &gids;
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            tracing::error!("{tag}: exec {}: {e}", program.display());
            return None;
        }
    };
    let group = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return None;
    };
    let work = async {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let (mut out, mut err) = (out.take(CAP + 1), err.take(STDERR_CAP));
        let (a, b) = {
            let read_out = out.read_to_end(&mut stdout);
            let read_err = err.read_to_end(&mut stderr);
            tokio::pin!(read_out, read_err);
            let mut b = None;
            let a = loop {
                tokio::select! {
                    r = &mut read_out => break r,
                    r = &mut read_err, if b.is_none() => b = Some(r),
                }
            };
            // Past the cap the command is cut off at once: a flooding
            // command keeps its stderr open while it blocks on the full
            // stdout pipe, so waiting for that would wait out DEADLINE.
            let over = matches!(a, Ok(n) if n as u64 > CAP);
            if b.is_none() && !over {
                b = Some(read_err.await);
            }
            (a, b.unwrap_or(Ok(0)))
        };
        (a.map(|_| stdout), b.map(|_| stderr))
    };
    let (stdout, stderr) = match tokio::time::timeout(DEADLINE, work).await {
        Ok(r) => r,
        Err(_) => {
            end(&mut child, group).await;
            tracing::error!(
                "{tag} {} timed out after {}s; killed",
                cmd.command,
                DEADLINE.as_secs()
            );
            return None;
        }
    };
    if let Ok(e) = &stderr {
        for line in String::from_utf8_lossy(e).lines().filter(|l| !l.is_empty()) {
            tracing::info!("{tag} {}: {line}", argv[0]);
        }
    }
    let stdout = match stdout {
        Ok(s) if s.len() as u64 <= CAP => s,
        Ok(_) => {
            end(&mut child, group).await;
            tracing::error!(
                "{tag} {}: more than {CAP} bytes of output; ignored",
                cmd.command
            );
            return None;
        }
        Err(e) => {
            tracing::error!("{tag} {}: read: {e}", cmd.command);
            return None;
        }
    };
    let status = match tokio::time::timeout(DEADLINE, child.wait()).await {
        Ok(Ok(s)) => s,
        _ => {
            end(&mut child, group).await;
            tracing::error!("{tag} {} did not exit; killed", cmd.command);
            return None;
        }
    };
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        tracing::error!("{tag} {} exited on signal {sig}", cmd.command);
        return None;
    }
    if status.code() != Some(0) {
        tracing::error!(
            "{tag} {} failed, status {}",
            cmd.command,
            status.code().unwrap_or(255)
        );
        return None;
    }
    Some(stdout)
}

/// Kill a command cut off, and everything in its process group, and reap it.
async fn end(child: &mut tokio::process::Child, group: Option<nix::unistd::Pid>) {
    if let Some(g) = group {
        let _ = nix::sys::signal::killpg(g, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_tokens() {
        assert_eq!(
            split(r#"/usr/bin/x -u "%u here" 'a b' c\ d"#),
            Some(vec![
                "/usr/bin/x".to_string(),
                "-u".into(),
                "%u here".into(),
                "a b".into(),
                "c d".into()
            ])
        );
        assert_eq!(split("/bin/x \"open"), None);
        assert_eq!(split("   "), Some(vec![]));
        let t = [('u', "alice".to_string()), ('U', "1000".to_string())];
        let expand = crate::percent::percent_expand::<String>;
        assert_eq!(expand("%u:%U:%%", &t).as_deref(), Ok("alice:1000:%"));
        assert!(expand("%q", &t).is_err());
    }
}
