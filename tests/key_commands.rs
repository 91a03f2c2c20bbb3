//! `AuthorizedKeysCommand` and `AuthorizedPrincipalsCommand` run by rsshd as sshd
//! runs them, with real scripts, certificates made by the real `ssh-keygen`, and
//! the real `ssh` client.

mod certs_common;
mod support;

use certs_common::*;
use support::{current_user, keygen, temp_dir};

/// `AuthorizedKeysCommand` run as `AuthorizedKeysCommandUser` with sshd's tokens
/// and minimal environment; its output is an authorized_keys file (options
/// included); its stderr reaches the log; no user, or a program others may
/// write, and the command is not run.
#[test]
fn authorized_keys_command_supplies_keys() {
    if needs_tools() || support::skip_unless_root_with("nobody") {
        return;
    }
    let dir = temp_dir("certs-akc");
    let user = current_user();
    let key = keygen(&dir, "k");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    std::fs::write(
        dir.join(format!("keys-{user}")),
        format!("# from the directory\ncommand=\"echo via-command\" {public}"),
    )
    .unwrap();
    let cmd = script(
        &dir,
        "akc.sh",
        &format!(
            "echo \"akc-args: $*\" >&2\necho \"akc-id: $(id -un)\" >&2\necho \"akc-env: $(env | sort | tr '\\n' ' ')\" >&2\nexec cat {}/keys-\"$1\"\n",
            dir.display()
        ),
    );
    let srv = rsshd(
        &dir,
        &format!(
            "AuthorizedKeysFile none\nAuthorizedKeysCommand {} %u %U %t %f\nAuthorizedKeysCommandUser nobody",
            cmd.display()
        ),
    );
    let o = ssh(srv.port, &key, &user, &["echo", "client"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "via-command",
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    let uid = nix::unistd::geteuid().as_raw();
    let fp = fingerprint(&key.with_extension("pub"));
    let log = srv.log();
    assert!(
        log.contains(&format!("akc-args: {user} {uid} ssh-ed25519 {fp}")),
        "{log}"
    );
    assert!(log.contains("akc-id: nobody"), "{log}");
    let env_line = log
        .lines()
        .find(|l| l.contains("akc-env: "))
        .expect("env line");
    let names: Vec<&str> = env_line
        .split("akc-env: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
        .filter(|k| *k != "PWD" && *k != "SHLVL" && *k != "_" && *k != "LANG")
        .collect();
    assert_eq!(names, ["HOME", "LOGNAME", "PATH", "USER"], "{env_line}");

    // Without AuthorizedKeysCommandUser the command is skipped, as by sshd.
    let dir2 = temp_dir("certs-akc-nouser");
    let srv2 = rsshd(
        &dir2,
        &format!(
            "AuthorizedKeysFile none\nAuthorizedKeysCommand {} %u",
            cmd.display()
        ),
    );
    assert!(!ssh(srv2.port, &key, &user, &["true"]).status.success());
    assert!(
        wait_for(
            || srv2.log(),
            "No user for AuthorizedKeysCommand specified, skipping"
        ),
        "{}",
        srv2.log()
    );

    // A program others may write is not run.
    use std::os::unix::fs::PermissionsExt;
    let unsafe_cmd = script(&dir2, "unsafe.sh", "cat /dev/null\n");
    std::fs::set_permissions(&unsafe_cmd, std::fs::Permissions::from_mode(0o777)).unwrap();
    let dir3 = temp_dir("certs-akc-unsafe");
    let srv3 = rsshd(
        &dir3,
        &format!(
            "AuthorizedKeysFile none\nAuthorizedKeysCommand {}\nAuthorizedKeysCommandUser nobody",
            unsafe_cmd.display()
        ),
    );
    assert!(!ssh(srv3.port, &key, &user, &["true"]).status.success());
    assert!(
        wait_for(
            || srv3.log(),
            &format!("Unsafe AuthorizedKeysCommand \"{}\"", unsafe_cmd.display())
        ),
        "{}",
        srv3.log()
    );
}

/// `AuthorizedPrincipalsCommand` names the principals a certificate may carry,
/// with the certificate's tokens (`%i` key ID, `%s` serial, `%T` CA type).
#[test]
fn authorized_principals_command_chooses_the_principals() {
    if needs_tools() || support::skip_unless_root_with("nobody") {
        return;
    }
    let dir = temp_dir("certs-apc");
    let user = current_user();
    let ca_key = ca(&dir, "ca");
    let cmd = script(
        &dir,
        "apc.sh",
        "echo \"apc-args: $*\" >&2\necho \"# roles\"\necho deployers\n",
    );
    let deploy = cert(
        &dir,
        "deploy",
        &ca_key,
        "ci@corp",
        &["-n", "deployers", "-z", "9"],
    );
    let other = cert(&dir, "other", &ca_key, "x@corp", &["-n", "others"]);
    let srv = rsshd(
        &dir,
        &format!(
            "AuthorizedKeysFile none\nTrustedUserCAKeys {}\nAuthorizedPrincipalsCommand {} %u %i %s %T\nAuthorizedPrincipalsCommandUser nobody",
            ca_key.with_extension("pub").display(),
            cmd.display()
        ),
    );
    let o = ssh(srv.port, &deploy, &user, &["echo", "deployed"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "deployed",
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    assert!(
        srv.log()
            .contains(&format!("apc-args: {user} ci@corp 9 ssh-ed25519")),
        "{}",
        srv.log()
    );
    assert!(!ssh(srv.port, &other, &user, &["true"]).status.success());
    assert!(
        wait_for(
            || srv.log(),
            "Certificate does not contain an authorized principal"
        ),
        "{}",
        srv.log()
    );
}
