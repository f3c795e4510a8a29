#!/usr/bin/env bash
# Live heap allocations per held stream, by requested size (issue 20 goal (c)):
#   bench/live_alloc.sh BIN TAG [STREAMS] [EVENTS]
# Runs BIN (dify-bff with ab.sh's settings, or, named floor*, the stack floor) under
# live_alloc.so (built here from live_alloc.c), warms it up with 200 streams, counts its live
# blocks, holds STREAMS streams (default 1,000) of EVENTS token events a second apart (default
# 45) opened over 10 s, counts again while all are held, and writes /tmp/live-alloc/TAG.diff:
# "size blocks-per-stream" for every size whose count changed, and the totals. Sizes listed in
# LIVE_SIZES=a,b,... also get their allocation backtraces in /tmp/live-alloc/TAG.1 (symbolize
# with addr2line against a `-C strip=none` build and /tmp/live-alloc/TAG.maps). RSS is not
# meaningful here (the shim's own table); use ab.sh's AB_HOLD_ONLY=1 for that. The heap's
# present pages against the live blocks, at both points: /tmp/live-alloc/TAG.pages0 and .pages1
# (live_pages.py).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin=$1; tag=$2; n=${3:-1000}; ev=${4:-45}
bench="$here/target/release/dify-bench"
key=app-BENCHKEY00000000000000000
out=/tmp/live-alloc
mkdir -p "$out"
gcc -O2 -shared -fPIC -o "$out/live_alloc.so" "$here/live_alloc.c" -lpthread
port=$((20000 + RANDOM % 20000))
ulimit -n "$(ulimit -Hn)"
taskset -c 0 "$bench" upstream --listen 127.0.0.1:$((port + 1)) --key $key >"$out/up.log" 2>&1 &
up=$!
if [[ "$(basename "$bin")" == floor* ]]; then
    env -i PATH="$PATH" HOST=127.0.0.1 LD_PRELOAD="$out/live_alloc.so" taskset -c 1 \
        "$bin" 127.0.0.1:$port http://127.0.0.1:$((port + 1))/v1 $key >"$out/bin.log" 2>&1 &
    health=/conversations
else
    env -i PATH="$PATH" DIFY_BASE_URL=http://127.0.0.1:$((port + 1))/v1 DIFY_API_KEY=$key HOST=127.0.0.1 \
        PORT=$port RATE_LIMIT_PER_MINUTE=0 MAX_STREAMS_PER_IDENTITY=100000 MAX_CONCURRENT_STREAMS=10000 \
        MAX_CONNECTIONS_PER_PEER=0 SESSION_SECRET=bench-secret-0123456789abcdef0123456789 \
        LIVE_SIZES="${LIVE_SIZES:-}" LD_PRELOAD="$out/live_alloc.so" taskset -c 1 "$bin" >"$out/bin.log" 2>&1 &
    health=/healthz
fi
pid=$!
trap 'kill $pid $up 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:$port$health && break; sleep 0.2; done
cookie=$(curl -si http://127.0.0.1:$port/conversations | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p')
sse() { taskset -c 0 "$bench" sse --addr 127.0.0.1:$port --header "Cookie: $cookie" --streams "$1" --events "$2" --interval-ms "$3" --ramp-ms "$4" --answer-bytes 16; }
sse 200 5 200 1000 >/dev/null
sleep 1
touch "$out/trig-$pid"; sleep 1
python3 "$here/live_pages.py" "$pid" "$out/live-$pid-0.all" "$n" >"$out/$tag.pages0"
sse "$n" "$ev" 1000 10000 >"$out/hold.log" &
holder=$!
# The last stream opened has had EVENTS-15 events; the first is not done yet. The process is
# stopped while its pages are read, so that blocks and pages are from one moment.
sleep $((ev - 5))
touch "$out/trig-$pid"; sleep 1
kill -STOP "$pid"
python3 "$here/live_pages.py" "$pid" "$out/live-$pid-1.all" "$n" >"$out/$tag.pages1"
kill -CONT "$pid"
cp "/proc/$pid/maps" "$out/$tag.maps"
for i in 0 1; do
    mv "$out/live-$pid-$i" "$out/$tag.$i"; mv "$out/live-$pid-$i.all" "$out/$tag.$i.all"
    mv "$out/live-$pid-$i.allc" "$out/$tag.$i.allc"
done
kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
awk -v n="$n" '$1 ~ /^[0-9]+$/ { if (FNR == NR) a[$1] = $2; else b[$1] = $2 }
    END { for (s in b) if (b[s] != a[s]) { d = b[s] - a[s]; c += d; t += d * s; printf "%s %.2f\n", s, d / n }
          for (s in a) if (!(s in b)) { c -= a[s]; t -= a[s] * s; printf "%s %.2f\n", s, -a[s] / n }
          printf "total blocks/stream %.2f bytes/stream %.1f\n", c / n, t / n }' \
    "$out/$tag.0" "$out/$tag.1" | sort -n >"$out/$tag.diff"
grep '^MI' "$out/$tag.0" "$out/$tag.1"
grep '^total' "$out/$tag.diff"
echo "warm:"; cat "$out/$tag.pages0"; echo "held:"; cat "$out/$tag.pages1"
