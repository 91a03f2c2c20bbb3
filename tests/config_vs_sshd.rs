//! Differential test: for configs with Match blocks, the library's `-T` output after
//! `resolve` must equal `/usr/sbin/sshd -T -C ...` on every keyword both implement
//! (rsshd's implemented keywords that sshd 9.2 prints), and the cases must between
//! them give every such keyword a value other than its default.
//! Skips (with a message) when sshd is missing or we are not root.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use rsshd::config::{Config, ConnSpec, dump, implemented_keywords};

const SSHD: &str = "/usr/sbin/sshd";

/// Removes from both defaults what only one of them has (see its use).
const TRANSPORT: &str = "KexAlgorithms -sntrup*,diffie-hellman*,mlkem*\nMACs -umac*,hmac-sha1*\n";

/// (config body, connection specs to try). Each spec is given to both implementations.
fn cases() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        (
            // Match User with a list and negation.
            "PasswordAuthentication no\nMaxAuthTries 4\nAllowUsers root nobody alice\n\
             Match User *,!root\n  PasswordAuthentication yes\n  MaxAuthTries 2\n  AllowUsers nobody\n\
             Match User root,alice\n  PermitRootLogin no\n  KbdInteractiveAuthentication no\n",
            vec![
                "user=root,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22",
                "user=nobody,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22",
                "user=alice,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22",
                "addr=10.0.0.1",
            ],
        ),
        (
            // Match Group (system groups: root is in root, nobody in nogroup).
            "ForceCommand /bin/false\nDenyGroups adm\n\
             Match Group root\n  ForceCommand none\n  MaxSessions 2\n  DenyGroups wheel staff\n\
             Match Group nogroup,!root\n  PermitTTY no\n  ForceCommand internal-sftp -d /srv\n  \
             ChrootDirectory /srv/%u\n",
            vec![
                "user=root,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22",
                "user=nobody,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22",
                "user=no-such-user-rsshd,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22",
            ],
        ),
        (
            // Match Address with CIDR and a negated subnet.
            "ClientAliveInterval 30\nAcceptEnv LANG LC_*\n\
             Match Address 10.0.0.0/8,!10.9.0.0/16\n  ClientAliveInterval 5m\n  ClientAliveCountMax 0\n  AcceptEnv TZ\n  UnusedConnectionTimeout 1h\n\
             Match Address 192.168.1.0/24,fd00::/8\n  Banner /etc/issue.net\n  AuthenticationMethods publickey,password publickey,keyboard-interactive\n",
            vec![
                "user=alice,host=h,addr=10.1.2.3,laddr=127.0.0.1,lport=22",
                "user=alice,host=h,addr=10.9.2.3,laddr=127.0.0.1,lport=22",
                "user=alice,host=h,addr=192.168.1.77,laddr=127.0.0.1,lport=22",
                "user=alice,host=h,addr=fd00::5,laddr=::1,lport=22",
            ],
        ),
        (
            // Match LocalPort / LocalAddress, several criteria on one line.
            "Port 22\nPort 2222\nListenAddress 127.0.0.1\nListenAddress [::1]:2300\n\
             Match LocalPort 2222 LocalAddress 127.0.0.1\n  AllowTcpForwarding local\n  GatewayPorts clientspecified\n  PermitOpen 10.0.0.1:80 db:5432\n  PermitListen 8080\n\
             Match LocalPort 22\n  AllowAgentForwarding no\n  PermitOpen none\n",
            vec![
                "user=alice,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=2222",
                "user=alice,host=h,addr=10.0.0.1,laddr=::1,lport=2222",
                "user=alice,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22",
            ],
        ),
        (
            // Match Host and Match All; time formats.
            "LoginGraceTime 1h30m\nChannelTimeout session=5m\nAuthorizedKeysFile .ssh/authorized_keys\n\
             Match Host *.example.com,!bad.example.com\n  Banner /etc/issue\n  PubkeyAuthentication no\n\
             Match All\n  ChannelTimeout session=1h *=30s\n  AuthorizedKeysFile /etc/ssh/keys/%u\n  ClientAliveCountMax 7\n",
            vec![
                "user=alice,host=www.example.com,addr=10.0.0.1,laddr=127.0.0.1,lport=22",
                "user=alice,host=bad.example.com,addr=10.0.0.1,laddr=127.0.0.1,lport=22",
                "addr=10.0.0.1",
            ],
        ),
        (
            // Globals and list keywords, plus a Match that replaces lists.
            "Port 2200\nListenAddress 0.0.0.0\nMaxStartups 5\nUsePAM yes\nPrintMotd no\nStrictModes no\n\
             PermitRootLogin forced-commands-only\nAddressFamily inet\n\
             SetEnv A=1 \"B=two words\"\nSetEnv C=3\nAllowGroups staff root\nDenyUsers eve mallory@10.0.0.0/8\n\
             PermitUserEnvironment LANG,TZ\nSubsystem sftp /usr/lib/openssh/sftp-server -l INFO\nSubsystem backup \"/usr/bin/backup --serve\"\n\
             Match User root Address 127.0.0.0/8\n  SetEnv D=4\n  AllowGroups root\n  PermitEmptyPasswords yes\n",
            vec![
                "user=root,host=h,addr=127.0.0.1,laddr=127.0.0.1,lport=2200",
                "user=root,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=2200",
                "user=alice,host=h,addr=127.0.0.1,laddr=127.0.0.1,lport=2200",
            ],
        ),
        (
            // Implicit wildcard listeners, several ports, narrowed by AddressFamily.
            "AddressFamily inet6\nPort 2201\nPort 2202\nMatch User root\n  MaxSessions 1\n  AllowAgentForwarding no\n",
            vec!["user=root,host=h,addr=::1,laddr=::1,lport=2201"],
        ),
        (
            "Port 2201\nPort 2202\n",
            vec!["user=root,host=h,addr=::1,laddr=::1,lport=2201"],
        ),
        (
            // Old spellings, first value wins across them, globals sshd 9.2 keeps
            // global, OpenSSH's channel type names and times printed as written.
            "ChallengeResponseAuthentication no\nKbdInteractiveAuthentication yes\nKeepAlive no\n\
             PrintLastLog no\nPrintMotd yes\nPidFile none\nDSAAuthentication no\n\
             ChannelTimeout session=300 direct-tcpip=1H session:command=5m session:subsystem:sftp=0\n\
             Subsystem sftp internal-sftp -f AUTH -l VERBOSE\nMaxStartups 3:50:9\nMaxStartups 4\nPerSourceMaxStartups 3\nPerSourceNetBlockSize 24:64\nPerSourceNetBlockSize 16\n\
             PermitUserEnvironment yes\nAuthenticationMethods password publickey,keyboard-interactive:pam\n\
             Match LocalPort 22\n  PermitRootLogin prohibit-password\n  AllowTcpForwarding remote\n\
             GatewayPorts yes\n  ChannelTimeout none\n  MaxAuthTries 0\n  ClientAliveInterval 1w\n",
            vec![
                "user=alice,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22",
                "user=alice,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=23",
            ],
        ),
        (
            // Algorithm lists in sshd's forms (`^`, `-` with `!`, wildcards, `+`),
            // the transport keywords, and the ones a Match may change.
            "Ciphers ^aes256-ctr,aes128-cbc\nHostKeyAlgorithms ssh-ed25519*,rsa-sha2-512\n\
             PubkeyAcceptedAlgorithms +ssh-rsa\nRequiredRSASize 2048\nRekeyLimit 1G 1h\n\
             Compression no\nFingerprintHash md5\nLogLevel VERBOSE\nSyslogFacility LOCAL3\n\
             Match Address 10.0.0.0/8\n  RekeyLimit 512M\n  PubkeyAcceptedAlgorithms -*cert*,!ssh-ed25519-cert*\n\
             RequiredRSASize 3072\n\
             Match User alice\n  PubkeyAcceptedAlgorithms sk-*,ssh-ed25519\n",
            vec![
                "user=alice,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22",
                "user=bob,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22",
                "user=alice,host=h,addr=192.168.0.1,laddr=127.0.0.1,lport=22",
            ],
        ),
        (
            // Revocation, DNS and forwarding switches; Match RDomain (a VRF name, or
            // "" for a socket bound to no device).
            "UseDNS yes\nRevokedKeys /etc/ssh/revoked_keys\n\
             Match RDomain blue,!red\n  DisableForwarding yes\n  RevokedKeys /etc/ssh/krl.blue\n  PermitUserRC no\n",
            vec![
                "user=alice,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22,rdomain=blue",
                "user=alice,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22,rdomain=red",
                "user=alice,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22,rdomain=",
            ],
        ),
        (
            // Certificates, key sources, security-key flags and ExposeAuthInfo; a
            // Match may change each (HostKeyAgent is global only). (sshd 9.2 sets
            // AuthorizedPrincipalsCommand only while AuthorizedKeysCommand is unset,
            // a slip in servconf.c's parse_command, hence this order.)
            "TrustedUserCAKeys /etc/ssh/user_ca.pub\nAuthorizedPrincipalsFile /etc/ssh/principals/%u\n\
             CASignatureAlgorithms ssh-ed25519,rsa-sha2-512\nHostKeyAgent /run/rsshd-test/hostkey-agent.sock\n\
             AuthorizedPrincipalsCommand /usr/local/bin/principals %u %i %s\n\
             AuthorizedPrincipalsCommandUser nobody\n\
             AuthorizedKeysCommand /usr/bin/sss_ssh_authorizedkeys %u\nAuthorizedKeysCommandUser nobody\n\
             Match User bob\n  TrustedUserCAKeys none\n  AuthorizedKeysCommand none\n\
             CASignatureAlgorithms -rsa*\n  AuthorizedPrincipalsFile .ssh/principals\n\
               ExposeAuthInfo yes\n  PubkeyAuthOptions touch-required verify-required\n",
            vec![
                "user=alice,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22",
                "user=bob,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22",
            ],
        ),
    ]
}

/// `keyword value` lines of `-T` output for the keywords in `keys`, in order.
fn compared(text: &str, keys: &BTreeSet<String>) -> Vec<String> {
    text.lines()
        .filter(|l| keys.contains(l.split(' ').next().unwrap_or("")))
        .map(str::to_string)
        .collect()
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("rsshd-config-vs-sshd-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

fn sshd_usable() -> Result<(), String> {
    if !Path::new(SSHD).exists() {
        return Err(format!("{SSHD} not installed"));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("sshd -T needs root".into());
    }
    if !Path::new("/run/sshd").exists() {
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
    }
    Ok(())
}

fn sshd_dump(file: &Path, spec: Option<&str>) -> String {
    let mut cmd = Command::new(SSHD);
    cmd.arg("-T").arg("-f").arg(file);
    if let Some(spec) = spec {
        cmd.arg("-C").arg(spec);
    }
    let out = cmd.output().expect("run sshd -T");
    assert!(
        out.status.success(),
        "{} {spec:?}: sshd -T failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first value printed for each keyword.
fn values(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut m = std::collections::BTreeMap::new();
    for l in text.lines() {
        let (k, v) = l.split_once(' ').unwrap_or((l, ""));
        m.entry(k.to_string()).or_insert_with(|| v.to_string());
    }
    m
}

#[test]
fn resolve_and_dump_match_sshd() {
    if let Err(why) = sshd_usable() {
        support::skip(&why);
        return;
    }
    let dir = tempdir();
    let hk = dir.join("hk");
    if !hk.exists() {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(&hk)
            .status()
            .expect("run ssh-keygen");
        assert!(st.success(), "ssh-keygen failed");
    }
    // The common set: what rsshd implements and sshd 9.2 prints, from a config that
    // makes sshd print its list keywords too.
    let probe = dir.join("probe.conf");
    std::fs::write(
        &probe,
        format!(
            "HostKey {}\nAllowUsers a\nDenyUsers b\nAllowGroups c\nDenyGroups d\nAcceptEnv E\n\
             SetEnv F=1\nChannelTimeout session=1m\nSubsystem s /bin/s\n",
            hk.display()
        ),
    )
    .expect("write probe");
    let sshd_keys: BTreeSet<String> = values(&sshd_dump(&probe, None)).into_keys().collect();
    let keys: BTreeSet<String> = implemented_keywords()
        .into_iter()
        .filter(|k| sshd_keys.contains(k))
        .collect();
    assert!(keys.len() >= 40, "common set too small: {keys:?}");
    // sshd's defaults, to know which compared lines exercised a keyword.
    let empty = dir.join("empty.conf");
    std::fs::write(&empty, "").expect("write");
    let defaults = values(&sshd_dump(&empty, None));

    let mut failures = Vec::new();
    let mut compared_lines = 0;
    let mut exercised = BTreeSet::new();
    for (i, (body, specs)) in cases().into_iter().enumerate() {
        let file = dir.join(format!("case{i}.conf"));
        // PidFile: rsshd writes none unless told (it must not take sshd's
        // /run/sshd.pid); every case names one, so both print the same. Likewise
        // the default KexAlgorithms and MACs differ on purpose (rsshd leaves out
        // finite-field DH and SHA-1, russh has no umac or sntrup, sshd 9.2 no
        // mlkem): every case removes those with `-` lists, which then agree.
        let text = format!(
            "HostKey {}\nPidFile {}/case{i}.pid\n{TRANSPORT}{body}",
            hk.display(),
            dir.display()
        );
        std::fs::write(&file, &text).expect("write config");
        let (config, _warnings) =
            Config::load_file(&file, &[]).unwrap_or_else(|e| panic!("case {i}: {e}"));
        for spec in specs {
            let sshd_text = sshd_dump(&file, Some(spec));
            let theirs = compared(&sshd_text, &keys);
            let cs = ConnSpec::parse_cli(spec).expect("spec");
            let ours = compared(&dump(&config.resolve(&cs)), &keys);
            compared_lines += theirs.len();
            for (k, v) in values(&theirs.join("\n")) {
                if defaults.get(&k) != Some(&v) {
                    exercised.insert(k);
                }
            }
            if theirs != ours {
                let only_theirs: Vec<_> = theirs.iter().filter(|l| !ours.contains(l)).collect();
                let only_ours: Vec<_> = ours.iter().filter(|l| !theirs.contains(l)).collect();
                failures.push(format!(
                    "case {i} -C {spec}:\n  sshd only:  {only_theirs:?}\n  rsshd only: {only_ours:?}"
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let unexercised: Vec<_> = keys.difference(&exercised).collect();
    assert!(
        unexercised.is_empty(),
        "no case gives these a non-default value: {unexercised:?}"
    );
    assert!(
        compared_lines > 800,
        "suspiciously little compared: {compared_lines}"
    );
}

/// Lines whose defaults differ from sshd's on purpose.
fn deliberate(line: &str) -> bool {
    ["pidfile ", "kexalgorithms ", "macs "]
        .iter()
        .any(|p| line.starts_with(p))
}

/// Debian's stock file (no HostKey, PAM, an Include) means the same to both,
/// including the host keys in force.
#[test]
fn stock_config_dump_matches_sshd() {
    if let Err(why) = sshd_usable() {
        support::skip(&why);
        return;
    }
    let stock = Path::new("/etc/ssh/sshd_config");
    if !stock.exists() {
        support::skip("no /etc/ssh/sshd_config (openssh-server not installed)");
        return;
    }
    let sshd_keys: BTreeSet<String> = values(&sshd_dump(stock, None)).into_keys().collect();
    let keys: BTreeSet<String> = implemented_keywords()
        .into_iter()
        .filter(|k| sshd_keys.contains(k))
        .collect();
    let missing: Vec<_> = [
        "/etc/ssh/ssh_host_rsa_key",
        "/etc/ssh/ssh_host_ecdsa_key",
        "/etc/ssh/ssh_host_ed25519_key",
    ]
    .into_iter()
    .filter(|p| !Path::new(p).exists())
    .collect();
    let (config, _) = Config::load_file(stock, &[]).expect("stock config loads");
    let spec = "user=root,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22";
    let theirs: Vec<String> = compared(&sshd_dump(stock, Some(spec)), &keys)
        .into_iter()
        // sshd lists its default keys whether or not they exist; rsshd lists the ones
        // it uses. Same list when all exist, as on a machine with openssh-server.
        .filter(|l| !missing.iter().any(|m| l == &format!("hostkey {m}")))
        // PidFile's default is deliberately none in rsshd, and its default
        // KexAlgorithms and MACs are narrower (see docs/keywords.md; the cases of
        // `resolve_and_dump_match_sshd` compare both lists).
        .filter(|l| !deliberate(l))
        .collect();
    let ours: Vec<String> = compared(
        &dump(&config.resolve(&ConnSpec::parse_cli(spec).unwrap())),
        &keys,
    )
    .into_iter()
    .filter(|l| !deliberate(l))
    .collect();
    assert_eq!(theirs, ours);
    assert!(
        ours.iter()
            .any(|l| l.starts_with("hostkey /etc/ssh/ssh_host_")),
        "{ours:?}"
    );
}
