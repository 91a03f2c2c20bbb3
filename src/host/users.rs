//! Accounts from the system's user database (NSS), with supplementary groups.

use std::ffi::CString;
use std::path::PathBuf;

use nix::unistd::{Gid, Group, Uid, User};

use super::HostError;

/// An account a session can run as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
    /// Names of the primary and supplementary groups, for AllowGroups and Match Group.
    pub group_names: Vec<String>,
    /// The same groups by id, for setgroups() before exec.
    pub gids: Vec<u32>,
}

impl UserInfo {
    /// `pattern` with the account's tokens `%h` (home), `%u` (name) and `%U` (uid),
    /// as sshd expands `AuthorizedKeysFile`, `AuthorizedPrincipalsFile` and
    /// `ChrootDirectory`.
    pub fn expand(&self, pattern: &str) -> Result<String, crate::percent::PercentError> {
        let uid = self.uid.to_string();
        let home = self.home.to_string_lossy();
        let tokens = [
            ('h', &*home),
            ('u', self.name.as_str()),
            ('U', uid.as_str()),
        ];
        crate::percent::percent_expand(pattern, &tokens)
    }
}

fn from_nix(u: User) -> UserInfo {
    let gids: Vec<u32> = CString::new(u.name.as_str())
        .ok()
        .and_then(|c| nix::unistd::getgrouplist(&c, u.gid).ok())
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|| vec![u.gid.as_raw()]);
    let group_names = gids
        .iter()
        .filter_map(|g| Group::from_gid(Gid::from_raw(*g)).ok().flatten())
        .map(|g| g.name)
        .collect();
    UserInfo {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir,
        shell: u.shell,
        group_names,
        gids,
    }
}

/// Look an account up by name; `Ok(None)` if there is no such user.
pub fn lookup_user(name: &str) -> Result<Option<UserInfo>, HostError> {
    if name.is_empty() || name.contains('\0') {
        return Ok(None);
    }
    match User::from_name(name) {
        Ok(u) => Ok(u.map(from_nix)),
        Err(e) => Err(HostError::Os {
            what: format!("getpwnam({name})"),
            source: e,
        }),
    }
}

/// The account rsshd runs as.
pub fn current_user() -> Result<UserInfo, HostError> {
    let uid = Uid::effective();
    match User::from_uid(uid) {
        Ok(Some(u)) => Ok(from_nix(u)),
        Ok(None) => Err(HostError::NoSuchUser(uid.to_string())),
        Err(e) => Err(HostError::Os {
            what: "getpwuid".into(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_exists_with_its_groups() {
        let root = lookup_user("root").unwrap().expect("root");
        assert_eq!(root.uid, 0);
        assert!(root.gids.contains(&0));
        assert!(root.group_names.iter().any(|g| g == "root"));
    }

    #[test]
    fn unknown_user_is_none() {
        assert_eq!(lookup_user("no-such-user-rsshd").unwrap(), None);
        assert_eq!(lookup_user("").unwrap(), None);
    }
}
