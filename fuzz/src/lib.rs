//! rsshd's fuzz targets: each drives one parser that reads hostile input and checks
//! an oracle beyond "no panic". `targets` is what libFuzzer runs (fuzz_targets/,
//! through fuzz/run.sh); `harness` is a coverage-less mutation fuzzer over the same
//! targets and seed corpus, which the test suite runs on the stable toolchain.

pub mod harness;
pub mod targets;
