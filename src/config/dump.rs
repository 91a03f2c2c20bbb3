//! `-T` output: walks the keyword table, so every implemented keyword is printed and in
//! the same order and format as `sshd -T` wherever sshd has the keyword too.

use super::keywords::{KEYWORDS, Status};
use super::settings::Settings;

/// One `keyword value` line per setting, keywords lower-case, times in seconds.
pub fn dump(settings: &Settings) -> String {
    let mut out = String::new();
    for k in KEYWORDS {
        if let Status::Supported { dump: Some(d), .. } = k.status {
            d(settings, &k.name.to_ascii_lowercase(), &mut out);
        }
    }
    out
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
            "usepam no",
            "permituserenvironment no",
        ] {
            assert!(d.lines().any(|l| l == line), "missing {line:?} in\n{d}");
        }
        // Unset lists print nothing, as in sshd.
        assert!(!d.contains("channeltimeout"));
        assert!(!d.contains("acceptenv"));
        assert!(!d.contains("ciphers"));
    }
}
