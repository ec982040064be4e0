#!/bin/sh
# One command for a GPU machine: build the CUDA backend's device tests, run them
# against the CPU backend (the oracle), print a short table last.
# The GPU machine has nvcc and the CUDA libraries but not libmicrohttpd/jansson/
# PCRE2 headers, so the test binaries are normally built on the dev machine
# (`make CUDA=1 BUILD=build-cuda`) and carried over; if they are missing here and
# the headers exist, they are built.
# Usage: sh scripts/gpu-check.sh [BUILD_DIR]   (default build-cuda)
set -u
cd "$(dirname "$0")/.."
BUILD=${1:-build-cuda}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: no GPU visible"
if ! ls "$BUILD"/test-cuda/* >/dev/null 2>&1; then
    make CUDA=1 BUILD="$BUILD" -j"$(nproc)" all || { echo "gpu-check: build failed"; exit 1; }
fi
status=0
summary=""
for t in "$BUILD"/test-cuda/*; do
    [ -x "$t" ] || continue
    echo "== $t"
    out=$("$t" 2>&1); rc=$?
    echo "$out"
    [ $rc -eq 0 ] || status=1
    summary="$summary
| $(basename "$t") | $(echo "$out" | tail -n 1) |"
done
echo
echo "| test | result |"
echo "|---|---|$summary"
exit $status
