#!/usr/bin/env bash
# The adaptive first chunk, before and after (issue 11): the sample with SwitchableAllocators:AdaptiveFirstChunk
# off and on, each driven by wrk on one route for DURATION seconds, then overflows per request, mean bytes used
# per request and the arena's mapped bytes read from /metrics. Bounded: 2 × ROUTES × DURATION s plus start-up.
# Usage: benchmarks/load/adaptive.sh        env: DURATION (10), CONNECTIONS (16), PORT (5078),
#        ROUTES (space-separated paths; default "/export?rows=7300 /export?rows=180")
set -euo pipefail
source "$(dirname "$0")/../lib/sample.sh"
require_tools wrk curl
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
PORT=${PORT:-5078}
ROUTES=${ROUTES:-"/export?rows=7300 /export?rows=180"}

metric() { # file name route → the series' value summed over its other tags (0 when absent)
    { grep -E "^$2\{.*http_route=\"$3\"" "$1" || true; } | awk '{ s += $NF } END { printf "%.0f", s + 0 }'
}

echo "| route | adaptive | req/s | overflows per request | mean bytes used per request | arena mapped MiB after |"
echo "|---|---|---:|---:|---:|---:|"
for route in $ROUTES; do
    for adaptive in false true; do
        start_sample "$PORT" --SwitchableAllocators:AdaptiveFirstChunk="$adaptive"
        # Warm-up (the adaptive statistics need a few dozen requests), not counted below.
        wrk -t1 -c"$CONNECTIONS" -d2s "$BASE$route" >/dev/null
        curl -fs "$BASE/metrics" >"$WORK/before"
        rps=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "$BASE$route" | awk '/Requests\/sec/ { printf "%.0f", $2 }')
        sleep 1
        curl -fs "$BASE/metrics" >"$WORK/metrics"
        path=${route%%\?*}
        overflows=$(( $(metric "$WORK/metrics" allochosting_request_arena_overflowed_total "$path") - $(metric "$WORK/before" allochosting_request_arena_overflowed_total "$path") ))
        requests=$(( $(metric "$WORK/metrics" allochosting_request_arena_used_bytes_count "$path") - $(metric "$WORK/before" allochosting_request_arena_used_bytes_count "$path") ))
        used=$(( $(metric "$WORK/metrics" allochosting_request_arena_used_bytes_sum "$path") - $(metric "$WORK/before" allochosting_request_arena_used_bytes_sum "$path") ))
        mapped=$(grep -E '^allochosting_mapped_bytes\{' "$WORK/metrics" | awk '{ s += $NF } END { printf "%.0f", s / 1048576 }')
        awk -v r="$route" -v a="$adaptive" -v rps="$rps" -v o="$overflows" -v n="$requests" -v s="$used" -v m="$mapped" \
            'BEGIN { printf "| `%s` | %s | %s | %.2f | %.0f | %s |\n", r, a, rps, (n ? o / n : 0), (n ? s / n : 0), m }'
        kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
    done
done
