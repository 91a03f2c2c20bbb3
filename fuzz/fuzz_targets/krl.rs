#![no_main]
//! libFuzzer entry for the `krl` target; the target and its oracle are in src/targets.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rsshd_fuzz::targets::krl(data));
