//! `AuthenticationMethods`: which method may come next and when a login is
//! complete, as OpenSSH's auth2.c decides it, kept pure for testing.

/// Normalise `keyboard-interactive:pam` and friends to the method name.
fn base(method: &str) -> &str {
    method.split(':').next().unwrap_or(method)
}

/// Chains from the setting; empty (or `any`) means any single method suffices.
pub(crate) fn chains(setting: &[String]) -> Vec<Vec<String>> {
    setting
        .iter()
        .filter(|c| c.as_str() != "any")
        .map(|c| c.split(',').map(|m| base(m).to_string()).collect())
        .collect()
}

/// Methods that may be tried now, given those already completed (in order).
/// `None` when there is no restriction.
pub(crate) fn next_allowed(chains: &[Vec<String>], done: &[String]) -> Option<Vec<String>> {
    if chains.is_empty() {
        return None;
    }
    let mut next = Vec::new();
    for chain in chains {
        // Completed methods must be a prefix of this chain.
        if chain.len() > done.len() && chain.iter().zip(done).all(|(a, b)| a == b) {
            let m = chain[done.len()].clone();
            if !next.contains(&m) {
                next.push(m);
            }
        }
    }
    Some(next)
}

/// Whether the completed methods satisfy the setting.
pub(crate) fn satisfied(chains: &[Vec<String>], done: &[String]) -> bool {
    chains.is_empty() || chains.iter().any(|c| c.as_slice() == done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn chains_in_order() {
        let c = chains(&s(&[
            "publickey,password",
            "publickey,keyboard-interactive:pam",
        ]));
        assert_eq!(next_allowed(&c, &[]), Some(s(&["publickey"])));
        let done = s(&["publickey"]);
        assert!(!satisfied(&c, &done));
        assert_eq!(
            next_allowed(&c, &done),
            Some(s(&["password", "keyboard-interactive"]))
        );
        assert!(satisfied(&c, &s(&["publickey", "password"])));
        assert_eq!(next_allowed(&c, &s(&["password"])), Some(vec![]));
    }

    #[test]
    fn no_setting_means_any_one() {
        let c = chains(&s(&["any"]));
        assert_eq!(next_allowed(&c, &[]), None);
        assert!(satisfied(&c, &s(&["password"])));
    }
}
