//! Runs each fuzz target (fuzz/src/targets) on its committed seed corpus and past
//! findings, then on mutants for a few seconds, on the stable toolchain without
//! coverage instrumentation. The long coverage-guided runs are `fuzz/run.sh`.
//! `RSSHD_FUZZ_SECONDS` sets the time per target (default 3), `RSSHD_FUZZ_SEED` the
//! generator's seed (default: a new one per run, printed so a failure can be repeated).

#[path = "../fuzz/src/harness.rs"]
mod harness;
#[path = "../fuzz/src/targets/mod.rs"]
mod targets;

use std::path::Path;
use std::time::Duration;

fn fuzz(name: &str) {
    let (_, target) = targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a target of that name");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut seeds = harness::load_dir(&dir.join("corpus").join(name));
    let corpus = seeds.len();
    seeds.extend(harness::load_dir(&dir.join("regressions").join(name)));
    assert!(corpus >= 3, "fuzz/corpus/{name} has {corpus} seeds");
    let dict = harness::load_dict(&dir.join("dict").join(format!("{name}.dict")));
    let secs: f64 = std::env::var("RSSHD_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let seed = std::env::var("RSSHD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("fuzz {name}: RSSHD_FUZZ_SEED={seed}");
    let out = harness::run(
        name,
        *target,
        &seeds,
        &dict,
        &harness::Options {
            budget: Duration::from_secs_f64(secs),
            // Every seed takes well under 10 ms; two seconds even on a loaded machine
            // is a blow-up, not noise.
            slow: Duration::from_secs(2),
            max_len: 64 * 1024,
            seed,
            artifacts: dir.join("artifacts"),
        },
    );
    eprintln!(
        "fuzz {name}: {} seeds, {} inputs in {secs} s",
        out.seeds, out.execs
    );
    assert!(out.execs > out.seeds as u64, "no mutant ran");
}

#[test]
fn fuzz_config() {
    fuzz("config");
}

#[test]
fn fuzz_authorized_keys() {
    fuzz("authorized_keys");
}

#[test]
fn fuzz_pattern() {
    fuzz("pattern");
}

#[test]
fn fuzz_control() {
    fuzz("control");
}

#[test]
fn fuzz_krl() {
    fuzz("krl");
}

#[test]
fn fuzz_monitor_request() {
    fuzz("monitor_request");
}
