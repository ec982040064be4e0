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
. "$(dirname "$0")/lib/server.sh"
start_server "$TMP/srv" --api-key k3y --max-model-len 256 --max-body-bytes 1048576 || exit 1
timeout 300 node "$ROOT/test/integration/bad_input.mjs" "http://127.0.0.1:$SPORT" k3y tiny-v3
rc=$?
kill -0 "$SPID" 2>/dev/null || { echo "FAIL: the server died during the matrix"; tail -20 "$TMP/srv.err"; rc=1; }
exit $rc
