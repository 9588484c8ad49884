#!/usr/bin/env bash
# Builds every fuzz target, then runs each for SECONDS (default 60), one after the other.
# Exits non-zero at the first target that finds a crash; the input is left under
# fuzz/artifacts/<target>/ and `cargo +nightly fuzz run <target> <file>` replays it.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# CI may skip this step when time is short: set CAIRN_FUZZ_SKIP=1.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [SECONDS]  (seconds per target, a positive integer)" >&2
    exit 2
fi
if [ "${CAIRN_FUZZ_SKIP:-0}" = 1 ]; then
    echo "CAIRN_FUZZ_SKIP=1: skipping the fuzz run"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz on the nightly toolchain is needed: rustup toolchain install nightly && cargo install cargo-fuzz" >&2
    exit 2
fi

cd "$(dirname "$0")"
targets=$(cargo +nightly fuzz list)
cargo +nightly fuzz build
for t in $targets; do
    echo "== fuzzing $t for ${seconds}s"
    # Corpus directories persist between runs, so coverage accumulates locally.
    mkdir -p "corpus/$t"
    log="artifacts/$t.log"
    mkdir -p artifacts
    # New inputs go to corpus/<target> (not committed); seeds/<target> (committed, hand-made
    # valid inputs) is read too, so runs start past the format's first checks.
    dirs=("corpus/$t")
    if [ -d "seeds/$t" ]; then dirs+=("seeds/$t"); fi
    if ! cargo +nightly fuzz run "$t" "${dirs[@]}" -- -max_total_time="$seconds" \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz target $t failed; the input is under fuzz/artifacts/$t/, the log in $log" >&2
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$log" || true
done
echo "all fuzz targets ran ${seconds}s without a failure"
