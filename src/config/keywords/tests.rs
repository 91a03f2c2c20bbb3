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
    ("AuthorizedKeysCommand", I),
    ("AuthorizedKeysCommandUser", I),
    ("AuthorizedKeysFile", I),
    ("AuthorizedKeysFile2", D),
    ("AuthorizedPrincipalsCommand", I),
    ("AuthorizedPrincipalsCommandUser", I),
    ("AuthorizedPrincipalsFile", I),
    ("Banner", I),
    ("CASignatureAlgorithms", I),
    (
        "ChallengeResponseAuthentication",
        A("KbdInteractiveAuthentication"),
    ),
    ("ChannelTimeout", I),
    ("CheckMail", D),
    ("ChrootDirectory", I),
    ("Ciphers", I),
    ("ClientAliveCountMax", I),
    ("ClientAliveInterval", I),
    ("Compression", I),
    ("ControlSocket", I),
    ("DSAAuthentication", A("PubkeyAuthentication")),
    ("DebianBanner", W),
    ("DenyGroups", I),
    ("DenyUsers", I),
    ("DisableForwarding", I),
    ("ExposeAuthInfo", I),
    ("FingerprintHash", I),
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
    ("HostCertificate", I),
    ("HostDSAKey", A("HostKey")),
    ("HostKey", I),
    ("HostKeyAgent", I),
    ("HostKeyAlgorithms", I),
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
    ("KexAlgorithms", I),
    ("KeyRegenerationInterval", D),
    ("ListenAddress", I),
    ("LogLevel", I),
    ("LogVerbose", R),
    ("LoginGraceTime", I),
    ("MACs", I),
    ("Match", S),
    ("MaxAuthTries", I),
    ("MaxSessions", I),
    ("MaxStartups", I),
    ("ModuliFile", R),
    ("PAMAuthenticationViaKbdInt", D),
    ("PAMServiceName", I),
    ("PasswordAuthentication", I),
    ("PerSourceMaxStartups", I),
    ("PerSourceNetBlockSize", I),
    ("PerSourcePenalties", I),
    ("PerSourcePenaltyExemptList", I),
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
    ("PubkeyAcceptedAlgorithms", I),
    ("PubkeyAcceptedKeyTypes", A("PubkeyAcceptedAlgorithms")),
    ("PubkeyAuthOptions", I),
    ("PubkeyAuthentication", I),
    ("RDomain", R),
    ("RSAAuthentication", D),
    ("RefuseConnection", I),
    ("RekeyLimit", I),
    ("RequiredRSASize", I),
    ("ReverseMappingCheck", D),
    ("RevokedKeys", I),
    ("RhostsAuthentication", D),
    ("RhostsRSAAuthentication", D),
    ("SecurityKeyProvider", W),
    ("ServerKeyBits", D),
    ("SessionCleanup", I),
    ("SetEnv", I),
    ("SkeyAuthentication", A("KbdInteractiveAuthentication")),
    ("SshdAuthPath", W),
    ("SshdSessionPath", W),
    ("StreamLocalBindMask", W),
    ("StreamLocalBindUnlink", W),
    ("StrictModes", I),
    ("Subsystem", I),
    ("SyslogFacility", I),
    ("TCPKeepAlive", I),
    ("TrustedUserCAKeys", I),
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
            // Parsed and printed, not applied yet: the caveat says so.
            (Class::Warned, Value::Field { .. }) => k.caveat.is_some(),
            (Class::Deprecated | Class::Structural | Class::Alias(_), Value::Nothing) => true,
            _ => false,
        };
        assert!(ok, "{}: {:?} with the wrong kind of value", k.name, k.class);
        assert!(
            k.caveat.is_none() || matches!(k.class, Class::Implemented | Class::Warned),
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
    ("LogVerbose", "kex.c:*:1000"),
    ("ModuliFile", "/etc/ssh/moduli.strong"),
    ("PermitTunnel", "point-to-point"),
    ("RDomain", "%D"),
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
        Err("t.conf:1: Ciphers: Bad SSH2 cipher spec 'aes128-ctr,,x': empty name".into())
    );
    assert_eq!(
        load("DisableForwarding maybe\n"),
        Err("t.conf:1: DisableForwarding: invalid value \"maybe\" (expected yes or no)".into())
    );
    // Equivalent spellings of the honoured value are honoured too.
    assert_eq!(load("UseDNS No\n"), Ok(vec![]));
}

#[test]
fn warned_keywords_warn_unless_honoured() {
    for k in KEYWORDS.iter().filter(|k| k.class == Class::Warned) {
        let Value::Shape { kind, honoured, .. } = k.value else {
            continue;
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
    // internal-sftp is built in: the sftp-only recipe loads without a word.
    assert_eq!(
        load("Match User sftp\n  ChrootDirectory /srv/%u\n  ForceCommand internal-sftp -d /x\n"),
        Ok(vec![])
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
    // ssh-audit's hardening lines: what russh lacks is named and left out.
    assert_eq!(
        load(
            "KexAlgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256\n\
             MACs hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com,umac-64@openssh.com\n"
        ),
        Ok(vec![
            "t.conf:1: KexAlgorithms: sntrup761x25519-sha512@openssh.com is not implemented by \
             rsshd (russh 0.65.1 does not have it); left out of the list"
                .to_string(),
            "t.conf:2: MACs: umac-128-etm@openssh.com, umac-64@openssh.com are not implemented \
             by rsshd (russh 0.65.1 does not have them); left out of the list"
                .to_string(),
        ])
    );
    // LogLevel is applied from the global section only.
    assert_eq!(load("LogLevel VERBOSE\n"), Ok(vec![]));
    assert_eq!(
        load("Match Address 10.0.0.0/8\n  LogLevel DEBUG3\n"),
        Ok(vec![
            "t.conf:2: LogLevel: rsshd applies only the global value (read at start), so a \
             Match block does not change it"
                .to_string()
        ])
    );
}

#[test]
fn transport_keywords_parse_as_sshd() {
    let one = |text: &str| {
        Config::parse_str("t.conf", text, &[])
            .map(|(c, _)| crate::config::dump(c.global()))
            .map_err(|e| e.to_string())
    };
    let has = |text: &str, line: &str| {
        let d = one(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(d.lines().any(|l| l == line), "{line:?} not in\n{d}");
    };
    has(
        "Ciphers aes256-gcm@openssh.com,aes128-ctr\n",
        "ciphers aes256-gcm@openssh.com,aes128-ctr",
    );
    // First value wins, as sshd.
    has(
        "MACs hmac-sha2-512\nMACs hmac-sha2-256\n",
        "macs hmac-sha2-512",
    );
    has(
        "KexAlgorithms -ecdh*\n",
        "kexalgorithms mlkem768x25519-sha256,curve25519-sha256,curve25519-sha256@libssh.org",
    );
    has(
        "PubkeyAcceptedKeyTypes ssh-ed25519\n",
        "pubkeyacceptedalgorithms ssh-ed25519",
    );
    has(
        "HostKeyAlgorithms ssh-ed25519,rsa-sha2-512\n",
        "hostkeyalgorithms ssh-ed25519,rsa-sha2-512",
    );
    has("Compression delayed\n", "compression yes");
    has("Compression no\n", "compression no");
    has("RekeyLimit 1G 1h\n", "rekeylimit 1073741824 3600");
    has("RekeyLimit default 30m\n", "rekeylimit 0 1800");
    has("RekeyLimit 100K none\n", "rekeylimit 102400 0");
    has("Port 22\n", "rekeylimit 0 0");
    has("FingerprintHash md5\n", "fingerprinthash MD5");
    has("Port 22\n", "fingerprinthash SHA256");
    has("RequiredRSASize 3072\n", "requiredrsasize 3072");
    has("SyslogFacility local3\n", "syslogfacility LOCAL3");
    has("LogLevel debug3\n", "loglevel DEBUG3");
    // The alias is named in errors as written.
    assert_eq!(
        one("PubkeyAcceptedKeyTypes ssh-foo\n"),
        Err(
            "t.conf:1: PubkeyAcceptedKeyTypes: Bad key types 'ssh-foo': unknown name ssh-foo"
                .into()
        )
    );
    for (bad, err) in [
        (
            "RekeyLimit 8\n",
            "t.conf:1: RekeyLimit: RekeyLimit too small",
        ),
        (
            "RekeyLimit lots\n",
            "t.conf:1: RekeyLimit: Bad RekeyLimit number 'lots'",
        ),
        (
            "RekeyLimit 1G soon\n",
            "t.conf:1: RekeyLimit: invalid time value \"soon\"",
        ),
        (
            "RekeyLimit 1G 1h x\n",
            "t.conf:1: RekeyLimit: extra arguments at end of line",
        ),
        (
            "FingerprintHash crc32\n",
            "t.conf:1: FingerprintHash: Invalid FingerprintHash algorithm \"crc32\"",
        ),
        (
            "Compression maybe\n",
            "t.conf:1: Compression: invalid value \"maybe\" (expected yes, delayed, no)",
        ),
        (
            "Match User bob\n  RekeyLimit 1M\n",
            "t.conf:2: RekeyLimit: rsshd applies it when the connection starts, before the user \
             name is known, so a Match on User or Group cannot set it; refused because ignoring \
             it could allow more than configured",
        ),
        (
            "Match User bob\n  Ciphers aes128-ctr\n",
            "t.conf:2: Ciphers: Directive 'Ciphers' is not allowed within a Match block",
        ),
    ] {
        assert_eq!(one(bad), Err(err.to_string()), "{bad}");
    }
    // A Match on the address is known when the connection starts.
    let (c, _) = Config::parse_str(
        "t.conf",
        "Match Address 10.0.0.0/8\n  RekeyLimit 1M 10m\n",
        &[],
    )
    .unwrap();
    let spec = crate::config::ConnSpec::parse_cli("addr=10.1.1.1").unwrap();
    assert_eq!(c.resolve(&spec).rekey_limit.bytes, 1 << 20);
    // In a Match, `+` is relative to the default, not to the global value (sshd).
    let (c, _) = Config::parse_str(
        "t.conf",
        "PubkeyAcceptedAlgorithms ssh-ed25519\nMatch User bob\n  PubkeyAcceptedAlgorithms +ssh-rsa\n",
        &[],
    )
    .unwrap();
    let bob = c.resolve(&crate::config::ConnSpec::parse_cli("user=bob").unwrap());
    assert_eq!(bob.pubkey_accepted_algorithms.len(), 17);
    assert_eq!(bob.pubkey_accepted_algorithms.last(), Some(&"ssh-rsa"));
    assert_eq!(c.global().pubkey_accepted_algorithms, vec!["ssh-ed25519"]);
}

#[test]
fn ca_signature_algorithms_are_checked_and_printed() {
    assert_eq!(
        load(
            "CASignatureAlgorithms ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,sk-ssh-ed25519@openssh.com,sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,rsa-sha2-256\n"
        ),
        Ok(vec![])
    );
    assert_eq!(load("CASignatureAlgorithms -rsa*\n"), Ok(vec![]));
    assert!(load("CASignatureAlgorithms ssh-ed25519-cert-v01@openssh.com\n").is_err());
    let (c, _) = Config::parse_str("t.conf", "CASignatureAlgorithms ^ssh-rsa\n", &[]).unwrap();
    assert!(
        crate::config::dump(c.global()).contains("\ncasignaturealgorithms ssh-rsa,ssh-ed25519,")
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

#[test]
fn key_commands_must_be_absolute_paths() {
    assert_eq!(
        load("AuthorizedKeysCommand /usr/bin/sss_ssh_authorizedkeys %u\n"),
        Ok(vec![])
    );
    assert_eq!(load("AuthorizedPrincipalsCommand none\n"), Ok(vec![]));
    for k in ["AuthorizedKeysCommand", "AuthorizedPrincipalsCommand"] {
        let e = load(&format!("{k} sss_ssh_authorizedkeys %u\n")).unwrap_err();
        assert!(e.contains("must be an absolute path"), "{e}");
    }
}
