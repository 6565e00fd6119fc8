#!/usr/bin/env bash
# Prints the verdict of every performance target of docs/benchmarks.md from one quick run:
#   benchmarks/verdicts.sh                 # about 10-15 minutes; the table goes to stdout
#   benchmarks/verdicts.sh /tmp/verdicts.md  # and to a file
# The targets are benchmarks/verdicts/targets.tsv (one per line: the two benchmark methods whose
# ratio is the target's figure, and the threshold). Every method they name runs once, in-process,
# with 4 warm-up and 5 measured iterations of 250 ms; the table gives both figures, the ratio and
# met or missed. Ratios from one run only: read them beside the load average the table prints.
# It never fails on a miss (exit status 0 unless the run itself breaks).
# jemalloc and mimalloc rows need: apt-get install -y libmimalloc2.0 libjemalloc2
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
out="${1:-}"
cd "$root/Allocators.Benchmarks"
export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.rtld.optional_static_tls=65536"
# Tiering starts counting calls at once (no 100 ms delay) and the run warms up for 4 iterations, so
# every method is in its tier-1 code, with dynamic PGO as in production, before it is measured: in
# one process with short runs a loop benchmark (called a dozen times per iteration, or run on a
# fresh thread per call) was otherwise measured in its tier-0 or OSR code and the others in tier 1,
# and a first quiet run gave impossible ratios (two threads 3.6x one thread on two cores). Turning
# tiering off instead (DOTNET_TieredCompilation=0) also removes PGO, which production has; a run
# that way put the empty request at 35 ns against 17 ns tiered.
export DOTNET_TC_CallCountingDelayMs=0
dotnet build -c Release --nologo -v quiet >/dev/null
log="$(mktemp)"
args=(--verdicts "$root/verdicts/targets.tsv")
[ -n "$out" ] && args+=(--out "$(realpath -m "$out")")
echo "Running every benchmark the targets name (log: $log) ..."
if ! dotnet run -c Release --no-build -- "${args[@]}" --artifacts "$(mktemp -d)" > "$log" 2>&1; then
  tail -40 "$log"
  exit 1
fi
# The table is everything after BenchmarkDotNet's own output: from the "Verdicts from one run" line.
sed -n '/^Verdicts from one run/,$p' "$log"
