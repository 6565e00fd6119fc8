#!/usr/bin/env bash
# HTTP load benchmark of the WebApi sample (performance.md, "HTTP" targets).
#
# Starts the sample (Release) on 127.0.0.1, then drives, in alternating rounds (A B C … A B C …),
#   /digest            POST 16 KiB, body read into request buffers (the arena)
#   /digest/arraypool  the same on ArrayPool<byte>.Shared (returned with clearArray, like the arena clears)
#   /digest/new        the same on new byte[]
#   /noop              a no-op behind the request-arena middleware
#   /noop-bare         the same no-op answered just before the middleware
# with wrk (Debian package "wrk"), and prints one Markdown table of medians over the rounds:
# req/s, p99 latency, gen0 GCs during the run and the working set after it.
#
# Bounded: ROUNDS × 5 variants × DURATION seconds (default 2 × 5 × 5 s = 50 s) plus start-up.
# Usage: benchmarks/load/run.sh [output.md]    (env: ROUNDS, DURATION, THREADS, CONNECTIONS, PORT)
set -euo pipefail

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-5}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-2}
PORT=${PORT:-5087}
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

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq is missing: apt-get install -y jq" >&2; exit 1; }

dotnet build -c Release "$ROOT/samples/WebApi" -v quiet -nologo >/dev/null
DLL="$ROOT/samples/WebApi/bin/Release/net10.0/AllocHosting.Samples.WebApi.dll"

# Metrics off: this measures the buffers and the middleware, not the exporter.
ASPNETCORE_ENVIRONMENT=Production dotnet "$DLL" --urls "$BASE" \
    --Sample:BareBranch=true --Sample:Metrics=false --Logging:LogLevel:Default=Warning \
    >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -fs "$BASE/stats" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$BASE/stats" >/dev/null || { echo "the sample did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }

# A 16 KiB body for the POST variants.
head -c 16384 /dev/zero | tr '\0' 'a' >"$WORK/body"
cat >"$WORK/post.lua" <<LUA
local f = io.open("$WORK/body", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
LUA

VARIANTS=("/digest" "/digest/arraypool" "/digest/new" "/noop" "/noop-bare")

run_variant() { # path round
    local path=$1 round=$2 script=() gen0_before gen0_after rss
    [[ $path == /digest* ]] && script=(-s "$WORK/post.lua")
    gen0_before=$(curl -fs "$BASE/stats" | jq .gen0Collections)
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${script[@]}" "$BASE$path" >"$WORK/wrk.out"
    gen0_after=$(curl -fs "$BASE/stats" | jq .gen0Collections)
    rss=$(curl -fs "$BASE/stats" | jq .workingSetBytes)
    local rps p99
    rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")
    p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.out")
    echo "$path $round $rps $p99 $((gen0_after - gen0_before - 0)) $rss" >>"$WORK/results"
}

# Warm-up (JIT, arena chunks, pools), not recorded.
for path in "${VARIANTS[@]}"; do
    script=(); [[ $path == /digest* ]] && script=(-s "$WORK/post.lua")
    wrk -t1 -c2 -d1s "${script[@]}" "$BASE$path" >/dev/null
done

for round in $(seq 1 "$ROUNDS"); do
    for path in "${VARIANTS[@]}"; do run_variant "$path" "$round"; done
done

python3 - "$WORK/results" "$ROUNDS" "$DURATION" "$THREADS" "$CONNECTIONS" >"$WORK/table.md" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
rounds, duration, threads, connections = sys.argv[2:6]

def ms(text):
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    for unit in ("us", "ms", "s"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)

order = ["/digest", "/digest/arraypool", "/digest/new", "/noop", "/noop-bare"]
label = {
    "/digest": "`/digest` (request arena)",
    "/digest/arraypool": "`/digest/arraypool` (ArrayPool, cleared)",
    "/digest/new": "`/digest/new` (new byte[])",
    "/noop": "`/noop` (middleware)",
    "/noop-bare": "`/noop-bare` (no middleware)",
}
median = {}
for path in order:
    runs = [r for r in rows if r[0] == path]
    median[path] = (
        statistics.median(float(r[2]) for r in runs),
        statistics.median(ms(r[3]) for r in runs),
        statistics.median(int(r[4]) for r in runs),
        statistics.median(int(r[5]) for r in runs) / (1024 * 1024),
    )

print(f"wrk, {threads} thread(s), {connections} connections, {duration} s per run, {rounds} alternating rounds, medians; 16 KiB POST bodies.")
print()
print("| variant | req/s | p99 ms | gen0 GCs per run | working set MiB |")
print("|---|---:|---:|---:|---:|")
for path in order:
    rps, p99, gen0, rss = median[path]
    print(f"| {label[path]} | {rps:,.0f} | {p99:.2f} | {gen0:.0f} | {rss:.0f} |")
print()
arena, pool, new, noop, bare = (median[p][0] for p in order)
print(f"Ratios: arena / ArrayPool = {arena / pool:.2f} (target ≥ 1.00); arena / new byte[] = {arena / new:.2f} (target ≥ 1.10); "
      f"middleware / bare no-op = {noop / bare:.2f} (target ≥ 0.97).")
PY

cat "$WORK/table.md"
if [[ -n "$OUT" ]]; then cp "$WORK/table.md" "$OUT"; fi
