//! The keyword table's own tests: every keyword pinned to its class, each refused
//! keyword's error, and the value shapes of `values.rs`.

use super::values::{parse_channel_timeout, parse_listen};
use super::*;
use crate::config::Config;

use Class::{
    Alias as A, Deprecated as D, Implemented as I, Refused as R, Structural as S, Warned as W,
};

/// Every keyword of OpenSSH's `servconf.c` table (9.9, plus `SshdAuthPath` and
/// `GSSAPIDelegateCredentials` from 10.x), Debian's patched sshd, and rsshd's own,
/// with the class rsshd gives it. A keyword added to the table without a line here,
/// or moved to another class, fails the test below: that is the point, since a class
/// is a promise to admins (see docs/keywords.md).
const CLASSES: &[(&str, Class)] = &[
    ("AFSTokenPassing", D),
    ("AcceptEnv", I),
    ("AddressFamily", I),
    ("AllowAgentForwarding", I),
    ("AllowGroups", I),
    ("AllowStreamLocalForwarding", W),
    ("AllowTcpForwarding", I),
    ("AllowUsers", I),
    ("AuthenticationMethods", I),
    ("AuthorizedKeysCommand", W),
    ("AuthorizedKeysCommandUser", W),
    ("AuthorizedKeysFile", I),
    ("AuthorizedKeysFile2", D),
    ("AuthorizedPrincipalsCommand", W),
    ("AuthorizedPrincipalsCommandUser", W),
    ("AuthorizedPrincipalsFile", W),
    ("Banner", I),
    ("CASignatureAlgorithms", W),
    (
        "ChallengeResponseAuthentication",
        A("KbdInteractiveAuthentication"),
    ),
    ("ChannelTimeout", I),
    ("CheckMail", D),
    ("ChrootDirectory", R),
    ("Ciphers", R),
    ("ClientAliveCountMax", I),
    ("ClientAliveInterval", I),
    ("Compression", R),
    ("ControlSocket", I),
    ("DSAAuthentication", A("PubkeyAuthentication")),
    ("DebianBanner", W),
    ("DenyGroups", I),
    ("DenyUsers", I),
    ("DisableForwarding", I),
    ("ExposeAuthInfo", W),
    ("FingerprintHash", R),
    ("ForceCommand", I),
    ("GSSAPIAuthentication", W),
    ("GSSAPICleanupCredentials", W),
    ("GSSAPICleanupCreds", A("GSSAPICleanupCredentials")),
    ("GSSAPIDelegateCredentials", W),
    ("GSSAPIKexAlgorithms", W),
    ("GSSAPIKeyExchange", W),
    ("GSSAPIStoreCredentialsOnRekey", W),
    ("GSSAPIStrictAcceptorCheck", W),
    ("GSSAPIUseSessionCredCache", D),
    ("GSSUseSessionCCache", D),
    ("GatewayPorts", I),
    ("HostCertificate", W),
    ("HostDSAKey", A("HostKey")),
    ("HostKey", I),
    ("HostKeyAgent", W),
    ("HostKeyAlgorithms", R),
    ("HostbasedAcceptedAlgorithms", W),
    (
        "HostbasedAcceptedKeyTypes",
        A("HostbasedAcceptedAlgorithms"),
    ),
    ("HostbasedAuthentication", W),
    ("HostbasedUsesNameFromPacketOnly", W),
    ("IPQoS", W),
    ("IdleActivity", I),
    ("IdleTimeout", I),
    ("IdleWarning", I),
    ("IgnoreRhosts", W),
    ("IgnoreUserKnownHosts", W),
    ("Include", S),
    ("KbdInteractiveAuthentication", I),
    ("KeepAlive", A("TCPKeepAlive")),
    ("KerberosAuthentication", W),
    ("KerberosGetAFSToken", W),
    ("KerberosOrLocalPasswd", W),
    ("KerberosTgtPassing", D),
    ("KerberosTicketCleanup", W),
    ("KexAlgorithms", R),
    ("KeyRegenerationInterval", D),
    ("ListenAddress", I),
    ("LogLevel", R),
    ("LogVerbose", R),
    ("LoginGraceTime", I),
    ("MACs", R),
    ("Match", S),
    ("MaxAuthTries", I),
    ("MaxSessions", I),
    ("MaxStartups", I),
    ("ModuliFile", R),
    ("PAMAuthenticationViaKbdInt", D),
    ("PAMServiceName", I),
    ("PasswordAuthentication", I),
    ("PerSourceMaxStartups", R),
    ("PerSourceNetBlockSize", R),
    ("PerSourcePenalties", R),
    ("PerSourcePenaltyExemptList", R),
    ("PermitBlacklistedKeys", D),
    ("PermitEmptyPasswords", I),
    ("PermitListen", I),
    ("PermitOpen", I),
    ("PermitRootLogin", I),
    ("PermitTTY", I),
    ("PermitTunnel", R),
    ("PermitUserEnvironment", I),
    ("PermitUserRC", I),
    ("PidFile", I),
    ("Port", I),
    ("PrintLastLog", I),
    ("PrintMotd", I),
    ("Protocol", D),
    ("PubkeyAcceptedAlgorithms", R),
    ("PubkeyAcceptedKeyTypes", A("PubkeyAcceptedAlgorithms")),
    ("PubkeyAuthOptions", R),
    ("PubkeyAuthentication", I),
    ("RDomain", R),
    ("RSAAuthentication", D),
    ("RefuseConnection", I),
    ("RekeyLimit", R),
    ("RequiredRSASize", R),
    ("ReverseMappingCheck", D),
    ("RevokedKeys", I),
    ("RhostsAuthentication", D),
    ("RhostsRSAAuthentication", D),
    ("SecurityKeyProvider", W),
    ("ServerKeyBits", D),
    ("SetEnv", I),
    ("SkeyAuthentication", A("KbdInteractiveAuthentication")),
    ("SshdAuthPath", W),
    ("SshdSessionPath", W),
    ("StreamLocalBindMask", W),
    ("StreamLocalBindUnlink", W),
    ("StrictModes", I),
    ("Subsystem", I),
    ("SyslogFacility", R),
    ("TCPKeepAlive", I),
    ("TrustedUserCAKeys", W),
    ("UnusedConnectionTimeout", I),
    ("UseDNS", I),
    ("UseLogin", D),
    ("UsePAM", I),
    ("UsePrivilegeSeparation", D),
    ("VerifyReverseMapping", D),
    ("VersionAddendum", W),
    ("X11DisplayOffset", W),
    ("X11Forwarding", W),
    ("X11UseLocalhost", W),
    ("XAuthLocation", W),
];

#[test]
fn every_keyword_is_pinned_to_its_class() {
    let mut unpinned = Vec::new();
    for k in KEYWORDS {
        match CLASSES.iter().find(|(n, _)| *n == k.name) {
            Some((_, c)) => assert_eq!(k.class, *c, "{} changed class", k.name),
            None => unpinned.push(k.name),
        }
    }
    assert!(
        unpinned.is_empty(),
        "keywords with no pinned class: {unpinned:?}"
    );
    for (n, _) in CLASSES {
        assert!(KEYWORDS.iter().any(|k| k.name == *n), "{n} left the table");
    }
    assert_eq!(CLASSES.len(), KEYWORDS.len());
}

#[test]
fn classes_have_the_right_kind_of_value() {
    for k in KEYWORDS {
        let ok = match (k.class, k.value) {
            // What rsshd applies lives in Settings and is printed by -T.
            (Class::Implemented, Value::Field { .. }) => true,
            // A refused keyword may already parse into its field, for whoever
            // implements it; the field can then only hold the default.
            (Class::Refused, Value::Field { .. } | Value::Shape { .. }) => true,
            (Class::Warned, Value::Shape { .. }) => true,
            (Class::Deprecated | Class::Structural | Class::Alias(_), Value::Nothing) => true,
            _ => false,
        };
        assert!(ok, "{}: {:?} with the wrong kind of value", k.name, k.class);
        assert!(
            k.caveat.is_none() || k.class == Class::Implemented,
            "{}: caveats are for implemented keywords",
            k.name
        );
    }
}

#[test]
fn names_unique_and_aliases_resolve() {
    let mut seen = HashSet::new();
    for k in KEYWORDS {
        assert!(
            seen.insert(k.name.to_ascii_lowercase()),
            "duplicate {}",
            k.name
        );
        if let Class::Alias(t) = k.class {
            let target = KEYWORDS.iter().find(|x| x.name == t);
            assert!(
                target.is_some_and(|t| !matches!(t.class, Class::Alias(_))),
                "{} -> {t}",
                k.name
            );
        }
    }
    let f = lookup("challengeresponseauthentication").unwrap();
    assert_eq!(
        (f.kw.name, f.shown),
        (
            "KbdInteractiveAuthentication",
            "ChallengeResponseAuthentication"
        )
    );
    // An alias keeps sshd's scope for the old spelling.
    assert!(!lookup("DSAAuthentication").unwrap().matchable);
    assert!(lookup("PubkeyAuthentication").unwrap().matchable);
    assert!(lookup("NoSuchThing").is_none());
}

/// A value other than the one rsshd honours, for every refused keyword.
const REFUSED_SAMPLES: &[(&str, &str)] = &[
    ("ChrootDirectory", "/srv/%u"),
    ("Ciphers", "aes256-gcm@openssh.com,aes256-ctr"),
    ("Compression", "no"),
    ("FingerprintHash", "md5"),
    ("HostKeyAlgorithms", "ssh-ed25519"),
    ("KexAlgorithms", "-diffie-hellman-group14-sha256"),
    ("LogLevel", "VERBOSE"),
    ("LogVerbose", "kex.c:*:1000"),
    ("MACs", "hmac-sha2-512-etm@openssh.com"),
    ("ModuliFile", "/etc/ssh/moduli.strong"),
    ("PerSourceMaxStartups", "5"),
    ("PerSourceNetBlockSize", "24:56"),
    ("PerSourcePenalties", "yes"),
    ("PerSourcePenaltyExemptList", "10.0.0.0/8"),
    ("PermitTunnel", "point-to-point"),
    ("PubkeyAcceptedAlgorithms", "ssh-ed25519"),
    ("PubkeyAuthOptions", "touch-required"),
    ("RDomain", "%D"),
    ("RekeyLimit", "512M 1h"),
    ("RequiredRSASize", "3072"),
    ("SyslogFacility", "AUTHPRIV"),
];

fn load(text: &str) -> Result<Vec<String>, String> {
    Config::parse_str("t.conf", text, &[])
        .map(|(_, w)| w.iter().map(ToString::to_string).collect())
        .map_err(|e| e.to_string())
}

#[test]
fn refused_keywords_fail_the_load_with_file_line_and_reason() {
    let why = "not implemented by rsshd; refused because ignoring it could allow more than \
               configured";
    for k in KEYWORDS.iter().filter(|k| k.class == Class::Refused) {
        let (_, bad) = REFUSED_SAMPLES
            .iter()
            .find(|(n, _)| *n == k.name)
            .unwrap_or_else(|| panic!("no sample value for refused {}", k.name));
        let expected = match accepted_value(k) {
            Some(v) => format!(
                "t.conf:2: {}: {why} (remove it; only \"{v}\" is accepted)",
                k.name
            ),
            None => format!("t.conf:2: {}: {why} (remove it)", k.name),
        };
        assert_eq!(load(&format!("Port 22\n{} {bad}\n", k.name)), Err(expected));
        // Inside a Match block that never applies too, as sshd checks every line.
        if k.matchable {
            let e = load(&format!("Match User nobody-here\n  {} {bad}\n", k.name));
            assert!(
                e.as_ref().is_err_and(
                    |e| e.starts_with(&format!("t.conf:2: {}: not implemented", k.name))
                ),
                "{}: {e:?}",
                k.name
            );
        }
        // The value rsshd honours loads silently.
        if let Some(v) = accepted_value(k) {
            assert_eq!(load(&format!("{} {v}\n", k.name)), Ok(vec![]), "{}", k.name);
        }
        // A value sshd itself would reject is still "invalid", not "refused".
    }
    assert_eq!(
        load("Ciphers aes128-ctr,,x\n"),
        Err("t.conf:1: Ciphers: invalid algorithm list \"aes128-ctr,,x\"".into())
    );
    assert_eq!(
        load("DisableForwarding maybe\n"),
        Err("t.conf:1: DisableForwarding: invalid value \"maybe\" (expected yes or no)".into())
    );
    // Equivalent spellings of the honoured value are honoured too.
    assert_eq!(
        load("LogLevel info\nUseDNS No\nCompression delayed\n"),
        Ok(vec![])
    );
    assert_eq!(
        load("PubkeyAcceptedKeyTypes ssh-ed25519\n")
            .unwrap_err()
            .split(": ")
            .nth(1),
        Some("PubkeyAcceptedKeyTypes")
    );
}

#[test]
fn warned_keywords_warn_unless_honoured() {
    for k in KEYWORDS.iter().filter(|k| k.class == Class::Warned) {
        let Value::Shape { kind, honoured, .. } = k.value else {
            unreachable!()
        };
        if let Some(h) = honoured.first() {
            assert_eq!(load(&format!("{} {h}\n", k.name)), Ok(vec![]), "{}", k.name);
        }
        let other = match kind {
            Kind::Flag
                if honoured
                    .first()
                    .is_some_and(|h| h.eq_ignore_ascii_case("no")) =>
            {
                "yes"
            }
            Kind::Flag => "no",
            Kind::Int => "99",
            _ => "something-else",
        };
        assert_eq!(
            load(&format!("{} {other}\n", k.name)),
            Ok(vec![format!(
                "t.conf:1: {}: not supported by rsshd, ignored",
                k.name
            )]),
            "{}",
            k.name
        );
    }
}

#[test]
fn caveats_and_pre_auth_keywords_warn() {
    assert_eq!(
        load("PermitUserEnvironment yes\nPermitUserEnvironment no\n"),
        Ok(vec![])
    );
    assert_eq!(
        load("Match User sftp\n  ForceCommand internal-sftp -d /x\n").unwrap()[0],
        "t.conf:2: ForceCommand: internal-sftp is not built into rsshd; as a forced command it \
         fails (\"command not found\")"
    );
    assert!(
        load("AuthenticationMethods publickey,gssapi-with-mic password\n").unwrap()[0].ends_with(
            "rsshd does not offer gssapi-with-mic; chains that need it can never complete"
        )
    );
    assert_eq!(
        load("Banner /a\nMatch Address 10.0.0.0/8\n  Banner /b\nMatch Group staff\n  Banner /c\n"),
        Ok(vec![
            "t.conf:5: Banner: applies before the user name is known, so a Match on User or \
             Group does not change it"
                .to_string()
        ])
    );
}

#[test]
fn listen_forms() {
    let la = |s: &str| parse_listen(s).map(|l| (l.host, l.port));
    assert_eq!(la("127.0.0.1"), Ok(("127.0.0.1".into(), None)));
    assert_eq!(la("127.0.0.1:2222"), Ok(("127.0.0.1".into(), Some(2222))));
    assert_eq!(la("[::1]:2222"), Ok(("::1".into(), Some(2222))));
    assert_eq!(la("[::1]"), Ok(("::1".into(), None)));
    assert_eq!(la("::1"), Ok(("::1".into(), None)));
    assert_eq!(la("host.example"), Ok(("host.example".into(), None)));
    assert_eq!(la("1.2.3.4:0"), Ok(("1.2.3.4".into(), Some(0))));
    assert!(la("1.2.3.4:99999").is_err());
    assert!(la("[::1]x").is_err());
    assert!(la(":22").is_err());
}

#[test]
fn channel_timeouts_use_sshd_type_names() {
    for ok in [
        "session=5m",
        "session:command=5m",
        "session:shell=1h",
        "session:subsystem:sftp=1m",
        "session:*=1m",
        "direct-tcpip=1h",
        "direct-*=1h",
        "forwarded-tcpip=1h",
        "tun-connection=1m",
        "x11-connection=1m",
        "agent-connection=1m",
        "direct-streamlocal@openssh.com=1m",
        "global=1h",
        "*=10s",
    ] {
        assert!(parse_channel_timeout(ok).is_ok(), "{ok}");
    }
    assert_eq!(
        parse_channel_timeout("session:exec=5m"),
        Err(
            "unknown channel type \"session:exec\" in \"session:exec=5m\" (OpenSSH calls it \
             session:command)"
                .into()
        )
    );
    assert!(parse_channel_timeout("sesion=5m").is_err());
    assert!(parse_channel_timeout("session").is_err());
    assert!(parse_channel_timeout("=5m").is_err());
    assert!(parse_channel_timeout("session=soon").is_err());
}

#[test]
fn docs_list_every_keyword_with_its_class() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/keywords.md");
    let text = std::fs::read_to_string(path).expect("docs/keywords.md");
    let mut rows = std::collections::HashMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, name, class, ..] = cells[..]
            && let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`'))
        {
            assert!(rows.insert(name, class).is_none(), "{name} twice in {path}");
        }
    }
    for k in KEYWORDS {
        let want = match k.class {
            Class::Implemented | Class::Structural => "implemented".to_string(),
            Class::Refused => "refused".into(),
            Class::Warned => "warned".into(),
            Class::Deprecated => "deprecated".into(),
            Class::Alias(t) => format!("alias of `{t}`"),
        };
        assert_eq!(
            rows.remove(k.name),
            Some(want.as_str()),
            "{} in {path}",
            k.name
        );
    }
    assert!(
        rows.is_empty(),
        "{path} lists keywords the table does not: {rows:?}"
    );
}
