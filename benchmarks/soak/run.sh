#!/usr/bin/env bash
# Memory soak of the WebApi sample: does the process stay flat under a long mixed load, and give back
# what the load took?
#
# Starts the sample (Release) on 127.0.0.1 with a short idle-trim interval, then for SOAK_SECONDS
# drives every kind of endpoint at once with wrk (Debian package "wrk"), CONNECTIONS in all:
#   POST /digest          bodies of 16 KiB and of 1 MiB (read whole into request memory; 1 MiB is the
#                         per-request maximum, so these take large chunks and go past it)
#   POST /webhook         a JSON event of about 320 KiB (ReadBodyAsync, HMAC, JSON)
#   POST /transform       a small JSON document (ReadBodyAsync, a writer)
#   GET  /export          7 300 gzipped CSV rows (a request-memory stream)
#   GET  /aggregate       an upstream call over loopback HttpClient (ReadContentAsync)
#   GET  /render?kb=4096  a 4 MiB response built in a request-memory writer (beyond the per-request
#                         maximum: the overflow policy's further chunks)
#   GET  /noop            nothing (the middleware alone)
# It samples every SAMPLE_SECONDS the resident memory (VmRSS), the GC's committed bytes, the arena
# memory the process maps (allochosting.mapped), the arenas' live bytes and active arenas, and prints
# the samples, a summary (before, end of load, after IDLE_SECONDS idle) and one verdict line:
#   RSS flat: the largest RSS after the warm-up (the first quarter of the run) is within 10 % of the RSS at
#   the end of the warm-up; released: live bytes and active arenas are 0 after the idle period.
#
# Bounded: SOAK_SECONDS (default 600) + IDLE_SECONDS (default 15) + start-up and build.
# Usage: benchmarks/soak/run.sh [output.md]
#   env: SOAK_SECONDS, IDLE_SECONDS, SAMPLE_SECONDS (10), CONNECTIONS (32), PORT
set -euo pipefail

SOAK_SECONDS=${SOAK_SECONDS:-600}
IDLE_SECONDS=${IDLE_SECONDS:-15}
SAMPLE_SECONDS=${SAMPLE_SECONDS:-10}
CONNECTIONS=${CONNECTIONS:-32}
PORT=${PORT:-5089}
OUT=${1:-}
source "$(dirname "$0")/../lib/sample.sh"
require_tools wrk jq curl python3

# Metrics on (the soak reads the arena figures from /metrics); idle chunks trimmed every 5 s.
start_sample "$PORT" --SwitchableAllocators:IdleTrimInterval=00:00:05

python3 - "$WORK" <<'PY'
import sys
work = sys.argv[1]
open(f"{work}/small.bin", "wb").write(b"a" * 16 * 1024)
open(f"{work}/large.bin", "wb").write(b"b" * 1024 * 1024)
head, tail = '{"id":"evt_soak","type":"order.created","items":[', "]}"
items, length, i = [], len(head) + len(tail), 0
while length < 320 * 1024:
    items.append('{"sku":"SKU-%05d","quantity":%d,"price":%d.%02d}' % (i, i % 5 + 1, i % 10, i % 100))
    length += len(items[-1]) + (1 if i else 0)
    i += 1
open(f"{work}/webhook.json", "w").write(head + ",".join(items) + tail)
open(f"{work}/transform.json", "w").write('{"name":"soak","values":[' + ",".join(str(i) for i in range(200)) + ']}')
PY
for name in small large webhook transform; do
    file="$WORK/$name.bin"; [[ $name == webhook || $name == transform ]] && file="$WORK/$name.json"
    cat >"$WORK/$name.lua" <<LUA
local f = io.open("$file", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
done

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status"; }
metric() { # name [label filter]: the sum of a Prometheus metric's samples (0 when absent)
    curl -fs "$BASE/metrics" | awk -v name="$1" -v filter="${2:-}" \
        'index($1, name) == 1 && $1 !~ /^#/ && index($1, filter) > 0 {sum += $2} END {printf "%d", sum}'
}
figures() { # -> "rss_mib gc_mib mapped_mib live_kib active gen0 gen2"
    local stats
    stats=$(curl -fs "$BASE/stats")
    echo "$(( $(rss_kib) / 1024 )) $(( $(jq '.gcCommittedBytes // 0' <<<"$stats") / 1024 / 1024 )) \
$(( $(metric allochosting_mapped_bytes) / 1024 / 1024 )) $(( $(metric allochosting_live_bytes 'allocator="request"') / 1024 )) \
$(metric allochosting_request_arena_active) $(jq .gen0Collections <<<"$stats") $(jq '.gen2Collections // 0' <<<"$stats")"
}
row() { # phase figures…
    local phase=$1; shift
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$phase" "$@"
}

# One request of each kind, so that JIT and first-use costs are in the starting figure.
curl -fs -o /dev/null --data-binary "@$WORK/small.bin" "$BASE/digest"
curl -fs -o /dev/null --data-binary "@$WORK/large.bin" "$BASE/digest"
curl -fs -o /dev/null -H 'Content-Type: application/json' --data-binary "@$WORK/webhook.json" "$BASE/webhook"
curl -fs -o /dev/null -H 'Content-Type: application/json' --data-binary "@$WORK/transform.json" "$BASE/transform"
curl -fs -o /dev/null "$BASE/export?rows=7300"
curl -fs -o /dev/null "$BASE/aggregate"
curl -fs -o /dev/null "$BASE/render?kb=4096"
sleep 1
read -r -a before <<<"$(figures)"
row "before the load" "${before[@]}" >"$WORK/summary"

# CONNECTIONS shared out: 8 loads, at least one connection each.
per=$(( CONNECTIONS / 8 > 0 ? CONNECTIONS / 8 : 1 ))
LOADS=()
run() { wrk -t1 -c"$1" -d"${SOAK_SECONDS}s" --timeout 10s "${@:3}" >"$WORK/$2.out" 2>&1 & LOADS+=($!); }
run "$per" small -s "$WORK/small.lua" "$BASE/digest"
run "$per" large -s "$WORK/large.lua" "$BASE/digest"
run "$per" webhook -s "$WORK/webhook.lua" "$BASE/webhook"
run "$per" transform -s "$WORK/transform.lua" "$BASE/transform"
run "$per" export "$BASE/export?rows=7300"
run "$per" aggregate "$BASE/aggregate"
run "$per" render "$BASE/render?kb=4096"
run "$per" noop "$BASE/noop"

elapsed=0; warm_rss=0; peak_after_warmup=0
while (( elapsed < SOAK_SECONDS )); do
    sleep "$SAMPLE_SECONDS"; elapsed=$(( elapsed + SAMPLE_SECONDS ))
    read -r -a now <<<"$(figures)"
    row "${elapsed} s" "${now[@]}" >>"$WORK/samples"
    if (( elapsed * 4 <= SOAK_SECONDS )); then warm_rss=${now[0]}
    elif (( now[0] > peak_after_warmup )); then peak_after_warmup=${now[0]}; fi
done
wait "${LOADS[@]}" 2>/dev/null || true
read -r -a end <<<"$(figures)"
row "end of the load" "${end[@]}" >>"$WORK/summary"
sleep "$IDLE_SECONDS"
read -r -a idle <<<"$(figures)"
row "after ${IDLE_SECONDS} s idle" "${idle[@]}" >>"$WORK/summary"

(( warm_rss == 0 )) && warm_rss=${before[0]}
flat=no; (( peak_after_warmup * 100 <= warm_rss * 110 )) && flat=yes
released=no; (( idle[3] == 0 && idle[4] == 0 )) && released=yes

header='| phase | RSS MiB | GC committed MiB | arena mapped MiB | request live KiB | active arenas | gen0 GCs so far | gen2 GCs so far |
|---|---:|---:|---:|---:|---:|---:|---:|'
{
    echo "Mixed soak: ${SOAK_SECONDS} s, ${per} connection(s) per load × 8 loads, samples every ${SAMPLE_SECONDS} s, then ${IDLE_SECONDS} s idle; idle trim every 5 s."
    echo
    echo "$header"
    cat "$WORK/summary"
    echo
    echo "<details><summary>Samples during the load</summary>"
    echo
    echo "$header"
    cat "$WORK/samples"
    echo
    echo "</details>"
    echo
    echo "| load | requests | non-2xx | socket errors | req/s |"
    echo "|---|---:|---:|---:|---:|"
    for name in small large webhook transform export aggregate render noop; do
        requests=$(awk '/requests in/ {print $1}' "$WORK/$name.out")
        errors=$(awk '/Non-2xx/ {print $NF}' "$WORK/$name.out")
        sockets=$(awk -F'[ ,]+' '/Socket errors/ {print $4 + $6 + $8 + $10}' "$WORK/$name.out")
        rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$name.out")
        echo "| $name | ${requests:-0} | ${errors:-0} | ${sockets:-0} | ${rps:-0} |"
    done
    echo
    echo "Verdict: RSS flat after warm-up: $flat (RSS ${warm_rss} MiB at the end of the warm-up, at most ${peak_after_warmup} MiB after it; limit +10 %); released after idle: $released (request live ${idle[3]} KiB, active arenas ${idle[4]})."
} >"$WORK/report.md"
cat "$WORK/report.md"
[[ -n "$OUT" ]] && cp "$WORK/report.md" "$OUT"
exit 0
