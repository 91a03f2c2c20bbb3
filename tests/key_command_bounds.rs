//! The bounds rsshd puts on `AuthorizedKeysCommand` and
//! `AuthorizedPrincipalsCommand` (sshd has none): a command still running after
//! 30 s, or printing more than 4 MiB, is killed with everything it started, its
//! answer ignored (the key refused), logged; the daemon and other logins go on
//! meanwhile. Real scripts, certificates from the real `ssh-keygen`, the real
//! `ssh`.

mod certs_common;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use certs_common::*;
use support::{current_user, keygen, temp_dir};

/// Whether process `pid` is gone (a zombie counts as gone: it runs nothing).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

fn read_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// One daemon, one command that answers by the key's fingerprint: the "slow"
/// key's run sleeps (in a child of the script, which only a group kill reaches)
/// past the 30 s limit, the "big" key's prints 5 MiB, the "good" key's prints
/// the key. A principals command prints 5 MiB for one certificate. The slow
/// login is refused after 30 s with the timeout line, both sleepers are gone;
/// meanwhile the good key logs in at once and the big ones are refused with the
/// output line.
///
/// This test takes the 30 s of the limit it checks: the limit is a constant
/// with no knob (an admin-facing one would be a new keyword), and a shorter
/// wait could not tell a limit from a hang.
#[test]
fn slow_and_flooding_commands_are_cut_off_and_others_log_in() {
    if needs_tools() || !support::is_root() {
        if !support::is_root() {
            support::skip("needs root to run the commands as their user");
        }
        return;
    }
    let dir = temp_dir("akc-bounds");
    let user = current_user();
    let slow = keygen(&dir, "slow");
    let big = keygen(&dir, "big");
    let good = keygen(&dir, "good");
    let ca = ca(&dir, "ca");
    let flood_cert = cert(&dir, "flood", &ca, "flood", &["-n", "ops"]);
    let (slow_fp, big_fp, good_fp) = (
        fingerprint(&slow.with_extension("pub")),
        fingerprint(&big.with_extension("pub")),
        fingerprint(&good.with_extension("pub")),
    );
    let good_line = std::fs::read_to_string(good.with_extension("pub")).unwrap();
    let pids = dir.join("slow.pids");
    let keys_cmd = script(
        &dir,
        "keys.sh",
        &format!(
            "case \"$1\" in\n\
             {slow_fp}) sleep 300 & echo \"$$ $!\" > {pids}; wait ;;\n\
             {big_fp}) head -c 5242880 /dev/zero | tr '\\0' 'x' ;;\n\
             {good_fp}) echo '{good}' ;;\n\
             esac\n",
            pids = pids.display(),
            good = good_line.trim()
        ),
    );
    let principals_cmd = script(
        &dir,
        "principals.sh",
        "[ \"$1\" = flood ] && exec head -c 5242880 /dev/zero\necho ops\n",
    );
    let srv = rsshd(
        &dir,
        &format!(
            "AuthorizedKeysFile none\nAuthorizedKeysCommand {} %f\nAuthorizedKeysCommandUser {user}\n\
             TrustedUserCAKeys {}\nAuthorizedPrincipalsCommand {} %i\nAuthorizedPrincipalsCommandUser {user}\n\
             LoginGraceTime 2m",
            keys_cmd.display(),
            ca.with_extension("pub").display(),
            principals_cmd.display()
        ),
    );
    let port = srv.port;
    let (slow_key, slow_user) = (slow.clone(), user.clone());
    let started = Instant::now();
    let slow_login = std::thread::spawn(move || {
        let o = ssh(port, &slow_key, &slow_user, &["echo", "slow-in"]);
        (o, started.elapsed())
    });
    let end = Instant::now() + Duration::from_secs(15);
    while read_pids(&pids).len() < 2 {
        assert!(
            Instant::now() < end,
            "the slow command never ran\n{}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sleepers = read_pids(&pids);

    // Meanwhile: the good key gets in at once, the floods are refused.
    let t = Instant::now();
    let o = ssh(port, &good, &user, &["echo", "good-in"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "good-in",
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let o = ssh(port, &big, &user, &["echo", "big-in"]);
    assert!(!o.status.success(), "{}", srv.log());
    assert!(
        srv.log().contains(&format!(
            "AuthorizedKeysCommand {} %f: more than 4194304 bytes of output; ignored",
            keys_cmd.display()
        )),
        "{}",
        srv.log()
    );
    let o = ssh(port, &flood_cert, &user, &["echo", "flood-in"]);
    assert!(!o.status.success(), "{}", srv.log());
    assert!(
        srv.log().contains(&format!(
            "AuthorizedPrincipalsCommand {} %i: more than 4194304 bytes of output; ignored",
            principals_cmd.display()
        )),
        "{}",
        srv.log()
    );
    assert!(
        sleepers.iter().all(|p| !gone(*p)),
        "the slow command ended early"
    );

    let (o, took) = slow_login.join().unwrap();
    assert!(!o.status.success(), "slow key got in\n{}", srv.log());
    assert!(
        took >= Duration::from_secs(29),
        "refused after {took:?}, before the limit"
    );
    // The client may see the refusal before the line reaches the log.
    let timed_out = format!(
        "AuthorizedKeysCommand {} %f timed out after 30s; killed",
        keys_cmd.display()
    );
    assert!(
        srv.wait_log(&timed_out, Duration::from_secs(10)),
        "{}",
        srv.log()
    );
    // The script and the sleep it started, killed with their group.
    let end = Instant::now() + Duration::from_secs(5);
    while !sleepers.iter().all(|p| gone(*p)) {
        assert!(
            Instant::now() < end,
            "left running: {sleepers:?}\n{}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The daemon still serves.
    let o = ssh(port, &good, &user, &["echo", "still-in"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "still-in");
}
