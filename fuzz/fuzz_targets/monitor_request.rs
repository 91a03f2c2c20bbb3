#![no_main]
//! libFuzzer entry for the `monitor_request` target; the target and its oracles are in src/targets.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rsshd_fuzz::targets::monitor_request(data));
