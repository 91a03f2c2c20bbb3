//! Where rsshd keeps its own files when the config does not say.

use std::path::PathBuf;

/// The config file used when `-f` is not given and it exists.
pub const SYSTEM_CONFIG: &str = "/etc/rsshd/sshd_config";

/// `/var/lib/rsshd` as root, else `$XDG_STATE_HOME/rsshd` or `~/.local/state/rsshd`,
/// so a non-root quick start never needs privileges.
pub fn state_dir() -> PathBuf {
    if crate::privilege::Privilege::current().is_root() {
        return PathBuf::from("/var/lib/rsshd");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("rsshd");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/state/rsshd")
}

/// Where the control socket lives unless `ControlSocket` says otherwise:
/// `/run/rsshd.sock` as root, else in the state directory.
pub fn control_socket() -> PathBuf {
    if crate::privilege::Privilege::current().is_root() {
        PathBuf::from("/run/rsshd.sock")
    } else {
        state_dir().join("rsshd.sock")
    }
}

/// The environment variable an ssh-agent's socket is named by; as a
/// `HostKeyAgent` value it means "the socket this variable names".
pub(crate) const AUTH_SOCK_ENV: &str = "SSH_AUTH_SOCK";

/// A path as sshd's `derelativise_path` makes it: `~` and `~user` expanded to the
/// home directory (of the user running the daemon for a bare `~`), and a path
/// still relative joined to the working directory.
pub(crate) fn derelativise(path: &str) -> Result<PathBuf, String> {
    use nix::unistd::{Uid, User};
    let expanded = match path.strip_prefix('~') {
        None => PathBuf::from(path),
        Some(rest) => {
            let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
            let user = if name.is_empty() {
                User::from_uid(Uid::current())
                    .ok()
                    .flatten()
                    .ok_or_else(|| format!("No such uid {}", Uid::current()))?
            } else {
                User::from_name(name)
                    .ok()
                    .flatten()
                    .ok_or_else(|| format!("No such user {name}"))?
            };
            match tail.trim_start_matches('/') {
                "" => user.dir,
                tail => user.dir.join(tail),
            }
        }
    };
    if expanded.is_absolute() {
        return Ok(expanded);
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(&expanded))
        .map_err(|e| format!("getcwd: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derelativise_as_sshd() {
        assert_eq!(
            derelativise("/run/agent.sock").unwrap(),
            PathBuf::from("/run/agent.sock")
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(derelativise("a/b").unwrap(), cwd.join("a/b"));
        let root = nix::unistd::User::from_uid(0.into()).unwrap().unwrap();
        assert_eq!(derelativise("~root/s").unwrap(), root.dir.join("s"));
        assert_eq!(derelativise("~root").unwrap(), root.dir);
        assert!(derelativise("~no-such-user-here/s").is_err());
    }
}
