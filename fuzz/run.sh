#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for a bounded time; prints one line per target:
#   <target> seconds=<s> runs=<executed inputs> crashes=<new crash/oom/timeout/leak artifacts>
# Usage: fuzz/run.sh [seconds per target, default 120] [target ...]
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). No nightly toolchain is needed: the stable
# one runs with RUSTC_BOOTSTRAP=1. SANITIZER=address|none (default address; `none` where ASan does not
# link). FUZZ_TARGET_DIR (default ~/.cache/outflow-fuzz-target) keeps fuzz builds apart from the
# main build. New inputs go to fuzz/corpus/<target> (git-ignored); crashes to fuzz/artifacts/<target>:
# fix the bug, then copy the input into fuzz/regressions/<target> (tests/corpus.rs replays those).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-120}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(avro_decode topology_parse ingress_json)
sanitizer="${SANITIZER:-address}"
target_dir="${FUZZ_TARGET_DIR:-$HOME/.cache/outflow-fuzz-target}"
export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR
build=(-O -a --codegen-units 16 --sanitizer "$sanitizer" --target-dir "$target_dir")
cargo fuzz build "${build[@]}" >&2
mkdir -p logs
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t" "regressions/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    log="logs/$t.log"
    set +e
    cargo fuzz run "${build[@]}" "$t" "corpus/$t" "seeds/$t" "regressions/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
        >"$log" 2>&1
    rc=$?
    set -e
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    # a crash ends the run before the final stats: take the last status line (#N ...) instead
    [ -n "$runs" ] || runs=$(grep -Eo '^#[0-9]+' "$log" | tr -d '#' | tail -1)
    crashes=$(( $(find "artifacts/$t" -type f | wc -l) - before ))
    echo "$t seconds=$seconds runs=${runs:-?} crashes=$crashes exit=$rc log=fuzz/$log"
done
