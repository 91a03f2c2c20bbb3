//! The monitor's request protocol: datagrams a compromised network process could
//! send, decoded and served as the monitor does (src/host/wire/fuzz.rs has the
//! body and its oracles; it needs the crate's private types).

/// Newline-separated datagrams, each decoded and, if a call, served against a
/// fresh in-process host with a configuration that reaches no real account.
pub fn monitor_request(data: &[u8]) {
    rsshd::host::wire::fuzz_monitor_request(data);
}
