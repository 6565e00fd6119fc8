#!/usr/bin/env bash
# Memory soak of the WebApi sample: does the process give back what a mixed load took?
#
# Starts the sample (Release) on 127.0.0.1 with a short idle-trim interval, then for SOAK_SECONDS
# drives, all at once, with wrk (Debian package "wrk"):
#   POST /digest        bodies of 16 KiB and of 1 MiB (read whole into request memory; 1 MiB is the
#                       per-request maximum, so these take large chunks and go past it)
#   POST /webhook       a JSON event of about 320 KiB (ReadBodyAsync, HMAC, JSON)
#   GET  /export        7 300 gzipped CSV rows (a request-memory stream)
#   GET  /render?kb=4096  a 4 MiB response built in a request-memory writer (beyond the per-request
#                       maximum: the overflow policy's further chunks)
# and prints one Markdown table of the process's resident memory (VmRSS), the arena memory the process
# maps (allochosting.mapped), the arenas' live bytes, the GC heap's committed bytes and the GCs: before the load, at its end, and after
# IDLE_SECONDS of idling (long enough for the trimmer to give idle chunks back).
#
# Bounded: SOAK_SECONDS (default 120) + IDLE_SECONDS (default 15) + start-up and build.
# Usage: benchmarks/soak/run.sh [output.md]   (env: SOAK_SECONDS, IDLE_SECONDS, CONNECTIONS, PORT)
set -euo pipefail

SOAK_SECONDS=${SOAK_SECONDS:-120}
IDLE_SECONDS=${IDLE_SECONDS:-15}
CONNECTIONS=${CONNECTIONS:-8}
PORT=${PORT:-5089}
OUT=${1:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BASE="http://127.0.0.1:$PORT"
WORK=$(mktemp -d)
SERVER_PID=""

cleanup() {
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in wrk jq curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y $tool" >&2; exit 1; }
done

dotnet build -c Release "$ROOT/samples/WebApi" -v quiet -nologo >/dev/null
DLL="$ROOT/samples/WebApi/bin/Release/net10.0/AllocHosting.Samples.WebApi.dll"

# Metrics on (the soak reads the arena figures from /metrics); idle chunks trimmed every 5 s.
ASPNETCORE_ENVIRONMENT=Production dotnet "$DLL" --urls "$BASE" \
    --SwitchableAllocators:IdleTrimInterval=00:00:05 --Logging:LogLevel:Default=Warning \
    >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do curl -fs "$BASE/stats" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$BASE/stats" >/dev/null || { echo "the sample did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }

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
PY
for name in small large webhook; do
    file="$WORK/$name.bin"; [[ $name == webhook ]] && file="$WORK/webhook.json"
    cat >"$WORK/$name.lua" <<LUA
local f = io.open("$file", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
done

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status"; }
metric() { # name: the sum of a Prometheus metric's samples (0 when absent)
    curl -fs "$BASE/metrics" | awk -v name="$1" 'index($1, name) == 1 && $1 !~ /^#/ {sum += $2} END {printf "%d", sum}'
}
snapshot() { # phase
    local stats
    stats=$(curl -fs "$BASE/stats")
    printf '| %s | %d | %d | %d | %d | %d | %d |\n' "$1" "$(( $(rss_kib) / 1024 ))" "$(( $(jq '.gcCommittedBytes // 0' <<<"$stats") / 1024 / 1024 ))" \
        "$(( $(metric allochosting_mapped_bytes) / 1024 / 1024 ))" \
        "$(( $(curl -fs "$BASE/metrics" | awk '/^allochosting_live_bytes.*allocator="request"/ {print $2}' | head -1 | cut -d. -f1) / 1024 ))" \
        "$(jq .gen0Collections <<<"$stats")" "$(jq '.gen2Collections // 0' <<<"$stats")" >>"$WORK/table"
}

# One request of each kind, so that JIT and first-use costs are in the starting figure.
curl -fs -o /dev/null --data-binary "@$WORK/small.bin" "$BASE/digest"
curl -fs -o /dev/null --data-binary "@$WORK/large.bin" "$BASE/digest"
curl -fs -o /dev/null -H 'Content-Type: application/json' --data-binary "@$WORK/webhook.json" "$BASE/webhook"
curl -fs -o /dev/null "$BASE/export?rows=7300"
curl -fs -o /dev/null "$BASE/render?kb=4096"
sleep 1
snapshot "before the load"

per=$(( CONNECTIONS / 4 > 0 ? CONNECTIONS / 4 : 1 ))
wrk -t1 -c"$per" -d"${SOAK_SECONDS}s" -s "$WORK/small.lua" "$BASE/digest" >"$WORK/small.out" &
wrk -t1 -c"$per" -d"${SOAK_SECONDS}s" -s "$WORK/large.lua" "$BASE/digest" >"$WORK/large.out" &
wrk -t1 -c"$per" -d"${SOAK_SECONDS}s" -s "$WORK/webhook.lua" "$BASE/webhook" >"$WORK/webhook.out" &
wrk -t1 -c"$per" -d"${SOAK_SECONDS}s" "$BASE/export?rows=7300" >"$WORK/export.out" &
wrk -t1 -c1 -d"${SOAK_SECONDS}s" "$BASE/render?kb=4096" >"$WORK/render.out" &
peak=0
for _ in $(seq 1 "$SOAK_SECONDS"); do
    sleep 1
    now=$(rss_kib); (( now > peak )) && peak=$now
done
wait $(jobs -p | grep -v "^$SERVER_PID$") 2>/dev/null || true
snapshot "end of the load"
sleep "$IDLE_SECONDS"
snapshot "after ${IDLE_SECONDS} s idle"

{
    echo "Mixed soak: ${SOAK_SECONDS} s at ${per} connections per load (1 for /render), then ${IDLE_SECONDS} s idle; idle trim every 5 s."
    echo
    echo "| phase | RSS MiB | GC committed MiB | arena mapped MiB | request live KiB | gen0 GCs so far | gen2 GCs so far |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    cat "$WORK/table"
    echo
    echo "Peak RSS during the load: $(( peak / 1024 )) MiB."
    echo
    echo "| load | requests | non-2xx | req/s |"
    echo "|---|---:|---:|---:|"
    for name in small large webhook export render; do
        requests=$(awk '/requests in/ {print $1}' "$WORK/$name.out")
        errors=$(awk '/Non-2xx/ {print $NF}' "$WORK/$name.out"); errors=${errors:-0}
        rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$name.out")
        echo "| $name | ${requests:-0} | $errors | ${rps:-0} |"
    done
} >"$WORK/report.md"
cat "$WORK/report.md"
[[ -n "$OUT" ]] && cp "$WORK/report.md" "$OUT"
exit 0
