#!/usr/bin/env bash
# End-to-end benchmark of a 5-node devnet on 127.0.0.1 (3-of-5), with baselines from the same
# run: the single-node figures (`cairn add`/`get` on a local store) and `cp` of the same file.
#
#   scripts/bench-devnet.sh [--mib N] [--rss-gib G]
#
# Prints MB/s of: cp+sync, local add, local get, network publish, network fetch, network fetch
# with 2 of 5 nodes killed; and the peak RSS of each node while G GiB (default 1) pass through.
set -euo pipefail
mib=256
rss_gib=1
while [ $# -gt 0 ]; do
  case "$1" in
    --mib) mib="$2"; shift 2 ;;
    --rss-gib) rss_gib="$2"; shift 2 ;;
    *) echo "usage: $0 [--mib N] [--rss-gib G]" >&2; exit 2 ;;
  esac
done
root="$(cd "$(dirname "$0")/.." && pwd)"
# CAIRN_BIN=<path> measures a binary built elsewhere (an A/B of two builds in one session).
if [ -n "${CAIRN_BIN:-}" ]; then
  bin="$CAIRN_BIN"
else
  cargo build --release -q -p cairn --manifest-path "$root/Cargo.toml"
  bin="$root/target/release/cairn"
fi
work="$(mktemp -d /tmp/cairn-bench-devnet.XXXXXX)"
devnet_pid=""
cleanup() {
  if [ -n "$devnet_pid" ]; then kill -TERM "$devnet_pid" 2>/dev/null || true; wait "$devnet_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
rate() { python3 -c "import sys; b=float(sys.argv[1]); s=float(sys.argv[2]); print(f'{b/s/1e6:8.1f}')" "$1" "$2"; }

bytes=$((mib * 1024 * 1024))
head -c "$bytes" /dev/urandom > "$work/file.bin"
sync

t0=$(now); cp "$work/file.bin" "$work/copy.bin"; sync; t1=$(now)
cp_s=$(python3 -c "print($t1-$t0)"); rm "$work/copy.bin"

"$bin" --data-dir "$work/local" init --quota 64GiB >/dev/null
t0=$(now); cap=$("$bin" --data-dir "$work/local" add "$work/file.bin" 2>/dev/null | sed -n 's/^read capability: //p'); t1=$(now)
ladd_s=$(python3 -c "print($t1-$t0)")
t0=$(now); "$bin" --data-dir "$work/local" get "$cap" file.bin -o "$work/local.out" 2>/dev/null; t1=$(now)
lget_s=$(python3 -c "print($t1-$t0)")
cmp "$work/file.bin" "$work/local.out"; rm "$work/local.out"

"$bin" devnet --nodes 5 --dir "$work/net" --quota 64GiB > "$work/devnet.log" 2>&1 &
devnet_pid=$!
for _ in $(seq 1 600); do [ -s "$work/net/bootstrap" ] && grep -q "press Ctrl-C" "$work/devnet.log" && break; sleep 0.1; done
peer=$(cat "$work/net/bootstrap")
"$bin" --data-dir "$work/pub" init >/dev/null
t0=$(now); ncap=$("$bin" --data-dir "$work/pub" --peer "$peer" add "$work/file.bin" 2>/dev/null | sed -n 's/^read capability: //p'); t1=$(now)
nadd_s=$(python3 -c "print($t1-$t0)")
t0=$(now); "$bin" --peer "$peer" get "$ncap" file.bin -o "$work/net.out" 2>/dev/null; t1=$(now)
nget_s=$(python3 -c "print($t1-$t0)")
cmp "$work/file.bin" "$work/net.out"; rm "$work/net.out"

# Peak RSS of every node while rss_gib GiB are published and fetched through the network.
node_pids=$(pgrep -f -- "--data-dir $work/net/node-" | tr '\n' ' ')
rss_log="$work/rss.log"; : > "$rss_log"
( while true; do for p in $node_pids; do ps -o rss= -p "$p" 2>/dev/null | sed "s/^/$p /" >> "$rss_log"; done; sleep 0.2; done ) &
sampler=$!
before=$(for p in $node_pids; do ps -o rss= -p "$p"; done | sort -n | tail -1)
for i in $(seq 1 $(( rss_gib * 1024 / mib ))); do
  head -c "$bytes" /dev/urandom > "$work/more.bin"
  c=$("$bin" --data-dir "$work/pub" --peer "$peer" add "$work/more.bin" 2>/dev/null | sed -n 's/^read capability: //p')
  "$bin" --peer "$peer" get "$c" more.bin -o "$work/more.out" 2>/dev/null
done
kill "$sampler" 2>/dev/null || true
peak=$(awk '{print $2}' "$rss_log" | sort -n | tail -1)
rm -f "$work/more.bin" "$work/more.out"

# Two of five nodes killed: fetch from the other three.
for p in $(echo $node_pids | cut -d' ' -f2-3); do kill -KILL "$p"; done
sleep 0.2
t0=$(now); "$bin" --peer "$peer" get "$ncap" file.bin -o "$work/net2.out" 2>/dev/null; t1=$(now)
nget2_s=$(python3 -c "print($t1-$t0)")
cmp "$work/file.bin" "$work/net2.out"

echo "hardware: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "file: $mib MiB random; devnet: 5 node processes on 127.0.0.1, 3-of-5"
printf '%-34s %8s MB/s  %6s x cp\n' "what" "" ""
for row in "cp + sync (baseline):$cp_s" "local add (one store):$ladd_s" "local get:$lget_s" "devnet publish:$nadd_s" "devnet fetch:$nget_s" "devnet fetch, 2 of 5 nodes killed:$nget2_s"; do
  name="${row%%:*}"; s="${row##*:}"
  printf '%-34s %s MB/s  %6.2f x cp\n' "$name" "$(rate "$bytes" "$s")" "$(python3 -c "print($cp_s/$s)")"
done
echo "fetch with 2 nodes killed / healthy fetch: $(python3 -c "print(f'{$nget_s/$nget2_s:.2f}')")"
echo "node RSS: before ${before} KiB, peak ${peak} KiB while ${rss_gib} GiB passed through"
