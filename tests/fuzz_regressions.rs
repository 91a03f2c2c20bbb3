//! One test per finding of the fuzz targets (fuzz/), through the public API; the
//! failing inputs themselves are in fuzz/regressions/ and are replayed by
//! tests/fuzz_smoke.rs.

use rsshd::config::{Config, parse_time};
use rsshd::pattern::{ListMatch, match_pattern, match_pattern_list};

/// fuzz/regressions/config/time-multibyte-after-digits: a non-ASCII character right
/// after the digits of a time panicked (a slice inside the character), so one such
/// config line took the daemon down at start or reload.
#[test]
fn time_with_a_multibyte_unit_is_an_error_not_a_panic() {
    for bad in ["6\u{e9}", "6\u{b5}535", "1h5\u{fffd}", "5m\u{1F600}"] {
        assert_eq!(parse_time(bad), None, "{bad:?}");
    }
    let err = Config::parse_str("t", "LoginGraceTime 2\u{e9}\n", &[])
        .expect_err("a bad time is a config error");
    assert!(err.to_string().contains("t:1: LoginGraceTime"), "{err}");
}

/// fuzz/regressions/pattern/star-in-subject: a `*` in the subject was taken as a
/// literal match for the pattern's `*`, after which the star could not stretch, so
/// `*` did not match `**` and `DenyUsers a*` did not deny `a*b`.
#[test]
fn star_in_the_subject_does_not_pin_the_patterns_star() {
    assert!(match_pattern("**", "*"));
    assert!(match_pattern("a*b", "a*"));
    assert!(match_pattern("\u{c5}*\u{fffd}lice", "\u{c5}*"));
    assert!(match_pattern("x*y*z", "*z"));
    assert!(!match_pattern("a*b", "a*c"));
    assert_eq!(match_pattern_list("a*b", "a*", false), ListMatch::Positive);
    assert_eq!(
        match_pattern_list("a*b", "*,!a*", false),
        ListMatch::Negated
    );
}

/// fuzz/regressions/config/listen-bracket-inside-host: `ListenAddress ?[::1]:2200onf`
/// loaded (two colons made it a bare IPv6 host) but `-T` printed a line that did not
/// load again. Brackets outside the `[v6]:port` form are now a config error.
#[test]
fn listen_address_with_stray_brackets_is_refused() {
    for bad in ["?[::1]:2200onf", "[::1", "a]b", "[[::1]]:22", "[a[b]:22"] {
        let err = Config::parse_str("t", &format!("ListenAddress {bad}\n"), &[]).expect_err(bad);
        assert!(err.to_string().contains("t:1: ListenAddress"), "{err}");
    }
    for good in ["[::1]:2200", "::1", "127.0.0.1:22", "localhost"] {
        Config::parse_str("t", &format!("ListenAddress {good}\n"), &[]).expect(good);
    }
}
