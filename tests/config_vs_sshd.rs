//! Differential test: for configs with Match blocks, the library's `-T` output after
//! `resolve` must equal `/usr/sbin/sshd -T -C ...` on every keyword both implement.
//! Skips (with a message) when sshd is missing or we are not root.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use rsshd::config::{Config, ConnSpec, dump};

const SSHD: &str = "/usr/sbin/sshd";

/// Keywords compared line for line. Only keywords whose sshd 9.2 output format rsshd
/// promises to reproduce; resolved host names, algorithm lists and keywords sshd 9.2
/// does not have (pamservicename, idle*) are left out on purpose.
const COMPARED: &[&str] = &[
    "port",
    "addressfamily",
    "listenaddress",
    "usepam",
    "logingracetime",
    "maxauthtries",
    "maxsessions",
    "clientaliveinterval",
    "clientalivecountmax",
    "unusedconnectiontimeout",
    "permitrootlogin",
    "pubkeyauthentication",
    "passwordauthentication",
    "kbdinteractiveauthentication",
    "printmotd",
    "printlastlog",
    "permittty",
    "strictmodes",
    "tcpkeepalive",
    "permitemptypasswords",
    "gatewayports",
    "usedns",
    "allowtcpforwarding",
    "allowagentforwarding",
    "banner",
    "forcecommand",
    "chrootdirectory",
    "loglevel",
    "syslogfacility",
    "authorizedkeysfile",
    "hostkey",
    "allowusers",
    "denyusers",
    "allowgroups",
    "denygroups",
    "acceptenv",
    "setenv",
    "authenticationmethods",
    "channeltimeout",
    "subsystem",
    "maxstartups",
    "permitopen",
    "permitlisten",
    "permituserenvironment",
];

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
             Match Group nogroup,!root\n  PermitTTY no\n  ForceCommand internal-sftp -d /srv\n",
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
             Match Host *.example.com,!bad.example.com\n  Banner /etc/issue\n  LogLevel VERBOSE\n\
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
             PermitRootLogin forced-commands-only\nSyslogFacility LOCAL3\nAddressFamily inet\n\
             SetEnv A=1 \"B=two words\"\nSetEnv C=3\nAllowGroups staff root\nDenyUsers eve mallory@10.0.0.0/8\n\
             PermitUserEnvironment LANG,TZ\nSubsystem sftp /usr/lib/openssh/sftp-server -l INFO\nSubsystem backup \"/usr/bin/backup --serve\"\n\
             Match User root Address 127.0.0.0/8\n  SetEnv D=4\n  AllowGroups root\n  ChrootDirectory /srv/%u\n  PermitEmptyPasswords no\n",
            vec![
                "user=root,host=h,addr=127.0.0.1,laddr=127.0.0.1,lport=2200",
                "user=root,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=2200",
                "user=alice,host=h,addr=127.0.0.1,laddr=127.0.0.1,lport=2200",
            ],
        ),
        (
            // Implicit wildcard listeners, several ports, narrowed by AddressFamily.
            "AddressFamily inet6\nPort 2201\nPort 2202\nMatch User root\n  MaxSessions 1\n",
            vec!["user=root,host=h,addr=::1,laddr=::1,lport=2201"],
        ),
        (
            "Port 2201\nPort 2202\n",
            vec!["user=root,host=h,addr=::1,laddr=::1,lport=2201"],
        ),
    ]
}

fn compared(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            let k = l.split(' ').next().unwrap_or("");
            COMPARED.contains(&k)
        })
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
    let mut failures = Vec::new();
    let mut compared_lines = 0;
    for (i, (body, specs)) in cases().into_iter().enumerate() {
        let file = dir.join(format!("case{i}.conf"));
        let text = format!("HostKey {}\n{body}", hk.display());
        std::fs::write(&file, &text).expect("write config");
        let (config, _warnings) =
            Config::load_file(&file, &[]).unwrap_or_else(|e| panic!("case {i}: {e}"));
        for spec in specs {
            let out = Command::new(SSHD)
                .arg("-T")
                .arg("-f")
                .arg(&file)
                .arg("-C")
                .arg(spec)
                .output()
                .expect("run sshd -T");
            assert!(
                out.status.success(),
                "case {i} {spec}: sshd -T failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let theirs = compared(&String::from_utf8_lossy(&out.stdout));
            let cs = ConnSpec::parse_cli(spec).expect("spec");
            let ours = compared(&dump(&config.resolve(&cs)));
            compared_lines += theirs.len();
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
    assert!(
        compared_lines > 500,
        "suspiciously little compared: {compared_lines}"
    );
}
