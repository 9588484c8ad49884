#!/usr/bin/env bash
# HTTPS beside plain HTTP at the gateway, in one run on this machine: the same build, the same
# artifact in the same kind of local store, two `cairn gateway` processes (one plain, one with
# a throwaway CA's certificate), measured by the same client (curl, OpenSSL) one after the other.
#
#   scripts/bench-tls.sh [--mib N] [--rounds R]
#
# Prints: full GET MB/s over HTTP/1.1 (plain), HTTPS HTTP/1.1 and HTTPS HTTP/2 (best of R) and
# their ratio to plain; median/p90 ms of 100 1-MiB ranges at distinct places (each on a new
# connection, so an HTTPS range pays its handshake); TLS handshakes per second (`openssl
# s_time`, new sessions, TLS 1.3) against connections per second over plain TCP.
set -euo pipefail
mib=256
rounds=5
while [ $# -gt 0 ]; do
  case "$1" in
    --mib) mib="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    *) echo "usage: $0 [--mib N] [--rounds R]" >&2; exit 2 ;;
  esac
done
for tool in curl openssl python3; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
done
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${CAIRN_BIN:-}" ]; then
  bin="$CAIRN_BIN"
else
  cargo build --release -q -p cairn --manifest-path "$root/Cargo.toml"
  bin="$root/target/release/cairn"
fi
work="$(mktemp -d /tmp/cairn-bench-tls.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

bytes=$((mib * 1024 * 1024))
mkdir -p "$work/model"
head -c "$bytes" /dev/urandom > "$work/model/weights.bin"
# A throwaway CA and an ECDSA P-256 certificate for 127.0.0.1, made with openssl (the gateway
# takes any PEM chain and key).
mkdir -p "$work/ca"; ca="$work/ca/ca.pem"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
  -keyout "$work/ca/ca.key" -out "$ca" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$work/ca/gateway.key" -out "$work/ca/gateway.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$work/ca/ext"
openssl x509 -req -in "$work/ca/gateway.csr" -CA "$ca" -CAkey "$work/ca/ca.key" -CAcreateserial \
  -days 2 -extfile "$work/ca/ext" -out "$work/ca/gateway.pem" 2>/dev/null
chmod 600 "$work/ca/gateway.key"

start_gw() { # name, extra args... -> sets $url (not run in a subshell: $pids must keep the pid)
  local name="$1"; shift
  "$bin" --data-dir "$work/$name" init >/dev/null
  cap=$("$bin" --data-dir "$work/$name" add "$work/model" 2>/dev/null | sed -n 's/^read capability: //p')
  "$bin" --data-dir "$work/$name" gateway --listen 127.0.0.1:0 "$@" > "$work/$name.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 600); do [ -s "$work/$name/gateway/gateway.addr" ] && break; sleep 0.1; done
  "$bin" --data-dir "$work/$name" register bench/model "$cap" >/dev/null
  url=$(cat "$work/$name/gateway/gateway.addr")
  gw_pid=${pids[-1]}
}
start_gw plain; plain=$url; plain_pid=$gw_pid
start_gw tls --tls-cert "$work/ca/gateway.pem" --tls-key "$work/ca/gateway.key"; tls=$url; tls_pid=$gw_pid
path=/bench/model/resolve/main/weights.bin

get_rate() { # curl args... -> MB/s of a full GET (best of $rounds)
  best=0
  for _ in $(seq 1 "$rounds"); do
    r=$(curl -sf -o /dev/null -w '%{speed_download}' "$@")
    best=$(python3 -c "print(max($best, $r))")
  done
  python3 -c "print(f'{$best/1e6:.1f}')"
}
lat_cold() { # curl args... -> "median p90" ms of 100 1-MiB ranges at distinct places
  step=$((bytes / 100))
  for i in $(seq 0 99); do
    a=$((i * step))
    curl -sf -o /dev/null -H "Range: bytes=$a-$((a + 1048575))" -w '%{time_total}\n' "$@"
  done | sort -n | awk '{a[NR]=$1} END {printf "%.2f %.2f", a[int(NR/2)]*1000, a[int(NR*0.9)]*1000}'
}
# Every byte is checked once, over each path.
curl -sf "$plain$path" | cmp - "$work/model/weights.bin"
curl -sf --cacert "$ca" --http2 "$tls$path" | cmp - "$work/model/weights.bin"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu_per_gb() { # pid, curl args... -> "gateway client" CPU seconds per GB of one full GET
  local pid="$1"; shift
  local g0 c0 g1 c1 me=$BASHPID   # this subshell: curl's parent, which collects its CPU time
  g0=$(cpu_ticks "$pid"); c0=$(awk '{print $16 + $17}' "/proc/$me/stat")
  curl -sf -o /dev/null "$@"
  g1=$(cpu_ticks "$pid"); c1=$(awk '{print $16 + $17}' "/proc/$me/stat")
  python3 -c "t=$(getconf CLK_TCK); gb=$bytes/1e9; print(f'{($g1-$g0)/t/gb:.2f} {($c1-$c0)/t/gb:.2f}')"
}
read p_gcpu p_ccpu <<<"$(cpu_per_gb "$plain_pid" "$plain$path")"
read t_gcpu t_ccpu <<<"$(cpu_per_gb "$tls_pid" --cacert "$ca" --http1.1 "$tls$path")"
p_rate=$(get_rate "$plain$path")
t1_rate=$(get_rate --cacert "$ca" --http1.1 "$tls$path")
t2_rate=$(get_rate --cacert "$ca" --http2 "$tls$path")
read p_med p_p90 <<<"$(lat_cold "$plain$path")"
read t_med t_p90 <<<"$(lat_cold --cacert "$ca" --http2 "$tls$path")"

hostport="${tls#https://}"
hs=$(openssl s_time -connect "$hostport" -new -time 5 -CAfile "$ca" -tls1_3 2>/dev/null \
  | awk '/connections in [0-9.]+s/ {print $1 / $4}' | sed -n 1p)
tcp=$(python3 - "${plain#http://}" <<'PY'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
n, t0 = 0, time.time()
while time.time() - t0 < 5:
    s = socket.create_connection((host, int(port))); s.close(); n += 1
print(f"{n / (time.time() - t0):.0f}")
PY
)

echo "hardware: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "file: $mib MiB random, local store; two gateways of one build; client curl $(curl --version | head -1 | cut -d' ' -f2)"
ratio() { python3 -c "print(f'{$1/$2:.3f}')"; }
printf 'full GET  plain HTTP/1.1 %8s MB/s   HTTPS HTTP/1.1 %8s MB/s (x%s)   HTTPS HTTP/2 %8s MB/s (x%s)\n' \
  "$p_rate" "$t1_rate" "$(ratio "$t1_rate" "$p_rate")" "$t2_rate" "$(ratio "$t2_rate" "$p_rate")"
printf 'CPU seconds per GB of a full GET   gateway plain %s, HTTPS %s   curl plain %s, HTTPS %s\n' \
  "$p_gcpu" "$t_gcpu" "$p_ccpu" "$t_ccpu"
printf '1 MiB range, new connection each, median/p90 ms   plain %s/%s   HTTPS h2 %s/%s\n' \
  "$p_med" "$p_p90" "$t_med" "$t_p90"
printf 'new connections per second   TLS 1.3 handshakes %s   plain TCP connects %s\n' "${hs:-?}" "$tcp"
