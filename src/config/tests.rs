//! Loader-level tests: errors with file:line, first-value-wins, Match, Include, warnings.

use super::*;
use std::time::Duration;

fn parse(text: &str) -> (Config, Vec<Warning>) {
    Config::parse_str("t.conf", text, &[]).unwrap()
}

fn err(text: &str) -> String {
    Config::parse_str("t.conf", text, &[])
        .unwrap_err()
        .to_string()
}

fn spec(s: &str) -> ConnSpec {
    ConnSpec::parse_cli(s).unwrap()
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "rsshd-config-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `%` token the keyword does not know is refused at load (sshd fails each
/// login that expands it); inside a `Match` block too.
#[test]
fn unknown_tokens_are_refused_at_load() {
    assert_eq!(
        err("ChrootDirectory /srv/%d"),
        "t.conf:1: ChrootDirectory: \"/srv/%d\": unknown key %d (tokens here: %h %u %U %%)"
    );
    assert_eq!(
        err("AuthorizedKeysFile .ssh/authorized_keys /etc/keys/%n"),
        "t.conf:1: AuthorizedKeysFile: \"/etc/keys/%n\": unknown key %n (tokens here: %h %u %U %%)"
    );
    assert!(
        err("Match User bob\n  AuthorizedPrincipalsFile /p/%")
            .starts_with("t.conf:2: AuthorizedPrincipalsFile: \"/p/%\": invalid format")
    );
    assert!(err("AuthorizedKeysCommand /bin/k %u %i").contains("unknown key %i"));
    for ok in [
        "ChrootDirectory ~/jail/%u/%U/%%",
        "AuthorizedKeysFile %h/.ssh/authorized_keys /etc/keys/%u",
        "AuthorizedKeysCommand /bin/k %C %D %f %h %k %t %U %u",
        "AuthorizedPrincipalsCommand /bin/p %C %D %F %f %h %i %K %k %s %T %t %U %u",
    ] {
        assert!(Config::parse_str("t.conf", ok, &[]).is_ok(), "{ok}");
    }
}

#[test]
fn error_messages_name_file_line_keyword() {
    assert_eq!(
        err("Port 22\n\nClientAliveInterval banana\n"),
        "t.conf:3: ClientAliveInterval: invalid time value \"banana\""
    );
    assert_eq!(
        err("clientaliveinterval 5x"),
        "t.conf:1: ClientAliveInterval: invalid time value \"5x\""
    );
    assert_eq!(err("FooBar 1"), "t.conf:1: FooBar: unknown keyword");
    assert_eq!(
        err("PasswordAuthentication maybe"),
        "t.conf:1: PasswordAuthentication: invalid value \"maybe\" (expected yes or no)"
    );
    assert_eq!(
        err("MaxAuthTries many"),
        "t.conf:1: MaxAuthTries: invalid integer \"many\""
    );
    assert_eq!(
        err("MaxAuthTries -1"),
        "t.conf:1: MaxAuthTries: invalid integer \"-1\""
    );
    assert_eq!(err("Port"), "t.conf:1: Port: missing argument");
    assert_eq!(
        err("Port 22 23"),
        "t.conf:1: Port: extra arguments at end of line"
    );
    assert_eq!(err("Port -1"), "t.conf:1: Port: bad port number \"-1\"");
    assert_eq!(
        err("Port 70000"),
        "t.conf:1: Port: bad port number \"70000\""
    );
    assert_eq!(
        err("PermitRootLogin sometimes"),
        "t.conf:1: PermitRootLogin: invalid value \"sometimes\" (expected yes, prohibit-password, without-password, forced-commands-only, no)"
    );
    assert_eq!(
        err("Banner \"/etc/issue"),
        "t.conf:1: Banner: unterminated quote"
    );
    assert!(err("ListenAddress [::1:22").starts_with("t.conf:1: ListenAddress: bad address"));
    assert!(
        err("ListenAddress 1.2.3.4:http").starts_with("t.conf:1: ListenAddress: bad port number")
    );
    assert!(err("MaxStartups 10:30").starts_with("t.conf:1: MaxStartups: invalid value"));
    assert!(err("MaxStartups 50:30:10").starts_with("t.conf:1: MaxStartups: invalid value"));
    assert!(err("MaxStartups 10:130:100").starts_with("t.conf:1: MaxStartups: invalid value"));
    assert!(
        err("ChannelTimeout session")
            .starts_with("t.conf:1: ChannelTimeout: invalid channel timeout")
    );
    assert!(err("ChannelTimeout session=1m none").contains("must appear alone"));
    assert!(err("UnusedConnectionTimeout never").contains("invalid time value \"never\""));
    assert!(err("IdleActivity output").starts_with("t.conf:1: IdleActivity: invalid value"));
    assert!(err("AcceptEnv A=B").contains("invalid environment name"));
    assert!(err("SetEnv FOO").contains("invalid environment"));
    assert!(err("Subsystem sftp").contains("missing subsystem command"));
    assert!(err("AuthenticationMethods publickey,magic").contains("invalid authentication method"));
    assert!(err("AuthenticationMethods any publickey").contains("must appear alone"));
    assert!(err("PermitOpen host").contains("invalid host:port"));
    assert!(err("AllowUsers bob@10.0.0.0/99").contains("invalid pattern"));
    assert!(err("LogLevel LOUD").starts_with("t.conf:1: LogLevel: invalid value"));
    assert!(err("SyslogFacility KERN").starts_with("t.conf:1: SyslogFacility: invalid value"));
    assert!(err("X11Forwarding perhaps").starts_with("t.conf:1: X11Forwarding: invalid value"));
    assert_eq!(
        err("Match Bogus x"),
        "t.conf:1: Match: unsupported criterion \"Bogus\""
    );
    assert_eq!(
        err("Match User"),
        "t.conf:1: Match: missing argument for criterion \"User\""
    );
    assert!(
        err("Match Address 10.0.0.0/40").starts_with("t.conf:1: Match: Address: invalid network")
    );
}

#[test]
fn match_forbidden_keyword() {
    assert_eq!(
        err("Port 22\nMatch User alice\n  Port 2222\n"),
        "t.conf:3: Port: Directive 'Port' is not allowed within a Match block"
    );
    // Errors inside a Match block are found even when it never applies.
    assert!(
        err("Match User nobody-at-all\n  MaxSessions lots\n").starts_with("t.conf:2: MaxSessions")
    );
}

#[test]
fn equals_quotes_comments_and_case() {
    let (c, _) = parse(
        "# comment\nport=2200\nLISTENADDRESS = 127.0.0.1\nBanner \"/etc/my banner\" # trailing\n\n  acceptenv LANG LC_*\n",
    );
    let g = c.global();
    assert_eq!(g.port, vec![2200]);
    assert_eq!(
        g.listen_address,
        vec![ListenAddress {
            host: "127.0.0.1".into(),
            port: None
        }]
    );
    assert_eq!(g.banner, Some(PathBuf::from("/etc/my banner")));
    assert_eq!(g.accept_env, vec!["LANG", "LC_*"]);
}

#[test]
fn first_value_wins() {
    let (c, _) = parse(
        "LoginGraceTime 30\nLoginGraceTime 60\nPermitRootLogin no\nPermitRootLogin yes\n\
         AuthorizedKeysFile a\nAuthorizedKeysFile b c\nSetEnv A=1 A=2 B=3\nSetEnv C=4\n\
         ClientAliveCountMax 0\nClientAliveCountMax 5\nForceCommand /bin/true \"x y\"\n",
    );
    let g = c.global();
    assert_eq!(g.login_grace_time, Duration::from_secs(30));
    assert_eq!(g.permit_root_login, PermitRootLogin::No);
    assert_eq!(g.authorized_keys_file, vec!["a"]);
    // sshd: only the first SetEnv line counts, and the first value of a name wins.
    assert_eq!(
        g.set_env,
        vec![("A".into(), "1".into()), ("B".into(), "3".into())]
    );
    assert_eq!(g.client_alive_count_max, 0);
    assert_eq!(g.force_command.as_deref(), Some("/bin/true \"x y\""));
}

#[test]
fn lists_accumulate() {
    let (c, _) = parse(
        "Port 22\nPort 2222\nListenAddress 127.0.0.1\nListenAddress [::1]:2200\nHostKey /a\nHostKey /b\n\
         AllowUsers alice\nAllowUsers bob carol\nAcceptEnv LANG\nAcceptEnv TZ\n\
         Subsystem sftp /usr/lib/openssh/sftp-server\nSubsystem sftp /other\nSubsystem x /bin/x -a \"b c\"\n\
         MaxStartups 10:30:60\nMaxStartups 5\n",
    );
    let g = c.global();
    assert_eq!(g.port, vec![22, 2222]);
    assert_eq!(g.listen_address.len(), 2);
    assert_eq!(g.host_key, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
    assert_eq!(g.allow_users, vec!["alice", "bob", "carol"]);
    assert_eq!(g.accept_env, vec!["LANG", "TZ"]);
    assert_eq!(
        g.subsystem,
        vec![
            ("sftp".into(), "/usr/lib/openssh/sftp-server".into()),
            ("x".into(), "/bin/x -a b c".into())
        ]
    );
    // MaxStartups is sshd's one last-wins keyword; the short form keeps the rate.
    assert_eq!(g.max_startups, (5, 30, 5));
    let d = dump(g);
    assert!(
        d.contains(
            "listenaddress 127.0.0.1:22\nlistenaddress 127.0.0.1:2222\nlistenaddress [::1]:2200\n"
        ),
        "{d}"
    );
}

#[test]
fn overrides_win_and_replace_ports() {
    let o = vec![
        "Port 2022".to_string(),
        "PasswordAuthentication no".to_string(),
    ];
    let (c, _) = Config::parse_str("t.conf", "Port 22\nPasswordAuthentication yes\n", &o).unwrap();
    assert_eq!(c.global().port, vec![2022]);
    assert!(!c.global().password_authentication);
    let e = Config::parse_str("t.conf", "", &["Port 22".into(), "LoginGraceTime x".into()])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "command-line:2: LoginGraceTime: invalid time value \"x\""
    );
    assert!(Config::parse_str("t.conf", "", &["Match All".into()]).is_err());
    assert!(Config::parse_str("t.conf", "", &["Include /x".into()]).is_err());
}

#[test]
fn embedded_defaults() {
    let (c, w) = Config::embedded(&[]).unwrap();
    assert!(w.is_empty());
    let g = c.global();
    assert_eq!(g.port, vec![2222]);
    assert_eq!(
        g.listen_address,
        vec![ListenAddress {
            host: "127.0.0.1".into(),
            port: None
        }]
    );
    assert_eq!(g.idle_timeout, Some(Duration::from_secs(900)));
    assert_eq!(g.idle_warning, Some(Duration::from_secs(60)));
    assert!(dump(g).contains("listenaddress 127.0.0.1:2222\n"));
    let (c, _) = Config::embedded(&[
        "Port 2200".into(),
        "ListenAddress 0.0.0.0".into(),
        "IdleTimeout none".into(),
    ])
    .unwrap();
    let g = c.global();
    assert_eq!(g.port, vec![2200]);
    assert_eq!(
        g.listen_address,
        vec![ListenAddress {
            host: "0.0.0.0".into(),
            port: None
        }]
    );
    assert_eq!(g.idle_timeout, None);
}

#[test]
fn warnings_for_unsupported_and_deprecated() {
    let (_, w) = parse(
        "X11Forwarding yes\nX11Forwarding no\nGSSAPIAuthentication yes\nUseLogin no\n\
         UsePrivilegeSeparation sandbox\nProtocol 2\nChallengeResponseAuthentication no\n\
         Match User bob\n  AllowStreamLocalForwarding yes\n",
    );
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        vec![
            "t.conf:1: X11Forwarding: not supported by rsshd, ignored",
            "t.conf:3: GSSAPIAuthentication: not supported by rsshd, ignored",
            "t.conf:4: UseLogin: deprecated, ignored",
            "t.conf:5: UsePrivilegeSeparation: deprecated, ignored",
            "t.conf:6: Protocol: deprecated, ignored",
            "t.conf:9: AllowStreamLocalForwarding: not supported by rsshd, ignored",
        ]
    );
}

#[test]
fn alias_shares_first_value() {
    let (c, _) = parse("ChallengeResponseAuthentication no\nKbdInteractiveAuthentication yes\n");
    assert!(!c.global().kbd_interactive_authentication);
}

#[test]
fn match_blocks_apply_per_connection() {
    let (c, _) = parse(
        "PasswordAuthentication no\nAcceptEnv LANG\nClientAliveInterval 10\n\
         Match User alice\n  PasswordAuthentication yes\n  AcceptEnv FOO\n  IdleTimeout 5m\n\
         Match Address 10.0.0.0/8,!10.9.0.0/16\n  PasswordAuthentication no\n  AcceptEnv BAR\n  ClientAliveInterval 20\n\
         Match LocalPort 2222 LocalAddress 127.0.0.1\n  ForceCommand /bin/echo hi\n\
         Match Host *.example.com\n  Banner /etc/issue.net\n\
         Match all\n  IdleTimeout 1h\n",
    );
    let g = c.global();
    assert!(!g.password_authentication);
    assert_eq!(g.idle_timeout, None);

    let a = c.resolve(&spec("user=alice,addr=10.1.2.3"));
    assert!(a.password_authentication, "first matching Match wins");
    assert_eq!(
        a.accept_env,
        vec!["FOO", "BAR"],
        "a Match list replaces the global one"
    );
    assert_eq!(a.idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(a.client_alive_interval, Duration::from_secs(20));

    let b = c.resolve(&spec("user=bob,addr=10.9.0.1"));
    assert!(!b.password_authentication);
    assert_eq!(b.accept_env, vec!["LANG"]);
    assert_eq!(b.client_alive_interval, Duration::from_secs(10));
    assert_eq!(b.idle_timeout, Some(Duration::from_secs(3600)));

    let l = c.resolve(&spec("lport=2222,laddr=127.0.0.1"));
    assert_eq!(l.force_command.as_deref(), Some("/bin/echo hi"));
    assert_eq!(c.resolve(&spec("lport=2222,laddr=::1")).force_command, None);
    assert_eq!(
        c.resolve(&spec("host=WWW.EXAMPLE.COM")).banner,
        Some(PathBuf::from("/etc/issue.net"))
    );

    // No user in the spec: Match User does not apply (sshd -T without -C user=).
    assert!(!c.resolve(&spec("addr=192.168.0.1")).password_authentication);
}

#[test]
fn match_none_clears_and_group() {
    let (c, _) = parse(
        "ForceCommand /bin/false\nBanner /etc/issue\nMatch Group root\n  ForceCommand none\n  Banner none\n",
    );
    assert_eq!(c.global().force_command.as_deref(), Some("/bin/false"));
    let r = c.resolve(&spec("user=root"));
    assert_eq!(r.force_command, None);
    assert_eq!(r.banner, None);
    let mut s = spec("user=someone");
    s.groups = Some(vec!["users".into()]);
    assert_eq!(c.resolve(&s).force_command.as_deref(), Some("/bin/false"));
}

#[test]
fn conn_spec_parsing() {
    let s = spec("user=alice,addr=10.0.0.5,host=x,laddr=::1,lport=22");
    assert_eq!(s.user.as_deref(), Some("alice"));
    assert_eq!(s.addr, Some("10.0.0.5".parse().unwrap()));
    assert_eq!(s.laddr, Some("::1".parse().unwrap()));
    assert_eq!(s.lport, Some(22));
    assert_eq!(s.host.as_deref(), Some("x"));
    assert!(ConnSpec::parse_cli("user").is_err());
    assert!(ConnSpec::parse_cli("colour=blue").is_err());
    assert!(ConnSpec::parse_cli("addr=banana").is_err());
    assert!(ConnSpec::parse_cli("lport=x").is_err());
}

#[test]
fn include_globs_relative_nested_and_in_match() {
    let d = TempDir::new("inc");
    d.write("conf.d/20-b.conf", "AcceptEnv B\n");
    d.write("conf.d/10-a.conf", "AcceptEnv A\nInclude nested/*.conf\n");
    d.write("conf.d/ignored.txt", "Bogus yes\n");
    d.write(
        "nested/x.conf",
        "AcceptEnv X\nMatch User carol\n  MaxSessions 3\n",
    );
    d.write(
        "matchonly.conf",
        "MaxSessions 7\nMatch Address 10.0.0.0/8\n  MaxSessions 8\n",
    );
    let main = d.write(
        "sshd_config",
        "Include conf.d/*.conf\nInclude none-such/*.conf\nAcceptEnv MAIN\nMaxSessions 1\n\
         Match User alice\n  Include matchonly.conf\n",
    );
    let (c, w) = Config::load_file(&main, &[]).unwrap();
    assert!(w.is_empty());
    let g = c.global();
    // Sorted glob order, nested include expanded in place, then the main file.
    assert_eq!(g.accept_env, vec!["A", "X", "B", "MAIN"]);
    assert_eq!(g.max_sessions, 1);
    // The Match in nested/x.conf ends with that file.
    assert_eq!(c.resolve(&spec("user=carol")).max_sessions, 3);
    assert_eq!(
        c.resolve(&spec("user=carol")).accept_env,
        vec!["A", "X", "B", "MAIN"]
    );
    // An Include inside a Match applies only within it, and its own Match nests.
    assert_eq!(c.resolve(&spec("user=alice")).max_sessions, 7);
    assert_eq!(c.resolve(&spec("user=bob,addr=10.0.0.1")).max_sessions, 1);
    assert_eq!(c.resolve(&spec("user=alice,addr=10.0.0.1")).max_sessions, 7);

    // Errors inside an included file name that file.
    let bad = d.write("bad.conf", "\nMaxSessions x\n");
    let main2 = d.write("main2", &format!("Include {}\n", bad.display()));
    let e = Config::load_file(&main2, &[]).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{}:2: MaxSessions: invalid integer \"x\"", bad.display())
    );

    // Non-Match-able keyword in a file included from a Match block.
    d.write("port.conf", "Port 2\n");
    let main3 = d.write("main3", "Match User x\nInclude port.conf\n");
    let e = Config::load_file(&main3, &[]).unwrap_err().to_string();
    assert!(
        e.ends_with("port.conf:1: Port: Directive 'Port' is not allowed within a Match block"),
        "{e}"
    );
}

#[test]
fn include_recursion_is_bounded() {
    let d = TempDir::new("loop");
    let main = d.write("loop.conf", "Include loop.conf\n");
    let e = Config::load_file(&main, &[]).unwrap_err().to_string();
    assert!(e.contains("Include: too many nested includes"), "{e}");
}

#[test]
fn missing_file_is_an_error() {
    let e = Config::load_file(Path::new("/nonexistent/rsshd/sshd_config"), &[]).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/rsshd/sshd_config: ")
    );
}

#[test]
fn debian_stock_config_loads() {
    let stock = Path::new("/etc/ssh/sshd_config");
    if !stock.exists() {
        eprintln!("skipping: {} not present", stock.display());
        return;
    }
    let (c, w) = Config::load_file(stock, &[]).unwrap();
    assert!(
        w.iter().any(|w| w.message.starts_with("X11Forwarding")),
        "{w:?}"
    );
    let g = c.global();
    assert!(g.use_pam);
    assert!(!g.kbd_interactive_authentication);
    assert!(!g.print_motd);
    assert_eq!(g.accept_env, vec!["LANG", "LC_*"]);
    assert_eq!(
        g.subsystem,
        vec![("sftp".into(), "/usr/lib/openssh/sftp-server".into())]
    );
}

#[test]
fn stock_text_loads_standalone() {
    // The Debian 12 file, inline, so the test does not depend on this machine.
    let text = "Include /nonexistent-rsshd-test/sshd_config.d/*.conf\n#Port 22\n\
        KbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\nPrintMotd no\n\
        AcceptEnv LANG LC_*\nSubsystem\tsftp\t/usr/lib/openssh/sftp-server\n";
    let (c, w) = parse(text);
    assert_eq!(w.len(), 1);
    assert!(c.global().use_pam);
}

#[test]
fn config_is_shareable_and_address_family_narrows_wildcards() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Config>();
    let (c, _) = parse("AddressFamily inet\nPort 2200\n");
    let d = dump(c.global());
    assert!(d.contains("listenaddress 0.0.0.0:2200\n"));
    assert!(!d.contains("[::]"));
    let (c, _) = parse("AddressFamily inet6\n");
    assert!(!dump(c.global()).contains("0.0.0.0"));
}

#[test]
fn every_implemented_keyword_is_printed_by_dump() {
    use keywords::{Class, KEYWORDS};
    let (c, _) = parse("");
    let d = dump(c.global());
    // sshd prints these only when set.
    let only_when_set = [
        "allowusers",
        "denyusers",
        "allowgroups",
        "denygroups",
        "acceptenv",
        "setenv",
        "channeltimeout",
        "subsystem",
        "hostcertificate",
    ];
    for k in KEYWORDS.iter().filter(|k| k.class == Class::Implemented) {
        let lower = k.name.to_ascii_lowercase();
        let printed = d
            .lines()
            .any(|l| l.split(' ').next() == Some(lower.as_str()));
        assert_eq!(
            printed,
            !only_when_set.contains(&lower.as_str()),
            "{lower} in\n{d}"
        );
    }
    let (c, _) = parse(
        "AllowUsers a\nDenyUsers b\nAllowGroups c\nDenyGroups d\nAcceptEnv E\nSetEnv F=1\nChannelTimeout session=1m\nSubsystem s /bin/s\nHostCertificate /etc/ssh/c.pub\n",
    );
    let d = dump(c.global());
    for k in only_when_set {
        assert!(d.lines().any(|l| l.split(' ').next() == Some(k)), "{k}");
    }
}
