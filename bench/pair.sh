#!/usr/bin/env bash
# CPU of several proxy builds under the same SSE load, measured in alternation, for changes too
# small for the suite's rounds to show (bench/README.md, "Comparing builds natively"):
#   bench/pair.sh ROUNDS BIN[:NAME=value,...] ...
#   bench/pair.sh 8 bench/target/release/floor-proxy bench/target/release/dify-bff \
#       bench/target/release/dify-bff:STREAM_RESUME_GRACE_SECS=0
# One upstream on CPU 0; every build started once, side by side, on CPU 1 (a binary whose name
# starts with `floor` gets floor-proxy's arguments; the others dify-bff's settings, as the
# suite sets them, plus the NAME=value pairs after a colon). Each round loads each build once,
# in a rotated order, and prints its CPU (ms, from /proc/PID/task/*/schedstat) and its user and
# system ticks (/proc/PID/stat); the summary gives each build's totals and the median of its
# rounds' ratios to the first build. The load is (d)'s bulk by default: 100 streams of 400
# events of 4 KiB, 5 ms apart; STREAMS, EVENTS, INTERVAL (ms), ANSWER (bytes) and RAMP (ms)
# change it (STREAMS=1000 EVENTS=15 INTERVAL=200 ANSWER=16 RAMP=2000: (b)'s 1,000 streams).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bench="$here/target/release/dify-bench"
key=app-BENCHKEY00000000000000000
rounds=$1
shift
ulimit -n "$(ulimit -Hn)"
work="$(mktemp -d)"
upport=$((20000 + RANDOM % 20000))
taskset -c 0 "$bench" upstream --listen 127.0.0.1:$upport --key $key >"$work/up.log" 2>&1 &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

names=() ports=() procs=() cookies=()
i=0
for spec in "$@"; do
    bin=${spec%%:*}
    extra=()
    if [[ "$spec" == *:* ]]; then IFS=, read -r -a extra <<<"${spec#*:}"; fi
    port=$((upport + 1 + i))
    if [[ "$(basename "$bin")" == floor* ]]; then
        env -i PATH="$PATH" HOST=127.0.0.1 taskset -c 1 "$bin" 127.0.0.1:$port \
            http://127.0.0.1:$upport/v1 $key >"$work/p$i.log" 2>&1 &
        health=/conversations
    else
        env -i PATH="$PATH" DIFY_BASE_URL=http://127.0.0.1:$upport/v1 DIFY_API_KEY=$key \
            HOST=127.0.0.1 PORT=$port RATE_LIMIT_PER_MINUTE=0 MAX_STREAMS_PER_IDENTITY=100000 \
            MAX_CONCURRENT_STREAMS=10000 MAX_CONNECTIONS_PER_PEER=0 SHUTDOWN_GRACE_SECS=1 \
            SESSION_SECRET=bench-secret-0123456789abcdef0123456789 "${extra[@]}" \
            taskset -c 1 "$bin" >"$work/p$i.log" 2>&1 &
        health=/healthz
    fi
    pids+=($!)
    procs+=($!)
    ports+=($port)
    names+=("$(basename "$spec")")
    for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port$health" && break; sleep 0.2; done
    cookies+=("$(curl -si "http://127.0.0.1:$port/conversations" | tr -d '\r' |
        sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p')")
    i=$((i + 1))
done
n=${#procs[@]}

load() { # build index
    taskset -c 0 "$bench" sse --addr "127.0.0.1:${ports[$1]}" --header "Cookie: ${cookies[$1]:-x=y}" \
        --streams "${STREAMS:-100}" --events "${EVENTS:-400}" --interval-ms "${INTERVAL:-5}" \
        --answer-bytes "${ANSWER:-4096}" --ramp-ms "${RAMP:-100}" >"$work/sse.log" 2>&1
    grep -q " 0 errors" "$work/sse.log" || { echo "pair.sh: ${names[$1]}'s load had errors:" >&2; cat "$work/sse.log" >&2; }
}
cpu_ns() {
    local sum=0 t a
    for t in /proc/"${procs[$1]}"/task/*/schedstat; do read -r a _ <"$t" && sum=$((sum + a)); done
    echo $sum
}
ticks() { awk '{print $14, $15}' "/proc/${procs[$1]}/stat"; }

for j in $(seq 0 $((n - 1))); do load "$j"; done # warm-up
: >"$work/rounds"
for r in $(seq "$rounds"); do
    line="round $r"
    for k in $(seq 0 $((n - 1))); do
        j=$(((k + r) % n))
        read -r u0 s0 <<<"$(ticks "$j")"
        c0=$(cpu_ns "$j")
        load "$j"
        c1=$(cpu_ns "$j")
        read -r u1 s1 <<<"$(ticks "$j")"
        res[j]="$(((c1 - c0) / 1000000))/$((u1 - u0))u/$((s1 - s0))s"
    done
    for j in $(seq 0 $((n - 1))); do line+=" ${names[$j]}=${res[$j]}"; done
    echo "$line" | tee -a "$work/rounds"
done
awk '{
        for (i = 3; i <= NF; i++) {
            at = match($i, /=[^=]*$/); split(substr($i, at + 1), v, "/")
            if (i == 3) base = v[1]
            name[i] = substr($i, 1, at - 1); cpu[i] += v[1]; u[i] += v[2]; s[i] += v[3]; ratio[i, NR] = v[1] / base
        }
    }
    END {
        for (i = 3; i <= NF; i++) {
            for (r = 1; r <= NR; r++) list[r] = ratio[i, r]
            for (a = 1; a <= NR; a++) for (b = a + 1; b <= NR; b++) if (list[b] < list[a]) { t = list[a]; list[a] = list[b]; list[b] = t }
            med = (NR % 2) ? list[(NR + 1) / 2] : (list[NR / 2] + list[NR / 2 + 1]) / 2
            printf "%-40s CPU %6d ms (%.3fx)  user %4d  sys %4d ticks  median of the rounds%s ratios %.3fx\n", name[i], cpu[i], cpu[i] / cpu[3], u[i], s[i], "'"'"'", med
        }
    }' "$work/rounds"
