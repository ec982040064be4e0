#!/bin/sh
# CPU benchmarks: kernel throughput (BUILD/bench/bench_cpu_ops), then model-level
# numbers (to come). Prints the tables; numbers on a shared machine are noisy, so
# each kernel row is already a best-of-many.
# Usage: sh scripts/bench-cpu.sh BUILD [--threads N]
set -u
BUILD=${1:-build}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.."

echo "== kernels: $BUILD/bench/bench_cpu_ops $*"
if [ ! -x "$BUILD/bench/bench_cpu_ops" ]; then
    make BUILD="$BUILD" "$BUILD/bench/bench_cpu_ops" >/dev/null || { echo "bench-cpu: build failed" >&2; exit 1; }
fi
"$BUILD/bench/bench_cpu_ops" "$@" || { echo "bench-cpu: bench_cpu_ops failed" >&2; exit 1; }

# == model: prefill / decode tokens per second on bench-7b (added by the engine work)
