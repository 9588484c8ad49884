#!/usr/bin/env bash
# Hostile loads against a local gateway over a 5-node devnet, with a legitimate client measured
# under each (hardening items 5, 6, 7 and 9):
#
#   scripts/load-gateway.sh [--mib N] [--quick]
#
# 5: sockets that send a 16 MiB Range GET (then a full-file GET) and never read; 6: pipelined
# requests with made-up method names; 7: a flood of anonymous requests for a private repository;
# 9: idle connections from one address. The attacker's sockets come from 127.0.0.2, the
# legitimate client's from 127.0.0.1; everything targets 127.0.0.1 and every phase is bounded in
# sockets and time. Prints, per phase, the gateway's RSS and threads and the time a public
# config.json GET and /healthz took. CAIRN_BIN=<path> measures a binary built elsewhere (an A/B
# of two builds); --quick uses smaller counts.
set -euo pipefail
mib=64
quick=()
while [ $# -gt 0 ]; do
  case "$1" in
    --mib) mib="$2"; shift 2 ;;
    --quick) quick=(--range-readers 100 --full-readers 8 --method-requests 5000 --denied-requests 20000 --idle 300 --hold 4); shift ;;
    *) echo "usage: $0 [--mib N] [--quick]" >&2; exit 2 ;;
  esac
done
[ "$mib" -ge 17 ] || { echo "--mib must be at least 17 (the 16 MiB range)" >&2; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${CAIRN_BIN:-}" ]; then
  bin="$CAIRN_BIN"
else
  cargo build --release -q -p cairn --manifest-path "$root/Cargo.toml"
  bin="$root/target/release/cairn"
fi
# 1100 idle connections and 530 stalled readers need descriptors on both ends; the devnet and
# its gateway inherit this limit.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 8192 ]; then ulimit -n 8192; else ulimit -n "$hard"; fi
work="$(mktemp -d /tmp/cairn-load-gw.XXXXXX)"
devnet_pid=""
cleanup() {
  if [ -n "$devnet_pid" ]; then kill -TERM "$devnet_pid" 2>/dev/null || true; wait "$devnet_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/model"
head -c "$((mib * 1024 * 1024))" /dev/urandom > "$work/model/weights.bin"
printf '{"architectures": ["Load"], "hidden_size": 8}\n' > "$work/model/config.json"

"$bin" devnet --nodes 5 --dir "$work/net" --quota 64GiB > "$work/devnet.log" 2>&1 &
devnet_pid=$!
for _ in $(seq 1 600); do grep -q "press Ctrl-C" "$work/devnet.log" 2>/dev/null && break; sleep 0.1; done
grep -q "press Ctrl-C" "$work/devnet.log" || { echo "the devnet did not start; see its log:" >&2; cat "$work/devnet.log" >&2; exit 1; }
peer=$(cat "$work/net/bootstrap")
gw=$(cat "$work/net/gateway-node/gateway/gateway.addr")
"$bin" --data-dir "$work/pub" init >/dev/null
cap=$("$bin" --data-dir "$work/pub" --peer "$peer" add "$work/model" 2>/dev/null | sed -n 's/^read capability: //p')
"$bin" --data-dir "$work/net/gateway-node" register load/model "$cap" >/dev/null
"$bin" --data-dir "$work/net/gateway-node" register load/private "$cap" --private >/dev/null
gw_pid=$(pgrep -f -- "--data-dir $work/net/gateway-node" | head -1)
port=${gw##*:}
# A first read so that the manifest is open and the figures below are not about opening it.
curl -sf -o /dev/null "$gw/load/model/resolve/main/config.json"

echo "hardware: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); binary: $bin"
echo "weights.bin: $mib MiB; gateway over 5 node processes; attacker 127.0.0.2, client 127.0.0.1"
timeout 900 python3 "$root/scripts/load_gateway.py" --port "$port" --pid "$gw_pid" \
  --repo load/model --private load/private "${quick[@]}"
