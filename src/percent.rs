//! sshd's `percent_expand`: `%x` tokens in a config value, `%%` for a percent
//! sign. One expander for every keyword that takes tokens (`AuthorizedKeysFile`,
//! `AuthorizedPrincipalsFile`, `ChrootDirectory`, the `*Command` keywords,
//! internal-sftp's `-d`), and the load-time check that refuses an unknown token
//! with the file and line, where sshd fails each login that reaches it.

/// Why a value cannot be expanded; the text is sshd's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PercentError {
    #[error("unknown key %{0}")]
    UnknownKey(char),
    /// A `%` at the very end.
    #[error("invalid format")]
    Trailing,
}

/// Replace each `%x` of `s` with the value of token `x`.
pub fn percent_expand<V: AsRef<str>>(
    s: &str,
    tokens: &[(char, V)],
) -> Result<String, PercentError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(t) => match tokens.iter().find(|(k, _)| *k == t) {
                Some((_, v)) => out.push_str(v.as_ref()),
                None => return Err(PercentError::UnknownKey(t)),
            },
            None => return Err(PercentError::Trailing),
        }
    }
    Ok(out)
}

/// Whether `s` uses only the tokens in `known` (for checking a config value at
/// load, before any login has the values).
pub fn check_tokens(s: &str, known: &str) -> Result<(), PercentError> {
    let tokens: Vec<(char, &str)> = known.chars().map(|c| (c, "")).collect();
    percent_expand(s, &tokens).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_percent_signs() {
        let t = [('u', "alice"), ('U', "1000"), ('h', "/home/alice")];
        assert_eq!(
            percent_expand("%h/.ssh/%u:%U:%%u", &t).as_deref(),
            Ok("/home/alice/.ssh/alice:1000:%u")
        );
        assert_eq!(percent_expand("plain", &t).as_deref(), Ok("plain"));
        assert_eq!(
            percent_expand("/k/%d", &t),
            Err(PercentError::UnknownKey('d'))
        );
        assert_eq!(percent_expand("/k/%", &t), Err(PercentError::Trailing));
        assert_eq!(PercentError::UnknownKey('d').to_string(), "unknown key %d");
    }

    #[test]
    fn check_names_the_first_unknown_token() {
        assert_eq!(check_tokens("%h/%u/%U/%%", "huU"), Ok(()));
        assert_eq!(
            check_tokens("/srv/%x/%y", "huU"),
            Err(PercentError::UnknownKey('x'))
        );
    }
}
