//! Session lifetime end to end with real OpenSSH and PuTTY
//! clients against a real rsshd, with short timeouts.
//!
//! Timing: every deadline is measured from the last input the test typed (or, where
//! there is no input, bounded below by when the client was started and above by the
//! first sign of the session). The spec allows 1 s past the deadline; the tests add
//! 0.5 s for scheduling noise on a busy machine, and 50 ms below for the server's
//! millisecond stamps.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::*;

/// The spec's 1 s plus 0.5 s of scheduling noise.
const LATE: f64 = 1.5;
/// The server stamps input to the millisecond.
const EARLY: f64 = 0.05;

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Assert that `elapsed` is within `[t - EARLY, t + LATE]` seconds.
fn assert_on_time(what: &str, elapsed: Duration, t: f64, ctx: &dyn Fn() -> String) {
    let e = elapsed.as_secs_f64();
    assert!(
        e >= t - EARLY && e <= t + LATE,
        "{what}: after {e:.2}s, expected between {t}s and {}s\n{}",
        t + LATE,
        ctx()
    );
}

/// `ssh -tt` on a terminal of its own, with `extra` arguments after the destination.
fn ssh_tt(srv: &Server, user: &str, extra: &[&str]) -> PtyClient {
    let mut cmd = srv.ssh(user);
    cmd.arg("-tt").args(extra);
    PtyClient::spawn(&mut cmd, 24, 80)
}

/// Wait until the shell runs, then type one more command and return when it was typed
/// (the session's last input) and the client's source port (from `$SSH_CONNECTION`).
fn mark(c: &mut PtyClient, srv: &Server) -> (Instant, u16) {
    c.send("echo RDY$((40+2)):$SSH_CONNECTION:\n");
    assert!(
        c.wait_for("RDY42:", Duration::from_secs(15)),
        "session did not start; screen:\n{}\nlog:\n{}",
        c.text(),
        srv.log()
    );
    // Let the rest of the line arrive.
    assert!(
        c.wait_for("127.0.0.1 ", Duration::from_secs(5)),
        "{}",
        c.text()
    );
    sleep_ms(100);
    c.pump();
    let text = c.text();
    let port: u16 = text
        .split("RDY42:")
        .nth(1)
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no client port in:\n{text}"));
    // The shell is up and the client's terminal is raw: this input goes straight out.
    let t = Instant::now();
    c.send("echo GO$((40+2))\n");
    assert!(c.wait_for("GO42", Duration::from_secs(10)), "{}", c.text());
    (t, port)
}

/// Poll until the client exits (reading its screen meanwhile); the moment it was seen.
fn wait_end(c: &mut PtyClient, timeout: Duration) -> Option<(Instant, std::process::ExitStatus)> {
    let end = Instant::now() + timeout;
    loop {
        c.pump();
        if let Ok(Some(st)) = c.child.try_wait() {
            let at = Instant::now();
            sleep_ms(50);
            c.pump();
            return Some((at, st));
        }
        if Instant::now() >= end {
            return None;
        }
        sleep_ms(20);
    }
}

/// Keep reading the screen for `d`; false if the client exited meanwhile.
fn stays_for(c: &mut PtyClient, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        c.pump();
        if let Ok(Some(_)) = c.child.try_wait() {
            return false;
        }
        sleep_ms(20);
    }
    true
}

/// The session still answers commands.
fn assert_answers(c: &mut PtyClient, srv: &Server) {
    assert!(
        matches!(c.child.try_wait(), Ok(None)),
        "client exited:\n{}\nlog:\n{}",
        c.text(),
        srv.log()
    );
    // Ctrl-U first: drop whatever the test typed on the line so far.
    c.send("\x15echo alive$((1+1))\n");
    assert!(
        c.wait_for("alive2", Duration::from_secs(5)),
        "session does not answer; screen:\n{}\nlog:\n{}",
        c.text(),
        srv.log()
    );
}

/// What OpenSSH's `ssh` shows for an idle disconnect: the reason line on the terminal,
/// then `Received disconnect ... :11: reason`.
fn assert_idle_goodbye(text: &str, reason: &str) {
    let line = text
        .find(reason)
        .unwrap_or_else(|| panic!("no {reason:?} on the terminal:\n{text}"));
    let rd = text
        .find("Received disconnect from 127.0.0.1 port ")
        .unwrap_or_else(|| panic!("no `Received disconnect` from ssh:\n{text}"));
    assert!(
        text.contains(&format!(":11: {reason}")),
        "disconnect is not reason 11 with the text {reason:?}:\n{text}"
    );
    assert!(
        line < rd,
        "the reason line should reach the terminal before the disconnect:\n{text}"
    );
}

// 1. The seed scenario.
#[test]
fn seed_idle_session_ends_active_session_stays() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("ClientAliveInterval 3\nClientAliveCountMax 0");
    let me = current_user();
    let mut active = ssh_tt(&srv, &me, &[]);
    let (_, active_port) = mark(&mut active, &srv);
    let mut idle = ssh_tt(&srv, &me, &[]);
    let (t0, idle_port) = mark(&mut idle, &srv);

    let mut next_key = Instant::now();
    let mut idle_end = None;
    while t0.elapsed() < Duration::from_millis(10_500) {
        if Instant::now() >= next_key {
            active.send(" ");
            next_key += Duration::from_secs(1);
        }
        active.pump();
        if idle_end.is_none() {
            idle.pump();
            if let Ok(Some(st)) = idle.child.try_wait() {
                idle_end = Some((t0.elapsed(), st));
            }
        }
        sleep_ms(20);
    }
    idle.pump();
    let ctx = || format!("idle screen:\n{}\nlog:\n{}", idle.text(), srv.log());
    let (after, status) =
        idle_end.unwrap_or_else(|| panic!("idle session still open after 10 s\n{}", ctx()));
    assert_on_time("idle session ended", after, 3.0, &ctx);
    assert_eq!(status.code(), Some(255), "{}", ctx());
    assert_idle_goodbye(&idle.text(), "rsshd: disconnected after 3s without input");

    // The active session is still there and usable.
    assert!(
        matches!(active.child.try_wait(), Ok(None)),
        "the active session was dropped:\n{}\nlog:\n{}",
        active.text(),
        srv.log()
    );
    assert_answers(&mut active, &srv);
    assert!(
        !active.text().contains("without input"),
        "{}",
        active.text()
    );

    let line = format!(
        "Idle timeout for user {me} from 127.0.0.1 port {idle_port} after 3s (no input); session length "
    );
    assert!(
        srv.wait_log(&line, Duration::from_secs(3)),
        "want {line:?} in:\n{}",
        srv.log()
    );
    assert!(
        srv.wait_log(
            &format!("Disconnected from user {me} 127.0.0.1 port {idle_port}"),
            Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
    assert!(
        !srv.log().contains(&format!("port {active_port} after")),
        "the active session was timed out:\n{}",
        srv.log()
    );
}

// 2. Client keepalives are not input.
#[test]
fn client_keepalives_do_not_keep_an_idle_session() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("ClientAliveInterval 3\nClientAliveCountMax 0");
    let mut c = ssh_tt(
        &srv,
        &current_user(),
        &[
            "-o",
            "ServerAliveInterval=1",
            "-o",
            "ServerAliveCountMax=100",
        ],
    );
    let (t0, _) = mark(&mut c, &srv);
    let end = wait_end(&mut c, Duration::from_secs(10));
    let ctx = || format!("screen:\n{}\nlog:\n{}", c.text(), srv.log());
    let (at, _) = end.unwrap_or_else(|| panic!("keepalives kept the idle session\n{}", ctx()));
    assert_on_time(
        "idle session with client keepalives ended",
        at - t0,
        3.0,
        &ctx,
    );
    assert_idle_goodbye(&c.text(), "rsshd: disconnected after 3s without input");
}

// 3. Output is not activity unless `IdleActivity input,output`.
#[test]
fn output_counts_only_with_idle_activity_output() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let looping = "while true; do date; sleep 0.5; done";
    let srv_in = Server::start("IdleTimeout 3s\nIdleActivity input");
    let srv_out = Server::start("IdleTimeout 3s\nIdleActivity input,output");
    let me = current_user();
    let t_in = Instant::now();
    let mut c_in = ssh_tt(&srv_in, &me, &[looping]);
    let mut c_out = ssh_tt(&srv_out, &me, &[looping]);
    // `date` prints a time of day: the first colon is the first output.
    assert!(
        c_in.wait_for(":", Duration::from_secs(15)),
        "{}\n{}",
        c_in.text(),
        srv_in.log()
    );
    let first_in = Instant::now();
    assert!(
        c_out.wait_for(":", Duration::from_secs(15)),
        "{}\n{}",
        c_out.text(),
        srv_out.log()
    );
    let first_out = Instant::now();

    let end = wait_end(&mut c_in, Duration::from_secs(10));
    let ctx = || format!("screen:\n{}\nlog:\n{}", c_in.text(), srv_in.log());
    let (at, _) = end.unwrap_or_else(|| {
        panic!(
            "output kept the session under IdleActivity input\n{}",
            ctx()
        )
    });
    // The idle clock starts at authentication: after the client started, before the
    // first output.
    let e = (at - t_in).as_secs_f64();
    assert!(e >= 3.0 - EARLY, "ended too early: {e:.2}s\n{}", ctx());
    let e = (at - first_in).as_secs_f64();
    assert!(
        e <= 3.0 + LATE,
        "ended {e:.2}s after its first output, want at most {}s\n{}",
        3.0 + LATE,
        ctx()
    );
    assert_idle_goodbye(&c_in.text(), "rsshd: disconnected after 3s without input");

    let left = Duration::from_secs(7).saturating_sub(first_out.elapsed());
    assert!(
        stays_for(&mut c_out, left),
        "IdleActivity input,output: the session printing dates ended:\n{}\nlog:\n{}",
        c_out.text(),
        srv_out.log()
    );
    let before = c_out.text().matches(':').count();
    sleep_ms(1200);
    c_out.pump();
    assert!(
        c_out.text().matches(':').count() > before,
        "output stopped:\n{}",
        c_out.text()
    );
    assert!(!srv_out.log().contains("Idle timeout"), "{}", srv_out.log());
}

// 3b. The lower bound above is measured from spawn, which is weak; this variant
// measures precisely from the last input of a shell that keeps printing.
#[test]
fn output_after_last_input_does_not_extend_idle() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("IdleTimeout 3s");
    let mut c = ssh_tt(&srv, &current_user(), &[]);
    mark(&mut c, &srv);
    let t0 = Instant::now();
    c.send("while true; do date; sleep 0.5; done\n");
    let end = wait_end(&mut c, Duration::from_secs(10));
    let ctx = || format!("screen:\n{}\nlog:\n{}", c.text(), srv.log());
    let (at, _) = end.unwrap_or_else(|| panic!("output kept the session\n{}", ctx()));
    assert_on_time("printing shell ended", at - t0, 3.0, &ctx);
}

// 4. IdleWarning.
#[test]
fn idle_warning_then_disconnect_and_a_key_after_the_warning_keeps_the_session() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("IdleTimeout 4s\nIdleWarning 2s");
    let me = current_user();
    let warning = "rsshd: no input for 2s; disconnecting in 2s";

    // Left alone: warned at 2 s, gone at 4 s.
    let mut c = ssh_tt(&srv, &me, &[]);
    let (t0, _) = mark(&mut c, &srv);
    assert!(
        c.wait_for("rsshd: no input for", Duration::from_secs(8)),
        "no warning:\n{}\nlog:\n{}",
        c.text(),
        srv.log()
    );
    let warned = Instant::now();
    assert!(
        matches!(c.child.try_wait(), Ok(None)),
        "the warning came with the disconnect, not before it:\n{}",
        c.text()
    );
    let ctx = || format!("screen:\n{}\nlog:\n{}", c.text(), srv.log());
    assert_on_time("warning shown", warned - t0, 2.0, &ctx);
    sleep_ms(100);
    c.pump();
    assert!(
        c.text().contains(warning),
        "want {warning:?}:\n{}",
        c.text()
    );
    let end = wait_end(&mut c, Duration::from_secs(8));
    let ctx = || format!("screen:\n{}\nlog:\n{}", c.text(), srv.log());
    let (at, _) = end.unwrap_or_else(|| panic!("session not ended\n{}", ctx()));
    assert_on_time("warned session ended", at - t0, 4.0, &ctx);
    let text = c.text();
    assert_idle_goodbye(&text, "rsshd: disconnected after 4s without input");
    assert!(
        text.find(warning) < text.find("rsshd: disconnected after"),
        "{text}"
    );

    // A key right after the warning: the session lives on, ends 4 s after that key.
    let mut c = ssh_tt(&srv, &me, &[]);
    let (t1, _) = mark(&mut c, &srv);
    assert!(
        c.wait_for("rsshd: no input for", Duration::from_secs(8)),
        "no warning:\n{}\nlog:\n{}",
        c.text(),
        srv.log()
    );
    let key = Instant::now();
    c.send(" ");
    assert!(key - t1 < Duration::from_millis(3900), "warning too late");
    // Past the first deadline with its slack (t1 + 4 + 1.5), since key >= t1 + 2.
    let until = (key + Duration::from_millis(3500)).max(t1 + Duration::from_millis(5600));
    assert!(
        stays_for(&mut c, until - Instant::now()),
        "a key after the warning did not keep the session (ended {:.2}s after the key):\n{}\nlog:\n{}",
        key.elapsed().as_secs_f64(),
        c.text(),
        srv.log()
    );
    let end = wait_end(&mut c, Duration::from_secs(8));
    let ctx = || format!("screen:\n{}\nlog:\n{}", c.text(), srv.log());
    let (at, _) = end.unwrap_or_else(|| panic!("session not ended after the key\n{}", ctx()));
    assert_on_time("session ended, counted from the key", at - key, 4.0, &ctx);
    assert!(
        c.text().matches(warning).count() >= 2,
        "the key should reset the warning too (a second warning 2 s after it):\n{}",
        c.text()
    );
}

// 5. Liveness: a stopped client is dropped, an idle running one is kept.
#[test]
fn liveness_drops_a_stopped_client_and_keeps_an_idle_one() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("ClientAliveInterval 1\nClientAliveCountMax 2");
    let me = current_user();

    let mut kept = ssh_tt(&srv, &me, &[]);
    let (t_kept, kept_port) = mark(&mut kept, &srv);

    let mut stopped = ssh_tt(&srv, &me, &[]);
    let (_, port) = mark(&mut stopped, &srv);
    stopped.send("echo SID=$$:\n");
    let find_sid = |text: &str| -> Option<i32> {
        text.split("SID=")
            .filter_map(|r| r.split_once(':').and_then(|(d, _)| d.parse().ok()))
            .next()
    };
    let until = Instant::now() + Duration::from_secs(5);
    while find_sid(&stopped.text()).is_none() && Instant::now() < until {
        stopped.pump();
        sleep_ms(20);
    }
    let sid = find_sid(&stopped.text())
        .unwrap_or_else(|| panic!("no session id in:\n{}", stopped.text()));
    assert!(
        !processes_in_session(sid).is_empty(),
        "no shell in session {sid}"
    );

    let pid = Pid::from_raw(stopped.child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let t_stop = Instant::now();
    let line = format!("Timeout, client not responding from user {me} 127.0.0.1 port {port}");
    let mut seen = None;
    while t_stop.elapsed() < Duration::from_secs(8) {
        if srv.log().contains(&line) {
            seen = Some(t_stop.elapsed());
            break;
        }
        sleep_ms(20);
    }
    let seen = seen.unwrap_or_else(|| {
        let _ = kill(pid, Signal::SIGCONT);
        panic!("want {line:?} within 4 s of SIGSTOP; log:\n{}", srv.log())
    });
    let secs = seen.as_secs_f64();
    // The last packet from the client was at most 1 s (one probe interval) before the
    // stop; two unanswered probes later it is dropped: 2 to 3 s after the stop.
    assert!(
        (2.0 - 0.2..=4.0).contains(&secs),
        "`Timeout, client not responding` {secs:.2}s after SIGSTOP, want 2..4 s; log:\n{}",
        srv.log()
    );
    let end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < end && !processes_in_session(sid).is_empty() {
        sleep_ms(100);
    }
    let left = processes_in_session(sid);
    let _ = kill(pid, Signal::SIGCONT);
    let _ = stopped.child.kill();
    assert!(
        left.is_empty(),
        "the stopped client's shell outlived its connection: {left:?}; log:\n{}",
        srv.log()
    );

    // The idle but running client answers the probes and stays.
    let left = Duration::from_secs(6).saturating_sub(t_kept.elapsed());
    assert!(
        stays_for(&mut kept, left),
        "the idle running client was dropped:\n{}\nlog:\n{}",
        kept.text(),
        srv.log()
    );
    assert_answers(&mut kept, &srv);
    assert!(
        !srv.log().contains(&format!(
            "Timeout, client not responding from user {me} 127.0.0.1 port {kept_port}"
        )),
        "{}",
        srv.log()
    );
    assert!(
        !kept.text().contains("rsshd:"),
        "unexpected rsshd message on the kept session:\n{}",
        kept.text()
    );
}

// 6. PuTTY shows the reason text.
#[test]
fn plink_shows_the_idle_reason() {
    if skip_without(&["plink", "puttygen", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("IdleTimeout 3s");
    let (ppk, fp) = srv.putty_setup();
    let mut cmd = Command::new("plink");
    cmd.args(["-batch", "-ssh", "-t", "-P", &srv.port.to_string(), "-i"])
        .arg(&ppk)
        .args(["-hostkey", &fp, "-l", &current_user(), "127.0.0.1"]);
    let mut c = PtyClient::spawn(&mut cmd, 24, 80);
    let (t0, _) = mark(&mut c, &srv);
    let end = wait_end(&mut c, Duration::from_secs(10));
    let ctx = || format!("plink screen:\n{}\nlog:\n{}", c.text(), srv.log());
    let (at, _) = end.unwrap_or_else(|| panic!("plink session not ended\n{}", ctx()));
    assert_on_time("plink session ended", at - t0, 3.0, &ctx);
    let text = c.text();
    assert!(
        text.contains("rsshd: disconnected after 3s without input"),
        "{}",
        ctx()
    );
    assert!(
        !text.contains("Server unexpectedly closed network connection"),
        "{}",
        ctx()
    );
}

// 7. ChannelTimeout closes an idle session channel without IdleTimeout.
#[test]
fn channel_timeout_closes_an_idle_session_channel() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("ChannelTimeout session=2s");
    let mut c = ssh_tt(&srv, &current_user(), &[]);
    let (t0, _) = mark(&mut c, &srv);
    let end = wait_end(&mut c, Duration::from_secs(10));
    let ctx = || format!("screen:\n{}\nlog:\n{}", c.text(), srv.log());
    let (at, _) = end.unwrap_or_else(|| panic!("session channel not closed\n{}", ctx()));
    assert_on_time("idle session channel closed", at - t0, 2.0, &ctx);
    assert!(!srv.log().contains("Idle timeout"), "{}", ctx());
}

// 8. UnusedConnectionTimeout with `ssh -N`.
#[test]
fn unused_connection_timeout_drops_ssh_n() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let srv = Server::start("UnusedConnectionTimeout 2s");
    let me = current_user();
    let started = Instant::now();
    let mut child = srv
        .ssh(&me)
        .arg("-N")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let accepted = format!("Accepted publickey for {me} from 127.0.0.1 port ");
    let mut authed = None;
    let mut ended = None;
    while started.elapsed() < Duration::from_secs(15) {
        if authed.is_none() && srv.log().contains(&accepted) {
            authed = Some(Instant::now());
        }
        if let Ok(Some(_)) = child.try_wait() {
            ended = Some(Instant::now());
            break;
        }
        sleep_ms(20);
    }
    let mut err = String::new();
    if ended.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let ctx = || format!("ssh stderr:\n{err}\nlog:\n{}", srv.log());
    let ended = ended.unwrap_or_else(|| panic!("ssh -N still connected after 15 s\n{}", ctx()));
    let authed = authed.unwrap_or_else(|| panic!("never authenticated\n{}", ctx()));
    let e = (ended - started).as_secs_f64();
    assert!(e >= 2.0 - EARLY, "dropped too early: {e:.2}s\n{}", ctx());
    assert!(
        (ended - authed).as_secs_f64() <= 2.0 + LATE,
        "dropped {:.2}s after authentication\n{}",
        (ended - authed).as_secs_f64(),
        ctx()
    );
    assert!(
        err.contains("Received disconnect from 127.0.0.1 port ") && err.contains(":11: rsshd: "),
        "{}",
        ctx()
    );
    assert!(
        srv.log().lines().any(|l| l.contains(&me)
            && l.contains("127.0.0.1 port")
            && l.contains("session length")),
        "no log line with user, address, port and session length\n{}",
        ctx()
    );
}

// 9. Match gives one user a shorter IdleTimeout, after authentication.
#[test]
fn match_user_gets_its_own_idle_timeout() {
    if skip_without(&["ssh", "ssh-keygen"]) {
        return;
    }
    let me = current_user();
    let srv = Server::start_with_tail(
        "IdleTimeout 1h",
        &format!("Match User {me}\n    IdleTimeout 2s"),
    );
    // Another user, if we can log in as one, keeps the global hour.
    let other = (is_root() && me != "rsshd-test")
        .then(|| nix::unistd::User::from_name("rsshd-test").ok().flatten())
        .flatten();
    let mut c_other = other.as_ref().map(|u| ssh_tt(&srv, &u.name, &[]));
    let t_other = c_other.as_mut().map(|c| mark(c, &srv).0);
    if other.is_none() {
        // Visible, and a failure in CI: the other user's half must run there.
        skip(&format!(
            "second half: no second user (needs root and user rsshd-test); checking only {me}"
        ));
    }

    let mut c = ssh_tt(&srv, &me, &[]);
    let (t0, _) = mark(&mut c, &srv);
    let end = wait_end(&mut c, Duration::from_secs(10));
    let ctx = || format!("screen:\n{}\nlog:\n{}", c.text(), srv.log());
    let (at, _) = end.unwrap_or_else(|| panic!("Match IdleTimeout not applied\n{}", ctx()));
    assert_on_time("matched user's session ended", at - t0, 2.0, &ctx);
    assert_idle_goodbye(&c.text(), "rsshd: disconnected after 2s without input");

    if let (Some(co), Some(t)) = (c_other.as_mut(), t_other) {
        let left = Duration::from_secs(5).saturating_sub(t.elapsed());
        assert!(
            stays_for(co, left),
            "the other user's session ended under the global IdleTimeout 1h:\n{}\nlog:\n{}",
            co.text(),
            srv.log()
        );
        assert_answers(co, &srv);
    }
}

// 10. LoginGraceTime with a raw TCP client that sends only its banner.
#[test]
fn login_grace_time_drops_a_client_that_only_says_hello() {
    let srv = Server::start("LoginGraceTime 2");
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    let local = s.local_addr().unwrap().port();
    let line = format!("Timeout before authentication for 127.0.0.1 port {local}");
    s.write_all(b"SSH-2.0-lifetime_test\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let logged = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            srv.wait_log(&line, Duration::from_secs(10))
                .then(|| started.elapsed())
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    break false;
                }
                Err(_) => break true, // reset: a hard close
            }
        };
        let e = started.elapsed();
        let logged = watcher.join().unwrap();
        (closed, e, got, logged)
    });
    let (closed, e, got, logged) = logged;
    assert!(
        String::from_utf8_lossy(&got).starts_with("SSH-2.0-"),
        "no server banner: {:?}",
        String::from_utf8_lossy(&got)
    );
    let logged = logged.unwrap_or_else(|| panic!("want {line:?}:\n{}", srv.log()));
    assert_on_time(
        "`Timeout before authentication` logged",
        logged,
        2.0,
        &|| srv.log(),
    );
    assert!(closed, "still open after 10 s; log:\n{}", srv.log());
    assert_on_time(
        "unauthenticated connection closed (socket EOF/reset)",
        e,
        2.0,
        &|| {
            format!(
                "logged at {:.2}s; {} bytes received in all (banner and KEXINIT are {} of them)\nlog:\n{}",
                logged.as_secs_f64(),
                got.len(),
                got.len(),
                srv.log()
            )
        },
    );
}
