#!/bin/sh
# scripts/gpu-check.sh — one command for a GPU machine (issue #4): build the CUDA
# backend's device test and benchmark, run every op against the CPU backend (the
# oracle), run the attention / cache / router kernels under compute-sanitizer
# when it is there, then time the ops on issue #4's shapes. Prints failures, the
# benchmark tables and a summary; full logs go to $OUT (or /tmp/gpu-check).
#
# The GPU machine has nvcc and the CUDA libraries but not the jansson / PCRE2 /
# libmicrohttpd headers: `make CUDA=1 cuda-check` builds only what the device
# programs link (see the Makefile). If make or nvcc is missing, binaries already
# in BUILD_DIR are used (build them elsewhere with the same target and carry them).
#
# Every step has a time limit and the whole script stops starting new steps at
# DEADLINE_S (default 450 s), so it ends in under 8 minutes.
# Usage: sh scripts/gpu-check.sh [BUILD_DIR]   (default build-gpu)
# Exit status: 0 when the build, the tests and the sanitizer run passed.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${1:-build-gpu}
LOGS=${OUT:-/tmp/gpu-check}
mkdir -p "$LOGS"
DEADLINE_S=${DEADLINE_S:-450}
START=$(date +%s)
PATH=$PATH:/usr/local/cuda/bin
export PATH

# seconds left before the deadline, capped at $1
budget() {
    left=$((START + DEADLINE_S - $(date +%s)))
    [ "$left" -gt "$1" ] && left=$1
    echo "$left"
}

status=0
summary=""
note() { summary="$summary
| $1 | $2 |"; }

echo "== gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null ||
    echo "nvidia-smi: no GPU visible"

# ---- build
echo "== build ($BUILD)"
if command -v make >/dev/null 2>&1 && command -v nvcc >/dev/null 2>&1; then
    t=$(budget 200)
    if timeout "$t" make CUDA=1 BUILD="$BUILD" -j"$(nproc)" cuda-check >"$LOGS/build.log" 2>&1; then
        note build "ok ($(($(date +%s) - START)) s)"
    else
        echo "build failed or timed out (limit ${t} s); last lines of $LOGS/build.log:"
        tail -n 30 "$LOGS/build.log"
        note build "FAILED"
        status=1
    fi
else
    echo "make or nvcc not found: using the binaries in $BUILD"
    note build "skipped (no make/nvcc)"
fi
TEST=$BUILD/test-cuda/test_cuda_ops
BENCH=$BUILD/bench/bench_cuda

# ---- device tests (every kernel waits for completion: a fault names its launch)
echo "== test_cuda_ops"
if [ -x "$TEST" ]; then
    t=$(budget 150)
    MLASERVE_CUDA_SYNC=1 timeout "$t" "$TEST" >"$LOGS/test_cuda_ops.log" 2>&1
    rc=$?
    grep -v '^  .*  ok  ' "$LOGS/test_cuda_ops.log" # failures, group counts, totals
    [ $rc -eq 124 ] && echo "test_cuda_ops: timed out after ${t} s"
    [ $rc -eq 0 ] || status=1
    note test_cuda_ops "$(tail -n 1 "$LOGS/test_cuda_ops.log") (exit $rc)"
else
    echo "$TEST missing"
    note test_cuda_ops "MISSING"
    status=1
fi

# ---- NCCL collectives (1-rank world; every GPU of the machine when there are several)
echo "== test_comm_nccl"
NCCL_TEST=$BUILD/test-cuda/test_comm_nccl
if [ -x "$NCCL_TEST" ]; then
    t=$(budget 40)
    timeout "$t" "$NCCL_TEST" >"$LOGS/test_comm_nccl.log" 2>&1
    rc=$?
    tail -n 5 "$LOGS/test_comm_nccl.log"
    [ $rc -eq 0 ] || status=1
    note test_comm_nccl "$(tail -n 1 "$LOGS/test_comm_nccl.log") (exit $rc)"
else
    echo "$NCCL_TEST missing"
    note test_comm_nccl "MISSING"
    status=1
fi

# ---- the whole model on the GPU (needs build-carry/ from scripts/gpu-carry.sh)
echo "== e2e_golden (tiny-v3, tiny-v2: --device cuda vs --device cpu; tiny-v3 also as a 1-rank NCCL world)"
if [ -x build-carry/mlaserve ] && [ "$(budget 180)" -gt 40 ]; then
    t=$(budget 180)
    (
        export LD_LIBRARY_PATH=$PWD/build-carry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        mkdir -p "$BUILD/models"
        for m in tiny-v3 tiny-v2; do
            [ -f "$BUILD/models/$m/model.safetensors.index.json" ] ||
                build-carry/mlaserve mkmodel --preset $m --tokenizer build-carry/tokenizer --out "$BUILD/models/$m" >/dev/null
        done
        timeout "$t" sh test/cuda/e2e_golden.sh build-carry/mlaserve "$BUILD/models" test/golden
    ) >"$LOGS/e2e_golden.log" 2>&1
    rc=$?
    cat "$LOGS/e2e_golden.log"
    [ $rc -eq 0 ] || status=1
    note e2e_golden "$(tail -n 1 "$LOGS/e2e_golden.log") (exit $rc)"
else
    echo "skipped (no build-carry/: run scripts/gpu-carry.sh here and carry build-carry, or no time left)"
    note e2e_golden "skipped"
fi

# ---- compute-sanitizer memcheck over the kernels with hand-made indexing
echo "== compute-sanitizer memcheck"
if [ -x "$TEST" ] && command -v compute-sanitizer >/dev/null 2>&1 && [ "$(budget 60)" -gt 20 ]; then
    t=$(budget 60)
    timeout "$t" compute-sanitizer --tool memcheck --target-processes all --error-exitcode 9 \
        "$TEST" --quiet --only kv,mla_decode,mla_prefill,router,norm_rope >"$LOGS/sanitizer.log" 2>&1
    rc=$?
    grep -E 'ERROR SUMMARY|Invalid|FAIL|passed' "$LOGS/sanitizer.log" | head -n 40
    case $rc in
    0) note memcheck "clean" ;;
    124) note memcheck "timed out after ${t} s (not a failure)" ;;
    *) note memcheck "FAILED (exit $rc, see sanitizer.log)"; status=1 ;;
    esac
else
    echo "skipped (no compute-sanitizer, no test binary or no time left)"
    note memcheck "skipped"
fi

# ---- benchmark (keeps to its own budget, prints rows as it goes)
echo "== bench_cuda"
if [ -x "$BENCH" ] && [ "$(budget 150)" -gt 30 ]; then
    t=$(budget 150)
    timeout "$t" "$BENCH" --budget-s $((t - 25)) 2>&1 | tee "$LOGS/bench_cuda.log"
    note bench_cuda "$(tail -n 1 "$LOGS/bench_cuda.log")"
else
    echo "skipped (no binary or no time left)"
    note bench_cuda "skipped"
fi

echo
echo "| step | result |"
echo "|---|---|$summary"
echo "gpu-check: $(($(date +%s) - START)) s, logs in $LOGS"
exit $status
