//! The privilege level rsshd runs with, decided once at start. A leaf: the
//! config's defaults and `paths` read it as well as `host` (which re-exports it).
//!
//! Whether rsshd holds root changes defaults (state directory, PID file, control
//! socket), who may log in (an unprivileged rsshd serves only its own account) and
//! how the boundary works (switching identity, or acting as itself). It is read from
//! here rather than asked of the kernel wherever it matters: a worker thread that
//! has switched its identity for a moment (see `as_user`) would get another answer
//! from `geteuid()`, and step 2 of privilege separation runs the network side
//! unprivileged while the monitor keeps root.

use std::sync::OnceLock;

/// Root (and so any user), or an ordinary account that can serve only itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Privilege {
    Root,
    Unprivileged { uid: u32 },
}

static DECIDED: OnceLock<Privilege> = OnceLock::new();

impl Privilege {
    /// The level of this process, decided on the first call (the daemon makes it at
    /// start, before any thread can switch its identity) and the same thereafter.
    pub fn current() -> Privilege {
        *DECIDED.get_or_init(|| {
            let euid = nix::unistd::geteuid();
            if euid.is_root() {
                Privilege::Root
            } else {
                Privilege::Unprivileged { uid: euid.as_raw() }
            }
        })
    }

    pub fn is_root(self) -> bool {
        self == Privilege::Root
    }

    /// The uid the daemon acts as: 0 as root.
    pub fn uid(self) -> u32 {
        match self {
            Privilege::Root => 0,
            Privilege::Unprivileged { uid } => uid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decided_once_and_matches_the_kernel() {
        let first = Privilege::current();
        assert_eq!(first.is_root(), nix::unistd::geteuid().is_root());
        assert_eq!(first.uid(), nix::unistd::geteuid().as_raw());
        assert_eq!(Privilege::current(), first);
    }
}
