//! Tests of `engine.rs`, kept apart so that file stays readable.

#![allow(clippy::field_reassign_with_default)]

use super::*;
use crate::config::ChannelTimeoutRule;

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Feed the opening of channel `channel` of type `kind` at `at`.
fn open(e: &mut Engine, channel: u32, kind: &str, at: Instant) -> Vec<Action> {
    e.handle(
        Event::ChannelOpened {
            channel,
            kind: kind.into(),
        },
        at,
    )
}

/// An authenticated engine at t0 with one open session channel.
fn running(policy: Policy) -> (Engine, Instant) {
    let t0 = Instant::now();
    let mut e = Engine::new(policy, t0);
    assert!(e.handle(Event::Authenticated, t0).is_empty());
    assert!(open(&mut e, 0, "session:shell", t0).is_empty());
    (e, t0)
}

/// A policy with one `ChannelTimeout` rule.
fn channel_timeout(pattern: &str, timeout: Duration) -> Policy {
    Policy {
        channel_timeouts: vec![ChannelTimeoutRule {
            pattern: pattern.into(),
            timeout,
        }],
        ..Policy::default()
    }
}

fn idle(t: u64) -> Policy {
    Policy {
        idle_timeout: Some(s(t)),
        ..Policy::default()
    }
}

fn is_idle_end(a: &[Action]) -> bool {
    a.iter()
        .any(|a| matches!(a, Action::Disconnect(Ending::Idle { .. })))
}

#[test]
fn idle_fires_exactly_at_t_not_before() {
    let (mut e, t0) = running(idle(300));
    assert_eq!(e.next_deadline(), Some(t0 + s(300)));
    assert!(e.poll(t0 + s(299)).is_empty());
    assert!(e.poll(t0 + s(300) - ms(1)).is_empty());
    let a = e.poll(t0 + s(300));
    assert_eq!(a, vec![Action::Disconnect(Ending::Idle { after: s(300) })]);
    assert_eq!(
        Ending::Idle { after: s(300) }.user_text(),
        "rsshd: disconnected after 5m without input"
    );
    // Nothing more after the end.
    assert!(e.poll(t0 + s(400)).is_empty());
    assert_eq!(e.next_deadline(), None);
}

/// The packet carrying a keystroke is stamped a moment before the keystroke
/// itself, and both can land on the deadline. Recorded as one batch and judged
/// once, they keep the session; judged one at a time, the packet alone ended it
/// (a flaky end-to-end failure: the typing session dropped for idleness).
#[test]
fn a_batch_is_judged_after_all_of_it_is_recorded() {
    let (mut e, t0) = running(idle(3));
    e.record(Event::PacketReceived, t0 + s(3));
    e.record(Event::Input { channel: Some(0) }, t0 + s(3) + ms(1));
    assert!(e.poll(t0 + s(3) + ms(2)).is_empty());
    assert_eq!(e.next_deadline(), Some(t0 + s(6) + ms(1)));
    // The old order, judging the packet on its own, would have ended it.
    let (mut e, t0) = running(idle(3));
    assert!(is_idle_end(&e.handle(Event::PacketReceived, t0 + s(3))));
}

#[test]
fn input_at_t_minus_1_resets() {
    let (mut e, t0) = running(idle(300));
    assert!(
        e.handle(Event::Input { channel: Some(0) }, t0 + s(299))
            .is_empty()
    );
    assert!(e.poll(t0 + s(300)).is_empty());
    assert_eq!(e.next_deadline(), Some(t0 + s(599)));
    assert!(is_idle_end(&e.poll(t0 + s(599))));
}

#[test]
fn keepalives_probe_replies_and_output_are_not_input() {
    let (mut e, t0) = running(idle(10));
    for t in 1..10 {
        let now = t0 + s(t);
        assert!(e.handle(Event::PacketReceived, now).is_empty());
        assert!(e.handle(Event::Output { channel: Some(0) }, now).is_empty());
    }
    assert!(is_idle_end(&e.poll(t0 + s(10))));
}

#[test]
fn output_counts_under_input_output() {
    let mut p = idle(10);
    p.output_is_activity = true;
    let (mut e, t0) = running(p);
    assert!(
        e.handle(Event::Output { channel: Some(0) }, t0 + s(9))
            .is_empty()
    );
    assert!(e.poll(t0 + s(10)).is_empty());
    assert!(is_idle_end(&e.poll(t0 + s(19))));
}

#[test]
fn warning_then_disconnect_and_input_after_warning_keeps() {
    let mut p = idle(60);
    p.idle_warning = Some(s(10));
    let (mut e, t0) = running(p.clone());
    assert_eq!(e.next_deadline(), Some(t0 + s(50)));
    assert_eq!(
        e.poll(t0 + s(50)),
        vec![Action::Warn(
            "rsshd: no input for 50s; disconnecting in 10s".into()
        )]
    );
    assert_eq!(e.next_deadline(), Some(t0 + s(60)));
    assert!(is_idle_end(&e.poll(t0 + s(60))));

    let (mut e, t0) = running(p);
    assert_eq!(e.poll(t0 + s(50)).len(), 1);
    assert!(
        e.handle(Event::Input { channel: Some(0) }, t0 + s(55))
            .is_empty()
    );
    assert!(e.poll(t0 + s(60)).is_empty());
    assert_eq!(e.next_deadline(), Some(t0 + s(105)));
}

#[test]
fn liveness_count_max_n() {
    let p = Policy {
        probe_interval: Some(s(1)),
        probe_max: 2,
        ..Policy::default()
    };
    let (mut e, t0) = running(p);
    assert_eq!(e.poll(t0 + s(1)), vec![Action::SendProbe]);
    assert_eq!(e.poll(t0 + s(2)), vec![Action::SendProbe]);
    assert_eq!(
        e.poll(t0 + s(3)),
        vec![Action::Disconnect(Ending::NotResponding)]
    );
}

#[test]
fn answered_probes_keep_an_idle_client() {
    let p = Policy {
        probe_interval: Some(s(1)),
        probe_max: 2,
        ..Policy::default()
    };
    let (mut e, t0) = running(p);
    for _ in 1..100 {
        let now = e.next_deadline().expect("a probe is always due");
        assert_eq!(e.poll(now), vec![Action::SendProbe]);
        // The answer is a packet like any other.
        assert!(e.handle(Event::PacketReceived, now + ms(10)).is_empty());
    }
    assert!(e.next_deadline().unwrap() > t0 + s(100));
}

#[test]
fn count_max_zero_is_the_recipe() {
    let mut st = crate::config::Settings::default();
    st.client_alive_interval = s(3);
    st.client_alive_count_max = 0;
    let (mut e, t0) = running(Policy::from_settings(&st));
    // Keepalives from the client do not help, and no probes are sent.
    for t in 1..3 {
        assert!(e.handle(Event::PacketReceived, t0 + s(t)).is_empty());
    }
    assert!(is_idle_end(&e.poll(t0 + s(3))));
}

#[test]
fn login_grace_only_before_auth() {
    let p = Policy {
        login_grace: Some(s(120)),
        ..Policy::default()
    };
    let t0 = Instant::now();
    let mut e = Engine::new(p.clone(), t0);
    assert_eq!(e.next_deadline(), Some(t0 + s(120)));
    assert_eq!(
        e.poll(t0 + s(120)),
        vec![Action::Disconnect(Ending::LoginGrace)]
    );

    let mut e = Engine::new(p, t0);
    e.handle(Event::Authenticated, t0 + s(119));
    assert!(e.poll(t0 + s(500)).is_empty());
}

#[test]
fn policy_replaced_mid_countdown_warns_then_ends() {
    let (mut e, t0) = running(idle(3600));
    let mut tight = idle(300);
    tight.idle_warning = Some(s(60));
    // Idle for 20 minutes already: warned at once, ended a full warning later.
    let a = e.handle(Event::PolicyReplaced(Box::new(tight.clone())), t0 + s(1200));
    assert_eq!(
        a,
        vec![Action::Warn(
            "rsshd: no input for 20m; disconnecting in 60s".into()
        )]
    );
    assert!(e.poll(t0 + s(1259)).is_empty());
    assert_eq!(
        e.poll(t0 + s(1260)),
        vec![Action::Disconnect(Ending::Idle { after: s(300) })]
    );

    // Without a warning the end is immediate.
    let (mut e, t0) = running(idle(3600));
    assert!(is_idle_end(&e.handle(
        Event::PolicyReplaced(Box::new(idle(300))),
        t0 + s(1200)
    )));

    // Loosening moves the deadline out.
    let (mut e, t0) = running(idle(10));
    e.handle(Event::PolicyReplaced(Box::new(idle(100))), t0 + s(5));
    assert!(e.poll(t0 + s(10)).is_empty());
    assert_eq!(e.next_deadline(), Some(t0 + s(100)));
}

#[test]
fn channel_timeouts_per_type_and_global() {
    let p = channel_timeout("direct-tcpip", s(2));
    let (mut e, t0) = running(p);
    open(&mut e, 1, "direct-tcpip", t0);
    e.handle(Event::Output { channel: Some(1) }, t0 + s(1));
    assert!(e.poll(t0 + s(2)).is_empty());
    assert_eq!(e.poll(t0 + s(3)), vec![Action::CloseChannel(1)]);
    // Asked once only.
    assert!(e.poll(t0 + s(4)).is_empty());

    let p = channel_timeout("global", s(5));
    let (mut e, t0) = running(p);
    open(&mut e, 1, "direct-tcpip", t0);
    e.handle(Event::Input { channel: Some(1) }, t0 + s(4));
    assert!(e.poll(t0 + s(5)).is_empty());
    assert_eq!(
        e.poll(t0 + s(9)),
        vec![Action::CloseChannel(0), Action::CloseChannel(1)]
    );
}

#[test]
fn unused_connection_timeout() {
    let p = Policy {
        unused_timeout: Some(s(5)),
        ..Policy::default()
    };
    let t0 = Instant::now();
    let mut e = Engine::new(p, t0);
    e.handle(Event::Authenticated, t0);
    open(&mut e, 0, "session:shell", t0 + s(1));
    assert!(e.poll(t0 + s(10)).is_empty());
    e.handle(Event::ChannelClosed { channel: 0 }, t0 + s(10));
    assert!(e.poll(t0 + s(14)).is_empty());
    assert_eq!(
        e.poll(t0 + s(15)),
        vec![Action::Disconnect(Ending::Unused { after: s(5) })]
    );
}
