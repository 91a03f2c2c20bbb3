//! What a loaded configuration derives, as sshd's `fill_default_server_options`
//! does: the host keys and the control socket in force when the file names none (so
//! `-T` prints what the daemon really uses), and warnings for settings that
//! contradict each other.

use std::path::PathBuf;
use std::time::Duration;

use super::{Directive, PassState, Settings, Warning, format_time};

/// sshd's default host keys, in its order (`_PATH_HOST_*_KEY_FILE`).
pub(crate) const SSHD_HOST_KEYS: [&str; 3] = [
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_ed25519_key",
];

/// The key file generated on the embedded defaults (`ssh_host_ed25519_key` in the
/// state directory, created by the daemon on first start).
pub(crate) fn generated_key_path() -> PathBuf {
    crate::paths::state_dir().join("ssh_host_ed25519_key")
}

/// Fill in what the config left to defaults. With a config file and no `HostKey`,
/// sshd's three default keys that exist (sshd skips missing ones too), so a machine
/// moving from sshd keeps its host identity; on the embedded defaults, the generated
/// key, whose path is returned.
pub(super) fn fill(
    s: &mut Settings,
    embedded: bool,
    fs: &mut super::replay::Fs,
) -> Option<PathBuf> {
    if s.control_socket == super::ControlSocket::BuiltIn {
        s.control_socket = super::ControlSocket::At(crate::paths::control_socket());
    }
    if !s.host_key.is_empty() {
        return None;
    }
    if embedded {
        let p = generated_key_path();
        s.host_key.push(p.clone());
        return Some(p);
    }
    s.host_key = SSHD_HOST_KEYS
        .iter()
        .map(PathBuf::from)
        .filter(|p| fs.exists(p))
        .collect();
    None
}

/// Where a keyword got its value in one context: the first directive for it (the
/// context's own Match block first, then the global ones, as values are resolved).
fn source<'a>(
    name: &str,
    block: &'a [Directive],
    global: &'a [Directive],
) -> Option<&'a Directive> {
    block.iter().chain(global).find(|d| d.kw.name == name)
}

fn at(d: &Directive) -> String {
    format!("{}:{}", d.file.display(), d.line)
}

/// `IdleWarning` that can never be given: not shorter than the idle timeout in force,
/// or with no idle timeout at all. Checked for the global settings and for each
/// `Match` block applied on top of them, and reported at the `IdleWarning` line.
pub(super) fn idle_conflicts(
    global: &Settings,
    unconditional: &[Directive],
    conditional: &[Directive],
) -> Vec<Warning> {
    let mut out: Vec<Warning> = Vec::new();
    let mut contexts: Vec<(Settings, &[Directive])> = vec![(global.clone(), &[])];
    for block in conditional.chunk_by(same_cond) {
        let mut s = global.clone();
        let mut st = PassState::default();
        for d in block {
            let _ = st.apply(&mut s, d);
        }
        contexts.push((s, block));
    }
    let timeout_anywhere = conditional.iter().any(|d| {
        matches!(
            d.kw.name,
            "IdleTimeout" | "ClientAliveInterval" | "ClientAliveCountMax"
        )
    });
    for (s, block) in &contexts {
        let Some(w) = s.idle_warning.filter(|w| !w.is_zero()) else {
            continue;
        };
        let Some(wd) = source("IdleWarning", block, unconditional) else {
            continue;
        };
        let message = match s.effective_idle_timeout() {
            Some(t) if w >= t => {
                let from = timeout_source(s, block, unconditional)
                    .map(|(k, d)| format!(", from {k} at {}", at(d)))
                    .unwrap_or_default();
                format!(
                    "IdleWarning: {} is not shorter than the idle timeout in force ({}{from}); \
                     no warning will be given",
                    format_time(w),
                    format_time(t)
                )
            }
            None if block.is_empty() && !timeout_anywhere => {
                "IdleWarning: no idle timeout is in force (IdleTimeout, or ClientAliveInterval \
                 with ClientAliveCountMax 0), so no warning will be given"
                    .to_string()
            }
            _ => continue,
        };
        let warning = Warning {
            file: wd.file.to_path_buf(),
            line: wd.line,
            message,
        };
        if !out.contains(&warning) {
            out.push(warning);
        }
    }
    out
}

/// The directive the idle timeout in force comes from.
fn timeout_source<'a>(
    s: &Settings,
    block: &'a [Directive],
    global: &'a [Directive],
) -> Option<(&'static str, &'a Directive)> {
    let explicit = s.idle_timeout.is_some_and(|t| t != Duration::ZERO);
    let name = if explicit {
        "IdleTimeout"
    } else {
        "ClientAliveInterval"
    };
    source(name, block, global).map(|d| (name, d))
}

fn same_cond(a: &Directive, b: &Directive) -> bool {
    a.cond.len() == b.cond.len()
        && a.cond
            .iter()
            .zip(&b.cond)
            .all(|(x, y)| std::sync::Arc::ptr_eq(x, y))
}

/// As sshd refuses to start on it: global `AuthenticationMethods` where every list
/// needs a method that is off. rsshd offers passwords only through PAM and never
/// offers hostbased or gssapi-with-mic, so those count as off too.
pub(super) fn auth_methods_conflict(s: &Settings, unconditional: &[Directive]) -> Option<Warning> {
    if s.authentication_methods.is_empty() {
        return None;
    }
    let enabled = |m: &str| match m.split(':').next().unwrap_or(m) {
        "publickey" => s.pubkey_authentication,
        "password" => s.use_pam && s.password_authentication,
        "keyboard-interactive" => s.use_pam && s.kbd_interactive_authentication,
        _ => false,
    };
    let usable = s
        .authentication_methods
        .iter()
        .any(|list| list.split(',').all(enabled));
    if usable {
        return None;
    }
    let mut off: Vec<&str> = s
        .authentication_methods
        .iter()
        .flat_map(|l| l.split(','))
        .filter(|m| !enabled(m))
        .collect();
    off.dedup();
    let d = source("AuthenticationMethods", &[], unconditional)?;
    Some(Warning {
        file: d.file.to_path_buf(),
        line: d.line,
        message: format!(
            "AuthenticationMethods: cannot be satisfied by enabled authentication methods \
             (off: {}); no one can log in",
            off.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConnSpec, dump};

    fn warnings(text: &str) -> Vec<String> {
        let (_, w) = Config::parse_str("t.conf", text, &[]).unwrap();
        w.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn idle_warning_not_shorter_than_the_timeout_is_named() {
        assert_eq!(
            warnings("IdleTimeout 10s\nIdleWarning 20s\n"),
            vec![
                "t.conf:2: IdleWarning: 20s is not shorter than the idle timeout in force \
                 (10s, from IdleTimeout at t.conf:1); no warning will be given"
            ]
        );
        // The classic recipe is an idle timeout too.
        assert_eq!(
            warnings("IdleWarning 5m\nClientAliveInterval 300\nClientAliveCountMax 0\n"),
            vec![
                "t.conf:1: IdleWarning: 5m is not shorter than the idle timeout in force \
                 (5m, from ClientAliveInterval at t.conf:2); no warning will be given"
            ]
        );
        // A Match block that shortens the timeout below the global warning.
        assert_eq!(
            warnings("IdleTimeout 1h\nIdleWarning 1m\nMatch User bob\n  IdleTimeout 30s\n"),
            vec![
                "t.conf:2: IdleWarning: 1m is not shorter than the idle timeout in force \
                 (30s, from IdleTimeout at t.conf:4); no warning will be given"
            ]
        );
        assert_eq!(
            warnings("IdleWarning 1m\n"),
            vec![
                "t.conf:1: IdleWarning: no idle timeout is in force (IdleTimeout, or \
                 ClientAliveInterval with ClientAliveCountMax 0), so no warning will be given"
            ]
        );
        // Consistent settings say nothing, including a timeout only some users get.
        assert!(warnings("IdleTimeout 10m\nIdleWarning 1m\n").is_empty());
        assert!(warnings("IdleWarning 1m\nMatch Group staff\n  IdleTimeout 1h\n").is_empty());
        assert!(warnings("IdleTimeout 10s\nIdleWarning 0\n").is_empty());
    }

    #[test]
    fn unsatisfiable_authentication_methods_are_named() {
        assert_eq!(
            warnings("PubkeyAuthentication no\nAuthenticationMethods publickey,password\n"),
            vec![
                "t.conf:2: AuthenticationMethods: cannot be satisfied by enabled authentication \
                 methods (off: publickey, password); no one can log in"
            ]
        );
        assert!(warnings("UsePAM yes\nAuthenticationMethods publickey,password\n").is_empty());
        assert!(warnings("AuthenticationMethods publickey password\n").is_empty());
    }

    #[test]
    fn dump_shows_what_is_in_force() {
        let (c, _) = Config::parse_str(
            "t.conf",
            "HostKey /k1\nHostKey /k2\nClientAliveInterval 300\nClientAliveCountMax 0\n\
             IdleWarning 1m\nMatch User bob\n  IdleTimeout 30s\n",
            &[],
        )
        .unwrap();
        let d = dump(c.global());
        for line in [
            "hostkey /k1",
            "hostkey /k2",
            "idletimeout 300",
            "idlewarning 60",
            "x11forwarding no",
            "revokedkeys none",
        ] {
            assert!(d.lines().any(|l| l == line), "{line} in\n{d}");
        }
        let sock = format!("controlsocket {}", crate::paths::control_socket().display());
        assert!(d.lines().any(|l| l == sock), "{sock} in\n{d}");
        // For bob the Match shortens the timeout, and the warning no longer fits, so
        // none is given (and the load warned about it).
        let bob = dump(&c.resolve(&ConnSpec::parse_cli("user=bob").unwrap()));
        assert!(bob.contains("idletimeout 30\nidlewarning none\n"), "{bob}");
    }

    #[test]
    fn host_keys_default_like_sshd() {
        let (c, _) = Config::parse_str("t.conf", "Port 22\n", &[]).unwrap();
        let want: Vec<std::path::PathBuf> = super::SSHD_HOST_KEYS
            .iter()
            .map(std::path::PathBuf::from)
            .filter(|p| p.exists())
            .collect();
        assert_eq!(c.global().host_key, want);
        assert_eq!(c.generated_host_key(), None);
        let (c, _) = Config::parse_str("t.conf", "HostKey /x\n", &["HostKey /y".into()]).unwrap();
        assert_eq!(
            c.global().host_key,
            vec![std::path::PathBuf::from("/y"), "/x".into()]
        );
        let (c, _) = Config::embedded(&[]).unwrap();
        assert_eq!(c.global().host_key, vec![super::generated_key_path()]);
        assert_eq!(
            c.generated_host_key(),
            Some(super::generated_key_path().as_path())
        );
        let (c, _) = Config::embedded(&["HostKey /z".into()]).unwrap();
        assert_eq!(c.global().host_key, vec![std::path::PathBuf::from("/z")]);
        assert_eq!(c.generated_host_key(), None);
    }
}
