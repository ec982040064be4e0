#!/bin/sh
# test/cli/bad_input.sh — starts `mlaserve serve` on tiny-v3 (loopback, free
# port, API key, max model len 256) and runs the bad-input matrix
# (test/integration/bad_input.mjs: 50+ malformed requests, each with the right
# status and an OpenAI error object, normal service afterwards, slowloris).
# Needs MLASERVE_BIN, MLASERVE_TEST_MODELS, curl, node.
set -u
BIN=${MLASERVE_BIN:?}
MODEL=${MLASERVE_TEST_MODELS:?}/tiny-v3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d) || exit 1
"$BIN" serve --model "$MODEL" --port 0 --threads 2 --api-key k3y --max-model-len 256 --max-body-bytes 1048576 \
    > "$TMP/out" 2> "$TMP/err" &
PID=$!
trap 'kill $PID 2>/dev/null; sleep 0.5; kill -9 $PID 2>/dev/null; rm -rf "$TMP"' EXIT
PORT=""
i=0
while [ $i -lt 600 ]; do
    [ -z "$PORT" ] && PORT=$(sed -n 's/.*HTTP on port \([0-9]*\).*/\1/p' "$TMP/err" | head -1)
    [ -n "$PORT" ] && [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/ready")" = 200 ] && break
    kill -0 $PID 2>/dev/null || { echo "FAIL: server exited"; cat "$TMP/err"; exit 1; }
    sleep 0.1
    i=$((i + 1))
done
timeout 300 node "$ROOT/test/integration/bad_input.mjs" "http://127.0.0.1:$PORT" k3y tiny-v3
rc=$?
kill -0 $PID 2>/dev/null || { echo "FAIL: the server died during the matrix"; cat "$TMP/err" | tail -20; rc=1; }
exit $rc
