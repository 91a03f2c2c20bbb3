//! Where rsshd keeps its own files when the config does not say.

use std::path::PathBuf;

/// The config file used when `-f` is not given and it exists.
pub const SYSTEM_CONFIG: &str = "/etc/rsshd/sshd_config";

/// `/var/lib/rsshd` as root, else `$XDG_STATE_HOME/rsshd` or `~/.local/state/rsshd`,
/// so a non-root quick start never needs privileges.
pub fn state_dir() -> PathBuf {
    if crate::host::Privilege::current().is_root() {
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
