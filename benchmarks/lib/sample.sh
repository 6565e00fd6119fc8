# Sourced by benchmarks/load/run.sh and benchmarks/soak/run.sh: what both need to run the WebApi sample.
#   require_tools TOOL…             exits with an install hint when one is missing
#   start_sample PORT ARG…          builds the sample (Release), starts it on 127.0.0.1:PORT with ARG…, waits
#                                   until /stats answers; sets BASE, WORK (a temporary folder), SERVER_PID
# The server is stopped and WORK removed when the sourcing script exits.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d)
SERVER_PID=""

cleanup() {
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y $tool" >&2; exit 1; }
    done
}

start_sample() { # port arg…
    BASE="http://127.0.0.1:$1"
    dotnet build -c Release "$ROOT/samples/WebApi" -v quiet -nologo >/dev/null
    ASPNETCORE_ENVIRONMENT=Production dotnet "$ROOT/samples/WebApi/bin/Release/net10.0/AllocHosting.Samples.WebApi.dll" \
        --urls "$BASE" --Logging:LogLevel:Default=Warning "${@:2}" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do curl -fs "$BASE/stats" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -fs "$BASE/stats" >/dev/null || { echo "the sample did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }
}
