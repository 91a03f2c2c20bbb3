//! Who may log in: OpenSSH's `allowed_user()` and `PermitRootLogin`, as pure decisions
//! over data so they are tested without sockets.

use std::net::IpAddr;

use crate::config::{PermitRootLogin, Settings};
use crate::host::UserInfo;
use crate::pattern::{ListMatch, match_pattern_list, match_user};

/// Why a known user is refused before any key is looked at; the text is sshd's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    ShellNotExecutable(String),
    DenyUsers,
    NotInAllowUsers,
    DenyGroups,
    NotInAllowGroups,
    /// rsshd runs unprivileged and can only serve the account it runs as.
    NotDaemonUser,
    /// An `AllowUsers`/`DenyUsers` entry (keyword, entry) whose host part does not
    /// parse; sshd exits on it (`Invalid AllowUsers pattern`), rsshd refuses.
    InvalidPattern(&'static str, String),
}

impl Refusal {
    /// The log line, after `User NAME from ADDR not allowed because `.
    pub(crate) fn reason(&self) -> String {
        match self {
            Refusal::ShellNotExecutable(s) => format!("shell {s} is not executable"),
            Refusal::DenyUsers => "listed in DenyUsers".into(),
            Refusal::NotInAllowUsers => "not listed in AllowUsers".into(),
            Refusal::DenyGroups => "a group is listed in DenyGroups".into(),
            Refusal::NotInAllowGroups => "none of user's groups are listed in AllowGroups".into(),
            Refusal::NotDaemonUser => "rsshd is not running as root".into(),
            Refusal::InvalidPattern(k, p) => format!("of an invalid {k} pattern \"{p}\""),
        }
    }
}

/// OpenSSH's order: shell, DenyUsers, AllowUsers, DenyGroups, AllowGroups.
pub(crate) fn check_user(
    user: &UserInfo,
    host: &str,
    ip: IpAddr,
    s: &Settings,
    daemon_uid: u32,
) -> Result<(), Refusal> {
    if daemon_uid != 0 && user.uid != daemon_uid {
        return Err(Refusal::NotDaemonUser);
    }
    if !shell_ok(&user.shell) {
        return Err(Refusal::ShellNotExecutable(
            user.shell.display().to_string(),
        ));
    }
    // A malformed host part (`user@10.0.0.0/99`) refuses the user: sshd stops
    // there too (it exits), it never reads it as "not listed".
    for p in &s.deny_users {
        match match_user(&user.name, host, ip, p) {
            Ok(false) => {}
            Ok(true) => return Err(Refusal::DenyUsers),
            Err(_) => return Err(Refusal::InvalidPattern("DenyUsers", p.clone())),
        }
    }
    if !s.allow_users.is_empty() {
        let mut listed = false;
        for p in &s.allow_users {
            match match_user(&user.name, host, ip, p) {
                Ok(false) => {}
                Ok(true) => {
                    listed = true;
                    break;
                }
                Err(_) => return Err(Refusal::InvalidPattern("AllowUsers", p.clone())),
            }
        }
        if !listed {
            return Err(Refusal::NotInAllowUsers);
        }
    }
    let in_groups = |list: &[String]| {
        user.group_names.iter().any(|g| {
            list.iter()
                .any(|p| match_pattern_list(g, p, false) == ListMatch::Positive)
        })
    };
    if !s.deny_groups.is_empty() && in_groups(&s.deny_groups) {
        return Err(Refusal::DenyGroups);
    }
    if !s.allow_groups.is_empty() && !in_groups(&s.allow_groups) {
        return Err(Refusal::NotInAllowGroups);
    }
    Ok(())
}

/// An empty shell means `/bin/sh`, as in passwd(5); otherwise it must be executable.
fn shell_ok(shell: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    if shell.as_os_str().is_empty() {
        return true;
    }
    std::fs::metadata(shell)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `PermitRootLogin` for a key login: `forced-commands-only` needs a forced command.
pub(crate) fn root_key_login_allowed(s: &Settings, key_has_command: bool) -> bool {
    match s.permit_root_login {
        PermitRootLogin::Yes | PermitRootLogin::ProhibitPassword => true,
        PermitRootLogin::ForcedCommandsOnly => key_has_command,
        PermitRootLogin::No => false,
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn alice() -> UserInfo {
        UserInfo {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            home: PathBuf::from("/home/alice"),
            shell: PathBuf::from("/bin/sh"),
            group_names: vec!["alice".into(), "staff".into()],
            gids: vec![1000, 50],
        }
    }

    fn ip() -> IpAddr {
        "10.0.0.5".parse().unwrap()
    }

    #[test]
    fn allow_and_deny_lists() {
        let mut s = Settings::default();
        assert_eq!(check_user(&alice(), "h", ip(), &s, 0), Ok(()));
        s.deny_users = vec!["al*".into()];
        assert_eq!(
            check_user(&alice(), "h", ip(), &s, 0),
            Err(Refusal::DenyUsers)
        );
        s.deny_users.clear();
        s.allow_users = vec!["bob".into(), "alice@10.0.0.0/8".into()];
        assert_eq!(check_user(&alice(), "h", ip(), &s, 0), Ok(()));
        s.allow_users = vec!["alice@192.168.0.0/16".into()];
        assert_eq!(
            check_user(&alice(), "h", ip(), &s, 0),
            Err(Refusal::NotInAllowUsers)
        );
        s.allow_users.clear();
        s.deny_groups = vec!["staff".into()];
        assert_eq!(
            check_user(&alice(), "h", ip(), &s, 0),
            Err(Refusal::DenyGroups)
        );
        s.deny_groups.clear();
        s.allow_groups = vec!["wheel".into()];
        assert_eq!(
            check_user(&alice(), "h", ip(), &s, 0),
            Err(Refusal::NotInAllowGroups)
        );
        s.allow_groups = vec!["wheel".into(), "sta*".into()];
        assert_eq!(check_user(&alice(), "h", ip(), &s, 0), Ok(()));
    }

    #[test]
    fn malformed_host_parts_refuse() {
        let mut s = Settings::default();
        s.deny_users = vec!["alice@10.0.0.0/99".into()];
        assert!(matches!(
            check_user(&alice(), "h", ip(), &s, 0),
            Err(Refusal::InvalidPattern("DenyUsers", _))
        ));
        s.deny_users.clear();
        s.allow_users = vec!["alice@*,!10.0.0.0/99".into()];
        assert!(matches!(
            check_user(&alice(), "h", ip(), &s, 0),
            Err(Refusal::InvalidPattern("AllowUsers", _))
        ));
    }

    #[test]
    fn unprivileged_daemon_serves_only_its_user() {
        let s = Settings::default();
        assert_eq!(
            check_user(&alice(), "h", ip(), &s, 1001),
            Err(Refusal::NotDaemonUser)
        );
        assert_eq!(check_user(&alice(), "h", ip(), &s, 1000), Ok(()));
    }

    #[test]
    fn root_login_values() {
        let mut s = Settings::default();
        for (v, plain, forced) in [
            (PermitRootLogin::Yes, true, true),
            (PermitRootLogin::ProhibitPassword, true, true),
            (PermitRootLogin::ForcedCommandsOnly, false, true),
            (PermitRootLogin::No, false, false),
        ] {
            s.permit_root_login = v;
            assert_eq!(root_key_login_allowed(&s, false), plain, "{v:?}");
            assert_eq!(root_key_login_allowed(&s, true), forced, "{v:?}");
        }
    }
}
