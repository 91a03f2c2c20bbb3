//! Issue 11, attack 6: user names cannot be told apart by how long a wrong password
//! takes. A real user, a user that does not exist and a user refused by DenyUsers
//! all go through the same PAM stack (sshd's fake-password trick), so the real
//! OpenSSH client sees the same delay for each.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const PASSWORD: &str = "rsshd-test-pw-1";
const NO_SUCH_USER: &str = "rsshd-no-such-user";

/// Root, the two test accounts, sshpass, and libpam.
fn ready() -> bool {
    if skip_unless_root_with(TEST_USER) || skip_unless_root_with(TEST_USER2) {
        return false;
    }
    if skip_without(&["sshpass", "ssh"]) {
        return false;
    }
    if let Err(e) = rsshd::host::pam::available() {
        skip(&e);
        return false;
    }
    // Keep the account's password known even outside CI (the attempts below use a
    // wrong one; what matters is that the account has a real hash).
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("echo '{TEST_USER}:{PASSWORD}' | chpasswd"))
        .status();
    true
}

/// One wrong-password login with the real client; how long until it gave up.
fn attempt(port: u16, user: &str, method: &str) -> Duration {
    let t = Instant::now();
    let o = Command::new("sshpass")
        .args(["-p", "wrong-password-1", "ssh", "-F", "/dev/null"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "PubkeyAuthentication=no"])
        .args(["-o", "NumberOfPasswordPrompts=1"])
        .args(["-o", &format!("PreferredAuthentications={method}")])
        .args(["-o", "ConnectTimeout=20"])
        .args(["-p", &port.to_string()])
        .arg(format!("{user}@127.0.0.1"))
        .arg("true")
        .output()
        .expect("run sshpass");
    let took = t.elapsed();
    assert_ne!(
        o.status.code(),
        Some(0),
        "{user} got in with a wrong password"
    );
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Rounds of one attempt per user name, started together. PAM's delay on failure
/// is random, seeded with the second the attempt started in (libpam's fail-delay
/// timer), so attempts started together draw the same delay and the comparison is
/// between user names, not between draws; an attacker would pair attempts the same
/// way. `PARALLEL` rounds run at once to keep the test short.
fn compare(method: &str) {
    const ROUNDS: usize = 30;
    const PARALLEL: usize = 5;
    let srv = Server::start(&format!(
        "UsePAM yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication yes\n\
         DenyUsers {TEST_USER2}\nMaxStartups 100\nPerSourcePenalties no"
    ));
    let users = [TEST_USER, NO_SUCH_USER, TEST_USER2];
    let port = srv.port;
    let method_owned = method.to_string();
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let method = method_owned.clone();
            std::thread::spawn(move || {
                let mut times: Vec<Vec<Duration>> = vec![Vec::new(); users.len()];
                for _ in 0..ROUNDS / PARALLEL {
                    let round: Vec<_> = users
                        .iter()
                        .map(|u| {
                            let (u, m) = (u.to_string(), method.clone());
                            std::thread::spawn(move || attempt(port, &u, &m))
                        })
                        .collect();
                    for (i, h) in round.into_iter().enumerate() {
                        times[i].push(h.join().expect("attempt"));
                    }
                }
                times
            })
        })
        .collect();
    let mut all: Vec<Vec<Duration>> = vec![Vec::new(); users.len()];
    for w in workers {
        for (i, t) in w.join().expect("worker").into_iter().enumerate() {
            all[i].extend(t);
        }
    }
    let medians: Vec<Duration> = all.into_iter().map(median).collect();
    let real = medians[0].as_secs_f64();
    let report = format!(
        "{method}: median of {ROUNDS} wrong attempts: {TEST_USER} {:?}, nonexistent {:?}, \
         refused by DenyUsers {:?}",
        medians[0], medians[1], medians[2]
    );
    eprintln!("{report}");
    for (name, m) in [("nonexistent", medians[1]), ("refused", medians[2])] {
        let ratio = m.as_secs_f64() / real;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{name} user differs from a real one by more than 10%: {report}"
        );
    }
    // Logged as sshd logs them: a refused user is an invalid user.
    let label = if method == "password" {
        "password"
    } else {
        "keyboard-interactive/pam"
    };
    let log = srv.log();
    for line in [
        format!("Failed {label} for {TEST_USER} from 127.0.0.1 port "),
        format!("Failed {label} for invalid user {NO_SUCH_USER} from 127.0.0.1 port "),
        format!("Failed {label} for invalid user {TEST_USER2} from 127.0.0.1 port "),
        format!("Invalid user {NO_SUCH_USER} from 127.0.0.1 port "),
        format!("User {TEST_USER2} from 127.0.0.1 not allowed because listed in DenyUsers"),
    ] {
        assert!(log.contains(&line), "missing {line:?} in\n{log}");
    }
}

#[test]
fn wrong_password_takes_as_long_for_any_user_name() {
    if !ready() {
        return;
    }
    compare("password");
}

#[test]
fn wrong_keyboard_interactive_answer_takes_as_long_for_any_user_name() {
    if !ready() {
        return;
    }
    compare("keyboard-interactive");
}
