#!/usr/bin/env bash
# HTTP load benchmark of the WebApi sample (performance.md, "HTTP" targets; docs/benchmarks.md).
#
# Starts the sample (Release) on 127.0.0.1 and drives it with wrk (Debian package "wrk") in two suites.
#
# SUITE=digest (part of the default): in alternating rounds (A B C … A B C …), at CONNECTIONS (2) connections,
#   /digest            POST 16 KiB, body read into request buffers (the arena)
#   /digest/arraypool  the same on ArrayPool<byte>.Shared (returned with clearArray, like the arena clears)
#   /digest/new        the same on new byte[]
#   /noop              a no-op behind the request-arena middleware
#   /noop-bare         the same no-op answered just before the middleware
# one Markdown table of medians over the rounds: req/s, p99 latency, gen0 GCs during the run, working set after it.
#
# SUITE=paths (part of the default; issue 10, request memory paths): each group's four variants in
# alternating rounds, at each of CONNECTION_LEVELS (16 128) connections, with a small and a large payload:
#   /webhook, /webhook/memorystream, /webhook/arraypool, /webhook/recyclable
#       POST a signed JSON event of about 8 KiB and about 320 KiB (X-Signature: its HMAC-SHA256)
#   /export, /export/memorystream, /export/arraypool, /export/recyclable
#       GET ?rows=180 and ?rows=7300 (about 8 KiB and 320 KiB of CSV before gzip)
#   /aggregate, /aggregate/memorystream, /aggregate/arraypool, /aggregate/recyclable
#       only the routes that exist: a route answering 404 is skipped. Probed with GET$AGGREGATE_QUERY; a route
#       that answers 405 to GET is driven with the webhook bodies as POST.
# one table per group: req/s, p99, gen0 and gen2 GCs during the run, working set after it, non-2xx answers.
# The order of a group's variants rotates from one (round, connections, payload) block to the next, so
# that each variant runs first (after another payload or connection level: heap growth, pool warm-up)
# as often as the others; a last table sums each variant's gen2 GCs apart when it ran first and when not.
# The working set is the whole process's after the run (every variant runs in the one server, in turn).
#
# Bounded: ROUNDS × DURATION s per run; digest 5 runs a round, paths up to 3 groups × 4 variants × 2 sizes
# × 2 connection levels = 48 runs a round (defaults: 2 rounds of 5 s, about 9 minutes in all, plus start-up).
# QUICK=1: 1 round of 2 s (about 3 minutes with the warm-up, plus the build), to check the script works;
# its figures are not for quoting.
# Usage: benchmarks/load/run.sh [output.md]
#   env: SUITE (all | digest | paths), QUICK, ROUNDS, DURATION, THREADS, CONNECTIONS, CONNECTION_LEVELS,
#        AGGREGATE_QUERY, PORT, SAMPLE_ARGS (more arguments for the sample, e.g.
#        "--SwitchableAllocators:ReuseDelay=00:00:00" to measure without the quarantine)
set -euo pipefail

if [[ ${QUICK:-0} == 1 ]]; then
    ROUNDS=${ROUNDS:-1}
    DURATION=${DURATION:-2}
fi
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-5}
SUITE=${SUITE:-all}
CONNECTION_LEVELS=${CONNECTION_LEVELS:-"16 128"}
AGGREGATE_QUERY=${AGGREGATE_QUERY:-}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-2}
PORT=${PORT:-5087}
OUT=${1:-}
source "$(dirname "$0")/../lib/sample.sh"
require_tools wrk jq curl openssl
case $SUITE in all | digest | paths) ;; *) echo "SUITE must be all, digest or paths" >&2; exit 1 ;; esac

# Metrics off: this measures the buffers and the middleware, not the exporter.
# shellcheck disable=SC2086 # SAMPLE_ARGS is a list of arguments
start_sample "$PORT" --Sample:BareBranch=true --Sample:Metrics=false ${SAMPLE_ARGS:-}

if [[ $SUITE != paths ]]; then
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

python3 - "$WORK/results" "$ROUNDS" "$DURATION" "$THREADS" "$CONNECTIONS" >"$WORK/digest.md" <<'PY'
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
fi

if [[ $SUITE != digest ]]; then
# The webhook bodies: JSON events of about 8 KiB and 320 KiB, signed with the sample's key
# (WebhookPayload.SampleKey), and one wrk script each.
python3 - "$WORK" <<'PY'
import sys
work = sys.argv[1]
for name, size in (("small", 8 * 1024), ("large", 320 * 1024)):
    head, tail = '{"id":"evt_load","type":"order.created","items":[', "]}"
    items, length, i = [], len(head) + len(tail), 0
    while length < size:
        items.append('{"sku":"SKU-%05d","quantity":%d,"price":%d.%02d}' % (i, i % 5 + 1, i % 10, i % 100))
        length += len(items[-1]) + (1 if i else 0)
        i += 1
    open(f"{work}/webhook-{name}.json", "w").write(head + ",".join(items) + tail)
PY
for size in small large; do
    signature=$(openssl dgst -sha256 -hmac "allochosting-sample-webhook-key" -hex <"$WORK/webhook-$size.json" | awk '{print $NF}')
    cat >"$WORK/webhook-$size.lua" <<LUA
local f = io.open("$WORK/webhook-$size.json", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Signature"] = "$signature"
LUA
done

declare -A ROWS=([small]=180 [large]=7300)
GROUPS_RUN=()       # "group method path" lines of the routes that exist
probe() { # method path [curl args…] -> HTTP status
    curl -s -o /dev/null -w '%{http_code}' -X "$1" "${@:3}" "$BASE$2"
}
for path in /webhook /webhook/memorystream /webhook/arraypool /webhook/recyclable; do
    code=$(probe POST "$path" -H "X-Signature: $(awk -F'"' '/X-Signature/ {print $4}' "$WORK/webhook-small.lua")" \
        -H "Content-Type: application/json" --data-binary "@$WORK/webhook-small.json")
    if [[ $code == 200 ]]; then GROUPS_RUN+=("webhook POST $path"); else echo "skipped $path: it answered $code" >&2; fi
done
for path in /export /export/memorystream /export/arraypool /export/recyclable; do
    code=$(probe GET "$path?rows=180")
    if [[ $code == 200 ]]; then GROUPS_RUN+=("export GET $path"); else echo "skipped $path: it answered $code" >&2; fi
done
for path in /aggregate /aggregate/memorystream /aggregate/arraypool /aggregate/recyclable; do
    code=$(probe GET "$path$AGGREGATE_QUERY")
    if [[ $code == 405 ]]; then
        code=$(probe POST "$path$AGGREGATE_QUERY" -H "Content-Type: application/json" --data-binary "@$WORK/webhook-small.json")
        method=POST
    else
        method=GET
    fi
    if [[ $code == 200 ]]; then GROUPS_RUN+=("aggregate $method $path")
    elif [[ $code == 404 ]]; then echo "skipped $path: no such route" >&2
    else echo "skipped $path: it answered $code (set AGGREGATE_QUERY?)" >&2; fi
done

run_path() { # group method path size connections round position
    local group=$1 method=$2 path=$3 size=$4 connections=$5 round=$6 position=$7 script=() url
    url="$BASE$path"
    if [[ $method == POST ]]; then script=(-s "$WORK/webhook-$size.lua"); fi
    if [[ $group == export ]]; then url="$BASE$path?rows=${ROWS[$size]}"; fi
    if [[ $group == aggregate && $method == GET ]]; then url="$BASE$path$AGGREGATE_QUERY"; fi
    local before after
    before=$(curl -fs -m 10 "$BASE/stats")
    wrk -t"$THREADS" -c"$connections" -d"${DURATION}s" --timeout 10s --latency "${script[@]}" "$url" >"$WORK/wrk.out"
    after=$(curl -fs -m 10 "$BASE/stats")
    local rps p99 non2xx gen0 gen2 rss
    rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")
    p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/wrk.out")
    gen0=$(( $(jq .gen0Collections <<<"$after") - $(jq .gen0Collections <<<"$before") ))
    gen2=$(( $(jq .gen2Collections <<<"$after") - $(jq .gen2Collections <<<"$before") ))
    rss=$(jq .workingSetBytes <<<"$after")
    echo "$group $path $size $connections $round $rps $p99 $gen0 $gen2 $rss ${non2xx:-0} $position" >>"$WORK/paths"
}

# Warm-up (JIT, arena chunks, pools): each route once with each payload, not recorded.
for entry in "${GROUPS_RUN[@]}"; do
    read -r group method path <<<"$entry"
    for size in small large; do
        script=(); url="$BASE$path"
        if [[ $method == POST ]]; then script=(-s "$WORK/webhook-$size.lua"); fi
        if [[ $group == export ]]; then url="$BASE$path?rows=${ROWS[$size]}"; fi
        if [[ $group == aggregate && $method == GET ]]; then url="$BASE$path$AGGREGATE_QUERY"; fi
        wrk -t1 -c2 -d1s "${script[@]}" "$url" >/dev/null
    done
done

: >"$WORK/paths"
block=0
for round in $(seq 1 "$ROUNDS"); do
    for connections in $CONNECTION_LEVELS; do
        for size in small large; do
            for group_name in webhook export aggregate; do
                members=()
                for entry in "${GROUPS_RUN[@]}"; do
                    if [[ $entry == "$group_name "* ]]; then members+=("$entry"); fi
                done
                count=${#members[@]}
                for ((i = 0; i < count; i++)); do
                    read -r group method path <<<"${members[$(((i + block) % count))]}"
                    # A GET aggregate has no payload size: run it once per connection level.
                    if [[ $group == aggregate && $method == GET && $size == large ]]; then continue; fi
                    run_path "$group" "$method" "$path" "$size" "$connections" "$round" "$i"
                done
            done
            block=$((block + 1))
        done
    done
done

python3 - "$WORK/paths" "$ROUNDS" "$DURATION" "$THREADS" >"$WORK/paths.md" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
rounds, duration, threads = sys.argv[2:5]

def ms(text):
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)

what = {
    "webhook": "POST signed JSON events: small ≈ 8 KiB, large ≈ 320 KiB",
    "export": "GET gzipped CSV: small = 180 rows (≈ 8 KiB of CSV), large = 7 300 rows (≈ 320 KiB of CSV)",
    "aggregate": "the aggregator's routes",
}
print(f"wrk, {threads} thread(s), {duration} s per run, {rounds} alternating round(s), medians over the rounds. "
      "GCs are counted during the run; the working set is the process's after the run.")
for group in ("webhook", "export", "aggregate"):
    mine = [r for r in rows if r[0] == group]
    if not mine:
        continue
    print()
    print(f"#### `/{group}` ({what[group]})")
    print()
    print("| variant | payload | connections | req/s | p99 ms | gen0 GCs | gen2 GCs | working set MiB | non-2xx |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    keys = []
    for r in mine:
        key = (int(r[3]), r[2], r[1])
        if key not in keys:
            keys.append(key)
    order = {path: i for i, path in enumerate(dict.fromkeys(r[1] for r in mine))}
    keys.sort(key=lambda k: (k[0], k[1] != "small", order[k[2]]))
    for connections, size, path in keys:
        runs = [r for r in mine if (int(r[3]), r[2], r[1]) == (connections, size, path)]
        rps = statistics.median(float(r[5]) for r in runs)
        p99 = statistics.median(ms(r[6]) for r in runs)
        gen0 = statistics.median(int(r[7]) for r in runs)
        gen2 = statistics.median(int(r[8]) for r in runs)
        rss = statistics.median(int(r[9]) for r in runs) / (1024 * 1024)
        bad = sum(int(r[10]) for r in runs)
        print(f"| `{path}` | {size} | {connections} | {rps:,.0f} | {p99:.2f} | {gen0:.0f} | {gen2:.0f} | {rss:.0f} | {bad} |")

# Gen2 collections by position: a collection that follows the variant wherever it runs is its own; one
# that follows the first run of a block (whichever variant that is) comes from the change of payload or
# connections before it.
print()
print("#### Gen2 GCs by position in the block (sums over all runs)")
print()
print("| variant | runs first | gen2 when first | runs not first | gen2 when not first |")
print("|---|---:|---:|---:|---:|")
for path in dict.fromkeys(r[1] for r in rows):
    mine = [r for r in rows if r[1] == path]
    first = [r for r in mine if r[11] == "0"]
    later = [r for r in mine if r[11] != "0"]
    print(f"| `{path}` | {len(first)} | {sum(int(r[8]) for r in first)} | {len(later)} | {sum(int(r[8]) for r in later)} |")
PY
fi

: >"$WORK/table.md"
for part in digest paths; do
    if [[ -f "$WORK/$part.md" ]]; then
        if [[ -s "$WORK/table.md" ]]; then echo >>"$WORK/table.md"; fi
        cat "$WORK/$part.md" >>"$WORK/table.md"
    fi
done
cat "$WORK/table.md"
if [[ -n "$OUT" ]]; then cp "$WORK/table.md" "$OUT"; fi
