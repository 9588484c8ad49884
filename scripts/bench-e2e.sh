#!/usr/bin/env bash
# End-to-end throughput of the `cairn` binary beside plain-file baselines measured in the same
# run on the same disk:
#
#   cp FILE + sync      the same bytes written once (cairn writes them 5/3 times, 3-of-5)
#   cat FILE >/dev/null a plain read
#   cairn add FILE      into a fresh data dir (chunk, seal, erasure-code, write and sync shards)
#   cairn get CAP + sync back out, then `cmp` against the original
#
# The input is freshly written, so every row reads it from the page cache. Each row is the best
# of --runs runs (default 3). With --big, also adds a 4 GiB random file under `/usr/bin/time -v`
# and prints cairn's peak RSS (it should stay near two pipeline windows, not grow with the file).
#
# Usage: scripts/bench-e2e.sh [--big] [--runs N] [--keep]
#   TMPDIR picks the disk measured (default /tmp). --keep leaves the work directory in place.
set -euo pipefail

big=0
runs=3
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
    --big) big=1 ;;
    --runs)
        runs="${2:?--runs needs a number}"
        shift
        ;;
    --keep) keep=1 ;;
    -h | --help)
        sed -n '2,17p' "$0"
        exit 0
        ;;
    *)
        echo "unknown argument $1; see $0 --help" >&2
        exit 2
        ;;
    esac
    shift
done
if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then
    echo "--runs must be a positive integer, not $runs" >&2
    exit 2
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
small_len=$((256 * 1024 * 1024))
big_len=$((4 * 1024 * 1024 * 1024))

# CAIRN_BIN measures another build (before/after comparisons in one sitting).
if [ -n "${CAIRN_BIN:-}" ]; then
    cairn="$CAIRN_BIN"
else
    echo "building release binary..." >&2
    cargo build --release -p cairn --manifest-path "$root/Cargo.toml" >&2
    cairn="$root/target/release/cairn"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench-e2e.XXXXXX")"
cleanup() {
    if [ "$keep" = 1 ]; then
        echo "kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
# On any failure, say where, and show what cairn said last.
trap 'echo "bench-e2e.sh failed at line $LINENO" >&2; [ -s "$work/cairn.err" ] && tail -n 20 "$work/cairn.err" >&2' ERR

# Seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }
# mbps BYTES SECONDS -> MB/s (10^6 bytes)
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1e6 / (s > 0 ? s : 1e-9) }'; }
# best CURRENT NEW -> the smaller time (the best run)
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }

# Runs "$@" once (in this shell, so `set -e` applies) and sets $elapsed to its wall time.
elapsed=""
timed() {
    local t0 t1
    t0=$(now)
    "$@"
    t1=$(now)
    elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')
}

fresh_store() {
    local d="$1"
    rm -rf "$d"
    "$cairn" --data-dir "$d" init --quota 64GiB >/dev/null
}

do_cp() {
    cp "$1" "$2"
    sync "$2"
}
do_cat() { cat "$1" >/dev/null; }
do_add() { "$cairn" --data-dir "$1" add "$2" >"$3" 2>"$work/cairn.err"; }
do_get() {
    "$cairn" --data-dir "$1" get "$2" -o "$3" >/dev/null 2>"$work/cairn.err"
    sync "$3/$(basename "$4")"
}

input="$work/model.bin"
echo "writing a $((small_len >> 20)) MiB random file..." >&2
head -c "$small_len" /dev/urandom >"$input"
sync "$input"

t_cp="" t_cat="" t_add="" t_get=""
for i in $(seq "$runs"); do
    echo "run $i/$runs..." >&2
    rm -f "$work/copy.bin"
    timed do_cp "$input" "$work/copy.bin"
    t_cp=$(best "$t_cp" "$elapsed")
    timed do_cat "$input"
    t_cat=$(best "$t_cat" "$elapsed")
    fresh_store "$work/data"
    timed do_add "$work/data" "$input" "$work/add.out"
    t_add=$(best "$t_add" "$elapsed")
    cap=$(sed -n 's/^read capability: //p' "$work/add.out")
    if [ -z "$cap" ]; then
        echo "cairn add printed no read capability:" >&2
        cat "$work/add.out" >&2
        exit 1
    fi
    rm -rf "$work/out"
    timed do_get "$work/data" "$cap" "$work/out" "$input"
    t_get=$(best "$t_get" "$elapsed")
    if ! cmp "$input" "$work/out/$(basename "$input")"; then
        echo "cairn get returned different bytes than were added" >&2
        exit 1
    fi
done
rm -f "$work/copy.bin"

cp_mbps=$(mbps "$small_len" "$t_cp")
row() {
    local name="$1" secs="$2" rate
    rate=$(mbps "$small_len" "$secs")
    printf "%-22s %9.3f s %10s MB/s %8s\n" "$name" "$secs" "$rate" \
        "$(awk -v r="$rate" -v c="$cp_mbps" 'BEGIN { printf "%.2fx", r / c }')"
}

echo
echo "host: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores," \
    "$(free -g | awk '/^Mem:/ { print $2 }') GiB RAM; disk: $(df -hT "$work" | awk 'NR == 2 { print $1, $2 }')"
echo "file: $((small_len >> 20)) MiB random, in page cache; best of $runs runs; identity checked with cmp"
printf "%-22s %11s %15s %8s\n" "operation" "time" "throughput" "vs cp"
row "cp + sync (baseline)" "$t_cp"
row "cat > /dev/null" "$t_cat"
row "cairn add" "$t_add"
row "cairn get + sync" "$t_get"

if [ "$big" = 1 ]; then
    if ! [ -x /usr/bin/time ]; then
        echo "installing GNU time for peak RSS..." >&2
        apt-get install -y time >/dev/null
    fi
    rm -rf "$work/data" "$work/out" "$input"
    big_input="$work/big.bin"
    echo "writing a $((big_len >> 30)) GiB random file..." >&2
    head -c "$big_len" /dev/urandom >"$big_input"
    sync "$big_input"
    fresh_store "$work/data"
    t0=$(now)
    /usr/bin/time -v -o "$work/time.txt" "$cairn" --data-dir "$work/data" add "$big_input" \
        >/dev/null 2>"$work/add.err" || {
        cat "$work/add.err" "$work/time.txt" >&2
        exit 1
    }
    t1=$(now)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    rss_kib=$(sed -n 's/^\s*Maximum resident set size (kbytes): //p' "$work/time.txt")
    echo
    echo "cairn add of $((big_len >> 30)) GiB random: $secs s, $(mbps "$big_len" "$secs") MB/s," \
        "peak RSS $((rss_kib / 1024)) MiB"
fi
