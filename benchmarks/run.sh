#!/usr/bin/env bash
# Runs the BenchmarkDotNet suite in Release. Arguments go to BenchmarkDotNet, e.g.
#   benchmarks/run.sh --filter '*PerRequest*'
# jemalloc can only be loaded after start-up when glibc reserves extra static TLS, so the
# tunable is set here (it is inherited by BenchmarkDotNet's child processes).
# mimalloc and jemalloc come from Debian: apt-get install -y libmimalloc2.0 libjemalloc2
set -euo pipefail
cd "$(dirname "$0")/Allocators.Benchmarks"
export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.rtld.optional_static_tls=65536"
exec dotnet run -c Release -- "$@"
