#!/usr/bin/env bash
# Coverage-guided fuzzing of rsshd's parsers with libFuzzer, on the stable toolchain:
# rustc's `-C passes=sancov-module` instruments the code (no nightly `-Z` flag is
# needed) and libfuzzer-sys compiles libFuzzer's engine. Each target runs for the
# given time; inputs that add coverage go to fuzz/work/TARGET (not committed), failing
# ones to fuzz/artifacts/TARGET/. Copy a failing input to fuzz/regressions/TARGET/
# once fixed: the test suite (tests/fuzz_smoke.rs) replays that directory.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     # default 60 s, every target
#   targets: config authorized_keys pattern control krl monitor_request
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(config authorized_keys pattern control krl monitor_request)
fi
# Building for an explicit target triple keeps these flags off build scripts and
# proc macros, which must not be instrumented.
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
cargo build --release --target "$triple" --bins
failed=()
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "artifacts/$t" "regressions/$t"
    echo "== $t: ${secs}s"
    # -timeout: an input slower than 10 s is a finding (every seed takes well under
    # 10 ms of CPU; libFuzzer's clock is wall time, and on a loaded 2-core machine a
    # 3 ms input was once starved past 2 s). -rss_limit_mb: a memory blow-up.
    if ! "./target/$triple/release/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -dict="dict/$t.dict" -artifact_prefix="artifacts/$t/" -print_final_stats=1 \
        "work/$t" "corpus/$t" "regressions/$t"; then
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "findings in: ${failed[*]} (see fuzz/artifacts/)" >&2
    exit 1
fi
