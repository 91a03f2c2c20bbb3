//! `-T` output: walks the keyword table, so every keyword is printed in the same order
//! and format as `sshd -T` wherever sshd has the keyword too. What is printed is what
//! is in force: the values rsshd applies, derived ones included (the idle limits,
//! the host keys and control socket filled in at load), and for keywords rsshd does
//! not implement, the value it honours by doing nothing, where there is one.

use super::keywords::{KEYWORDS, Value};
use super::settings::Settings;

/// One `keyword value` line per setting, keywords lower-case, times in seconds.
pub fn dump(settings: &Settings) -> String {
    let mut out = String::new();
    for k in KEYWORDS {
        let key = k.name.to_ascii_lowercase();
        match k.value {
            Value::Field { dump, .. } => dump(settings, &key, &mut out),
            Value::Shape {
                in_force: Some(v), ..
            } => {
                out.push_str(&key);
                out.push(' ');
                out.push_str(v);
                out.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// The keywords rsshd implements with sshd's semantics, lower-case as `-T` prints
/// them (for comparing `-T` output with sshd's).
pub fn implemented_keywords() -> Vec<String> {
    use super::keywords::Class;
    KEYWORDS
        .iter()
        .filter(|k| k.class == Class::Implemented)
        .map(|k| k.name.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_look_like_sshd() {
        let d = dump(&Settings::default());
        for line in [
            "port 22",
            "listenaddress [::]:22",
            "listenaddress 0.0.0.0:22",
            "logingracetime 120",
            "permitrootlogin without-password",
            "authorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2",
            "maxstartups 10:30:100",
            "permitopen any",
            "permitlisten any",
            "authenticationmethods any",
            "unusedconnectiontimeout none",
            "loglevel INFO",
            "syslogfacility AUTH",
            "banner none",
            "forcecommand none",
            "idletimeout none",
            "idlewarning none",
            "idleactivity input",
            "sessioncleanup hangup",
            "usepam no",
            "permituserenvironment no",
            "ciphers chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,\
             aes128-gcm@openssh.com,aes256-gcm@openssh.com",
            "macs hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha2-256,\
             hmac-sha2-512",
            "kexalgorithms mlkem768x25519-sha256,curve25519-sha256,curve25519-sha256@libssh.org,\
             ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521",
            "compression yes",
            "rekeylimit 0 0",
            "requiredrsasize 1024",
            "fingerprinthash SHA256",
        ] {
            assert!(d.lines().any(|l| l == line), "missing {line:?} in\n{d}");
        }
        // Unset lists print nothing, as in sshd.
        assert!(!d.contains("channeltimeout"));
        assert!(!d.contains("acceptenv"));
    }
}
