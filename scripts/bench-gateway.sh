#!/usr/bin/env bash
# Benchmark of the HTTP gateway over a 5-node devnet (3-of-5), beside a baseline from the same
# run: nginx serving the same file from local disk.
#
#   scripts/bench-gateway.sh [--mib N] [--rss-gib G] [--profile]
#
# Prints: full GET MB/s (gateway vs nginx), median and p90 latency of a 1 MiB range in the middle
# of the file (100 requests each), and the gateway's peak RSS while streaming G GiB (default 0 =
# skip; 4 is the issue's figure). With --profile, also where the gateway's CPU time goes during 5
# full GETs: CPU-seconds per thread kind (tokio workers, blocking-pool threads, rayon, the
# read pipeline's fetcher) and, when `perf` is installed, the top symbols.
set -euo pipefail
mib=256
rss_gib=0
profile=0
while [ $# -gt 0 ]; do
  case "$1" in
    --mib) mib="$2"; shift 2 ;;
    --rss-gib) rss_gib="$2"; shift 2 ;;
    --profile) profile=1; shift ;;
    *) echo "usage: $0 [--mib N] [--rss-gib G] [--profile]" >&2; exit 2 ;;
  esac
done
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
root="$(cd "$(dirname "$0")/.." && pwd)"
# CAIRN_BIN=<path> measures a binary built elsewhere (an A/B of two builds in one session).
if [ -n "${CAIRN_BIN:-}" ]; then
  bin="$CAIRN_BIN"
else
  cargo build --release -q -p cairn --manifest-path "$root/Cargo.toml"
  bin="$root/target/release/cairn"
fi
work="$(mktemp -d /tmp/cairn-bench-gw.XXXXXX)"
devnet_pid=""; nginx_conf=""
cleanup() {
  if [ -n "$devnet_pid" ]; then kill -TERM "$devnet_pid" 2>/dev/null || true; wait "$devnet_pid" 2>/dev/null || true; fi
  if [ -n "$nginx_conf" ]; then nginx -c "$nginx_conf" -s stop 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

bytes=$((mib * 1024 * 1024))
mkdir -p "$work/model" "$work/www"
chmod 755 "$work" "$work/www"   # nginx's workers run as an unprivileged user
head -c "$bytes" /dev/urandom > "$work/model/weights.bin"
cp "$work/model/weights.bin" "$work/www/weights.bin"

# nginx on loopback, serving the same file from disk.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nginx_conf="$work/nginx.conf"
cat > "$nginx_conf" <<NGINX
worker_processes 1; daemon on; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 256; }
http { access_log off; sendfile on; server { listen 127.0.0.1:$port; root $work/www; } }
NGINX
nginx -c "$nginx_conf"
base_url="http://127.0.0.1:$port"

"$bin" devnet --nodes 5 --dir "$work/net" --quota 64GiB > "$work/devnet.log" 2>&1 &
devnet_pid=$!
for _ in $(seq 1 600); do grep -q "press Ctrl-C" "$work/devnet.log" 2>/dev/null && break; sleep 0.1; done
peer=$(cat "$work/net/bootstrap")
gw=$(cat "$work/net/gateway-node/gateway/gateway.addr")
"$bin" --data-dir "$work/pub" init >/dev/null
cap=$("$bin" --data-dir "$work/pub" --peer "$peer" add "$work/model" 2>/dev/null | sed -n 's/^read capability: //p')
"$bin" --data-dir "$work/net/gateway-node" register bench/model "$cap" >/dev/null

get_rate() { # url -> MB/s of a full GET (best of 3)
  best=0
  for _ in 1 2 3; do
    r=$(curl -sf -o /dev/null -w '%{speed_download}' "$1")
    best=$(python3 -c "print(max($best, $r))")
  done
  python3 -c "print(f'{$best/1e6:.1f}')"
}
lat() { # url -> "median p90" ms of 100 1-MiB range requests in the middle of the file
  mid=$((bytes / 2))
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null -H "Range: bytes=$mid-$((mid + 1048575))" -w '%{time_total}\n' "$1"
  done | sort -n | awk '{a[NR]=$1} END {printf "%.2f %.2f", a[int(NR/2)]*1000, a[int(NR*0.9)]*1000}'
}
lat_cold() { # url -> "median p90" ms of 100 1-MiB ranges at 100 distinct places, 1/100 of the
  # file apart, each asked once: no range shares a chunk with another, so none is served from
  # the gateway's cache of opened chunks (the repeated range above is).
  step=$((bytes / 100))
  for i in $(seq 0 99); do
    a=$((i * step))
    curl -sf -o /dev/null -H "Range: bytes=$a-$((a + 1048575))" -w '%{time_total}\n' "$1"
  done | sort -n | awk '{a[NR]=$1} END {printf "%.2f %.2f", a[int(NR/2)]*1000, a[int(NR*0.9)]*1000}'
}
g_rate=$(get_rate "$gw/bench/model/resolve/main/weights.bin")
n_rate=$(get_rate "$base_url/weights.bin")
read c_med c_p90 <<<"$(lat_cold "$gw/bench/model/resolve/main/weights.bin")"
read g_med g_p90 <<<"$(lat "$gw/bench/model/resolve/main/weights.bin")"
read n_med n_p90 <<<"$(lat "$base_url/weights.bin")"
curl -sf "$gw/bench/model/resolve/main/weights.bin" | cmp - "$work/model/weights.bin"
curl -sf "$base_url/weights.bin" | cmp - "$work/model/weights.bin"

echo "hardware: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "file: $mib MiB random; gateway over 5 node processes, 3-of-5; baseline nginx from disk"
printf 'full GET   gateway %8s MB/s   nginx %8s MB/s   ratio %s\n' "$g_rate" "$n_rate" "$(python3 -c "print(f'{$g_rate/$n_rate:.3f}')")"
printf '1 MiB range median/p90 ms   gateway %s/%s (same range again: cached chunks)   gateway %s/%s (100 distinct places: fetched)   nginx %s/%s\n' "$g_med" "$g_p90" "$c_med" "$c_p90" "$n_med" "$n_p90"

if [ "$rss_gib" -gt 0 ]; then
  gw_pid=$(pgrep -f -- "--data-dir $work/net/gateway-node" | head -1)
  rounds=$(( rss_gib * 1024 / mib ))
  ( for _ in $(seq 1 "$rounds"); do curl -s -o /dev/null "$gw/bench/model/resolve/main/weights.bin"; done ) &
  loader=$!
  peak=0
  while kill -0 "$loader" 2>/dev/null; do
    r=$(ps -o rss= -p "$gw_pid" | tr -d ' '); [ "${r:-0}" -gt "$peak" ] && peak=$r; sleep 0.2
  done
  echo "gateway peak RSS while streaming $rss_gib GiB: $((peak / 1024)) MiB"
fi

if [ "$profile" = 1 ]; then
  gw_pid=$(pgrep -f -- "--data-dir $work/net/gateway-node" | head -1)
  # CPU clock ticks per thread, summed by thread name with trailing digits and dashes removed.
  ticks() {
    for t in /proc/"$gw_pid"/task/*; do
      name=$(tr -d '\n' < "$t/comm" | sed 's/[-0-9]*$//')
      # utime and stime are fields 14 and 15 of stat; the name (field 2) may hold spaces.
      set -- $(sed 's/^.*) //' "$t/stat")
      echo "$name ${12} ${13}"
    done | awk '{u[$1]+=$2; s[$1]+=$3} END {for (k in u) print k, u[k], s[k]}' | sort
  }
  hz=$(getconf CLK_TCK)
  # CPU ticks (user+system) of the five node processes together, which serve the shards.
  node_ticks() {
    for p in $(pgrep -f -- "--data-dir $work/net/node-"); do
      sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}'
    done | awk '{t += $1} END {print t + 0}'
  }
  n0=$(node_ticks)
  ticks > "$work/ticks.before"
  perf_pid=""
  if command -v perf >/dev/null; then
    perf record -q -F 499 -g -p "$gw_pid" -o "$work/perf.data" >/dev/null 2>&1 &
    perf_pid=$!
    sleep 0.5
  fi
  start=$(date +%s.%N)
  for _ in 1 2 3 4 5; do curl -sf -o /dev/null "$gw/bench/model/resolve/main/weights.bin"; done
  wall=$(python3 -c "import time; print(f'{time.time() - $start:.2f}')")
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; fi
  ticks > "$work/ticks.after"
  n1=$(node_ticks)
  echo "node processes (5) CPU while serving them: $(python3 -c "print(f'{($n1 - $n0) / $hz:.2f}')") s"
  echo "gateway CPU while serving 5 full GETs ($((5 * mib)) MiB in ${wall} s wall), per thread kind (user+system s):"
  join -a 2 -e 0 -o 0,1.2,1.3,2.2,2.3 "$work/ticks.before" "$work/ticks.after" |
    awk -v hz="$hz" '{u=($4-$2)/hz; s=($5-$3)/hz; if (u+s > 0) printf "  %-22s %6.2f user %6.2f system\n", $1, u, s}'
  if [ -n "$perf_pid" ] && [ -s "$work/perf.data" ]; then
    echo "top symbols (self time, perf):"
    perf report -i "$work/perf.data" --no-children --sort sym --stdio 2>/dev/null |
      grep -E '^ +[0-9]' | head -15
  fi
fi
