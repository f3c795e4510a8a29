#!/usr/bin/env bash
# Compare dify-bff builds by the work they do per request, per relayed event and per open
# stream, which is far steadier than throughput on a shared VM (this one has no hardware
# performance counters, so instructions come from valgrind's callgrind):
#   bench/ab.sh bench/target/release/dify-bff.before bench/target/release/dify-bff
# A binary whose name starts with `floor` is run as the stack floor (floor-proxy's arguments).
# For each binary: the fast upstream on CPU 0; dify-bff on CPU 1 under callgrind for a fixed
# JSON load (oha -n) and a fixed SSE load, user-space instructions counted per request / event
# after a warm-up; then dify-bff natively for its CPU time over the same loads and the RSS that
# AB_HOLD_STREAMS open streams add, and the instructions of a stream's set-up (streams of one
# event; AB_KEEP=DIR keeps the callgrind files for callgrind_annotate). Needs valgrind and a built harness; the JSON load comes from
# `oha -n` when installed, else from the harness's own client (`dify-bench json --requests`).
# dify-bff runs with its default log level (INFO: the access log on, written to a file), as
# deployed; AB_RUST_LOG=warn measures without the access log. AB_NATIVE=0 skips the native
# part (CPU time and RSS), for a quick instruction count. The held streams get AB_HOLD_EVENTS
# events (default 25) AB_HOLD_INTERVAL_MS apart (default 1000), opened over 10 s; RSS is read
# 20 s in, or, with AB_HOLD_EVENTS set, when the last stream opened has had all but 5 of them
# (AB_HOLD_EVENTS=90: ~85 events kept per stream, as in scenario (c)). AB_HOLD_ONLY=1 measures
# only that RSS, against a fresh process after a 200-stream warm-up (as (c) does): no callgrind,
# no JSON or SSE load before the hold.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bench="$here/target/release/dify-bench"
key=app-BENCHKEY00000000000000000
requests=${AB_REQUESTS:-3000}
streams=${AB_STREAMS:-100}
events=${AB_EVENTS:-20}
native_requests=${AB_NATIVE_REQUESTS:-30000}
hold_streams=${AB_HOLD_STREAMS:-3000}
native=${AB_NATIVE:-1}
hold_only=${AB_HOLD_ONLY:-0}
setup_streams=${AB_SETUP_STREAMS:-300}
# The set-up streams start over AB_SETUP_RAMP_MS (default 6 s): over 1 s, one binary's run could
# open dozens of new upstream connections and the next none, and that, not the set-up, decided
# the difference.
setup_ramp=${AB_SETUP_RAMP_MS:-6000}
hold_events=${AB_HOLD_EVENTS:-25}
hold_interval=${AB_HOLD_INTERVAL_MS:-1000}
hold_sample=20
if [[ -n "${AB_HOLD_EVENTS:-}" ]]; then hold_sample=$(((10000 + (hold_events - 5) * hold_interval) / 1000)); fi
log_env=()
if [[ -n "${AB_RUST_LOG:-}" ]]; then log_env=(RUST_LOG="$AB_RUST_LOG"); fi
# FLOOR_* settings (floor-proxy's runtime and hyper options), AB_FLOOR_ENV="NAME=value ..." (e.g.
# LD_PRELOAD=…libjemalloc.so.2 to measure an allocator) and AB_BFF_ENV="NAME=value ..." (dify-bff
# settings) reach the processes under test; nothing else of this shell's environment does.
mapfile -t floor_env < <(env | grep '^FLOOR_' || true)
read -r -a floor_extra <<<"${AB_FLOOR_ENV:-}"
floor_env+=("${floor_extra[@]}")
read -r -a bff_env <<<"${AB_BFF_ENV:-}"
# AB_CG_OPTS="..." adds callgrind options: "--cache-sim=yes --D1=32768,8,64 --LL=1048576,16,64"
# simulates this machine's L1 and L2 and prints each binary's data-cache misses per event.
read -r -a cg_opts <<<"${AB_CG_OPTS:-}"
ulimit -n "$(ulimit -Hn)"
work="$(mktemp -d)"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

start() { # binary, runner... ; sets up, bff, port, cookie
    local bin=$1; shift
    port=$((20000 + RANDOM % 20000))
    taskset -c 0 "$bench" upstream --listen 127.0.0.1:$((port + 1)) --key $key >"$work/up.log" 2>&1 &
    up=$!
    if [[ "$(basename "$bin")" == floor* ]]; then
        # The stack floor (bench/src/bin/floor_proxy.rs): same routes, none of dify-bff's own work.
        env -i PATH="$PATH" HOST=127.0.0.1 "${floor_env[@]}" taskset -c 1 "$@" "$bin" 127.0.0.1:$port http://127.0.0.1:$((port + 1))/v1 $key \
            >"$work/bff.log" 2>&1 &
        health=/conversations
    else
        env -i PATH="$PATH" DIFY_BASE_URL=http://127.0.0.1:$((port + 1))/v1 DIFY_API_KEY=$key HOST=127.0.0.1 \
            PORT=$port RATE_LIMIT_PER_MINUTE=0 MAX_STREAMS_PER_IDENTITY=100000 MAX_CONCURRENT_STREAMS=10000 \
            MAX_CONNECTIONS_PER_PEER=0 "${log_env[@]}" "${bff_env[@]}" \
            SESSION_SECRET=bench-secret-0123456789abcdef0123456789 \
            taskset -c 1 "$@" "$bin" >"$work/bff.log" 2>&1 &
        health=/healthz
    fi
    bff=$!
    pids+=("$up" "$bff")
    for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:$port$health && break; sleep 0.2; done
    cookie=$(curl -si http://127.0.0.1:$port/conversations | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p')
}
stop() { kill "$bff" "$up" 2>/dev/null || true; wait "$bff" "$up" 2>/dev/null || true; }
if command -v oha >/dev/null 2>&1; then
    json() { taskset -c 0 oha -n "$1" -c "$2" --no-tui -H "Cookie: $cookie" "http://127.0.0.1:$port/conversations" >/dev/null; }
else
    echo "ab.sh: oha not found; JSON load from dify-bench json --requests" >&2
    json() { taskset -c 0 "$bench" json --addr 127.0.0.1:$port --requests "$1" --connections "$2" --header "Cookie: $cookie" | grep -q " 0 errors"; }
fi
sse() { taskset -c 0 "$bench" sse --addr 127.0.0.1:$port --header "Cookie: $cookie" --streams "$1" --events "$2" --interval-ms "$3" --ramp-ms "$4" --answer-bytes "${AB_ANSWER_BYTES:-16}"; }
# vgdb finds valgrind's pipes by user and host name, which valgrind took from dify-bff's
# cleared environment (no USER, HOST=127.0.0.1): ask with the same.
cgc() { env -u USER -u LOGNAME HOST=127.0.0.1 callgrind_control "$@" >/dev/null; }
ir() { awk '/^(summary|totals):/{print $2; exit}' "$1"; }
cpu_ms() { awk '{print ($14+$15)*10}' "/proc/$bff/stat"; }

# Holds $hold_streams streams open on the running binary; sets before and held (VmRSS, KiB).
hold() {
    before=$(awk '/VmRSS/{print $2}' /proc/$bff/status)
    sse "$hold_streams" "$hold_events" "$hold_interval" 10000 >"$work/hold.log" &
    local holder=$!
    sleep "$hold_sample"
    held=$(awk '/VmRSS/{print $2}' /proc/$bff/status)
    wait $holder
    grep -q " 0 errors" "$work/hold.log" || { echo "hold run had errors:" >&2; cat "$work/hold.log" >&2; }
}

echo "| binary | instr/request (user, callgrind) | instr/event (user, callgrind) | instr/stream set-up (user, callgrind) | CPU µs/request | CPU µs/event | RSS KiB/stream ($hold_streams held) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for bin in "$@"; do
    if [[ "$hold_only" == 1 ]]; then
        start "$bin"
        sse 200 5 200 1000 >/dev/null
        hold
        stop
        awk -v b="$(basename "$bin")" -v before="$before" -v held="$held" -v n="$hold_streams" \
            'BEGIN { printf "| %s | – | – | – | – | – | %.2f |\n", b, (held-before)/n }'
        continue
    fi
    start "$bin" valgrind --tool=callgrind "${cg_opts[@]}" --callgrind-out-file="$work/cg.%p"
    json 500 16; sse 20 5 50 200 >/dev/null
    cgc -z "$bff"
    json "$requests" 16
    cgc -d "$bff"; cgc -z "$bff"
    sse "$streams" "$events" 50 1000 >/dev/null
    cgc -d "$bff"; cgc -z "$bff"
    # Stream set-up: streams of a single event (the set-up, one event and message_end each).
    sse "$setup_streams" 1 50 "$setup_ramp" >/dev/null
    cgc -d "$bff"
    stop
    json_ir=$(ir "$(ls "$work"/cg.*.1 | head -1)"); sse_ir=$(ir "$(ls "$work"/cg.*.2 | head -1)")
    setup_ir=$(ir "$(ls "$work"/cg.*.3 | head -1)")
    if grep -q '^events:.*D1mr' "$(ls "$work"/cg.*.2 | head -1)"; then
        awk -v b="$(basename "$bin")" -v n="$((streams * (events + 1)))" '/^events:/ { for (i = 2; i <= NF; i++) name[i] = $i }
            /^(summary|totals):/ { for (i = 2; i <= NF; i++) printf "%s%s %.1f", (i > 2 ? ", " : b ": per event "), name[i], $i / n; print ""; exit }' \
            "$(ls "$work"/cg.*.2 | head -1)" >&2
    fi
    if [[ -n "${AB_KEEP:-}" ]]; then mkdir -p "$AB_KEEP/$(basename "$bin")"; cp "$work"/cg.* "$AB_KEEP/$(basename "$bin")/"; fi
    rm -f "$work"/cg.*
    if [[ "$native" == 0 ]]; then
        printf '| %s | %.0f | %.0f | %.0f | – | – | – |\n' "$(basename "$bin")" \
            "$(echo "$json_ir / $requests" | bc -l)" "$(echo "$sse_ir / ($streams * ($events + 1))" | bc -l)" \
            "$(echo "$setup_ir / $setup_streams" | bc -l)"
        continue
    fi

    start "$bin"
    json 5000 64; sse 200 5 200 1000 >/dev/null
    t0=$(cpu_ms); json "$native_requests" 64; t1=$(cpu_ms)
    sse 1000 "$events" 200 2000 >/dev/null; t2=$(cpu_ms)
    hold
    stop
    awk -v b="$(basename "$bin")" -v r="$requests" -v s="$((streams * (events + 1)))" -v ji="$json_ir" -v si="$sse_ir" -v ui="$setup_ir" -v us="$setup_streams" \
        -v nr="$native_requests" -v ne="$((1000 * (events + 1)))" -v jt="$((t1 - t0))" -v st="$((t2 - t1))" \
        -v before="$before" -v held="$held" -v n="$hold_streams" 'BEGIN {
        printf "| %s | %.0f | %.0f | %.0f | %.1f | %.1f | %.1f |\n", b, ji/r, si/s, ui/us, jt*1000/nr, st*1000/ne, (held-before)/n }'
done
