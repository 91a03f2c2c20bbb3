//! Unit tests skip the way integration tests do (`tests/support`): the line goes to
//! the real stderr, so `cargo test` shows it, and under `RSSHD_TEST_NO_SKIP` (set by
//! `.ci/run`) a skip is a failure, so CI never goes green by skipping.

/// Skip the calling test for `reason` (the caller returns right after).
pub(crate) fn skip(reason: &str) {
    use std::io::Write;
    let name = std::thread::current().name().unwrap_or("test").to_string();
    if std::env::var_os("RSSHD_TEST_NO_SKIP").is_some_and(|v| v != "0") {
        panic!("{name} would be skipped ({reason}), and RSSHD_TEST_NO_SKIP forbids skips");
    }
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {name}: {reason}");
}
