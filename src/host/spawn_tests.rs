//! Tests of `spawn.rs`, kept apart so that file stays readable.

use super::*;

fn kv(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(env: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    env.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn request(pam: bool) -> SpawnRequest {
    SpawnRequest {
        user: super::super::UserInfo {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/alice".into(),
            shell: "/bin/bash".into(),
            group_names: vec![],
            gids: vec![],
        },
        command: Some("true".into()),
        user_rc: false,
        pty: Some(PtyParams::xterm()),
        env: SessionEnv {
            client: kv(&[
                ("PATH", "/evil"),
                ("SSH_ORIGINAL_COMMAND", "evil"),
                ("SSH_TTY", "/dev/evil"),
                ("USER", "root"),
                ("LANG", "C.UTF-8"),
                ("TERM", "evil"),
            ]),
            auth_sock: Some("/tmp/agent".into()),
            user: kv(&[("FROM_KEY", "1"), ("SSH_CONNECTION", "user")]),
            admin: kv(&[("SET", "admin"), ("FROM_KEY", "admin")]),
            connection: kv(&[("SSH_CONNECTION", "1.2.3.4 5 6.7.8.9 22")]),
            original_command: Some("ls".into()),
        },
        pam: pam.then(|| PamSession {
            service: "sshd".into(),
            rhost: "h".into(),
        }),
        chroot: None,
        internal_sftp: None,
    }
}

#[test]
fn the_client_never_overrides_the_servers_variables() {
    let plan = ExecPlan::for_request(&request(false), Some(Path::new("/dev/pts/7")));
    let env = plan.final_env();
    for (name, want) in [
        ("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/games"),
        ("SSH_ORIGINAL_COMMAND", "ls"),
        ("SSH_TTY", "/dev/pts/7"),
        ("USER", "alice"),
        ("TERM", "xterm"),
        ("LANG", "C.UTF-8"),
        ("MAIL", "/var/mail/alice"),
        ("SSH_AUTH_SOCK", "/tmp/agent"),
        ("SET", "admin"),
        // SetEnv is later than the key's environment=, as in sshd.
        ("FROM_KEY", "admin"),
        ("SSH_CONNECTION", "1.2.3.4 5 6.7.8.9 22"),
    ] {
        assert_eq!(get(&env, name), vec![want], "{name} in {env:?}");
    }
    // The client's variables come first, as sshd lists them.
    assert_eq!(env[0].0, "PATH");
}

#[test]
fn pam_goes_between_the_users_variables_and_setenv() {
    let plan = ExecPlan::for_request(&request(true), None).with_env_under(kv(&[
        ("FROM_KEY", "pam"),
        ("LANG", "pam"),
        ("SET", "pam"),
        ("SSH_CONNECTION", "pam"),
        ("SSH_AUTH_INFO_0", "pam"),
        ("XDG_RUNTIME_DIR", "/run/user/1000"),
    ]));
    let env = plan.final_env();
    assert_eq!(get(&env, "LANG"), vec!["pam"]);
    assert_eq!(get(&env, "XDG_RUNTIME_DIR"), vec!["/run/user/1000"]);
    assert_eq!(get(&env, "SET"), vec!["admin"]);
    assert_eq!(get(&env, "SSH_CONNECTION"), vec!["1.2.3.4 5 6.7.8.9 22"]);
    assert!(get(&env, "SSH_AUTH_INFO_0").is_empty());
    // No terminal: the server sets no TERM and no SSH_TTY, so what the
    // client sent (and AcceptEnv admitted) stays, as with sshd.
    assert_eq!(get(&env, "SSH_TTY"), vec!["/dev/evil"]);
    assert_eq!(get(&env, "TERM"), vec!["evil"]);
    // With PAM, MAIL is pam_mail's business.
    assert!(get(&env, "MAIL").is_empty());
}
