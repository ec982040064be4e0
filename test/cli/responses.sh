#!/bin/sh
# test/cli/responses.sh — OpenAI's Responses API (POST /v1/responses): the
# official openai client (test/integration/responses.mjs) against a server
# with DeepSeek-V3's template (text, streaming events, the SDK's stream
# helper, function calls and their history, text.format, typed errors) and one
# with DeepSeek-R1's (reasoning items); stored responses (previous_response_id,
# retrieve, input_items, delete; background: queued, polled, cancelled; refused
# with --responses-store 0); then the raw
# wire format with curl: named SSE events, no [DONE], 405, the ignored-field
# warning. Needs
# MLASERVE_BIN, MLASERVE_TEST_MODELS, node and node_modules/openai.
set -u
BIN=${MLASERVE_BIN:?}
MODEL=${MLASERVE_TEST_MODELS:?}/tiny-v3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/lib/server.sh"
[ -f "$ROOT/node_modules/openai/package.json" ] || { fail "node_modules/openai missing (npm ci)"; exit 1; }
T=$((600 * ${MLASERVE_TEST_TIME_SCALE:-1}))

start_server "$TMP/v3" --max-num-seqs 8 || { fail "server did not start"; exit 1; }
URL="http://127.0.0.1:$SPORT"
MLASERVE_BASE_URL="$URL/v1" MLASERVE_MODEL_NAME=tiny-v3 MLASERVE_MODE=v3 \
    timeout "$T" node "$ROOT/test/integration/responses.mjs" || fail "responses.mjs (v3)"

curl -s "$URL/metrics" | grep -q '^mlaserve:responses_stored [1-9]' || fail "/metrics: no stored responses counted"

# the wire: every data line named by an event line of its type, numbered from 0, no [DONE]
curl -sN -D "$TMP/h" "$URL/v1/responses" -H 'Content-Type: application/json' \
    -d '{"model":"tiny-v3","input":"Hi","max_output_tokens":6,"stream":true,"frobnicate":1}' > "$TMP/sse"
grep -qi '^content-type: text/event-stream' "$TMP/h" || fail "stream content type"
grep -q '\[DONE\]' "$TMP/sse" && fail "a Responses stream has no [DONE]"
node -e '
const fs = require("fs");
const blocks = fs.readFileSync(process.argv[1], "utf8").split("\n\n").filter((b) => b.trim());
if (blocks.length < 8) throw new Error(`only ${blocks.length} events`);
blocks.forEach((b, i) => {
  const lines = b.split("\n");
  if (lines.length !== 2 || !lines[0].startsWith("event: ") || !lines[1].startsWith("data: ")) throw new Error(b);
  const d = JSON.parse(lines[1].slice(6));
  if (d.type !== lines[0].slice(7) || d.sequence_number !== i) throw new Error(`event ${i}: ${b}`);
});
const last = JSON.parse(blocks[blocks.length - 1].split("\n")[1].slice(6));
if (!["response.completed", "response.incomplete"].includes(last.type)) throw new Error(last.type);
' "$TMP/sse" || fail "SSE framing"
grep -q 'ignored request fields: frobnicate' "$TMP/v3.err" || fail "unknown field not logged as ignored"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/responses")
[ "$code" = 405 ] || fail "GET /v1/responses: $code, want 405"
code=$(curl -s -o "$TMP/bad" -w '%{http_code}' "$URL/v1/responses" -d '{"model":"tiny-v3","input":')
[ "$code" = 400 ] && grep -q invalid_json "$TMP/bad" || fail "truncated JSON: $code $(cat "$TMP/bad")"
kill -TERM "$SPID"

# the R1 server stores nothing: previous_response_id is refused, nothing to GET
start_server "$TMP/r1" --max-num-seqs 8 --chat-template deepseek-r1 --responses-store 0 || { fail "R1 server did not start"; exit 1; }
URL="http://127.0.0.1:$SPORT"
curl -s "$URL/v1/responses" -d '{"model":"tiny-v3","input":"Hi","max_output_tokens":2}' > "$TMP/r0"
grep -q '"store":false' "$TMP/r0" || fail "--responses-store 0 still says stored: $(cat "$TMP/r0")"
id=$(sed -n 's/^{"id":"\(resp_[0-9a-f]*\)".*/\1/p' "$TMP/r0")
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/responses/$id")
[ -n "$id" ] && [ "$code" = 404 ] || fail "GET an unstored response ($id): $code, want 404"
code=$(curl -s -o "$TMP/r0" -w '%{http_code}' "$URL/v1/responses" -d "{\"model\":\"tiny-v3\",\"input\":\"Hi\",\"previous_response_id\":\"$id\"}")
[ "$code" = 400 ] && grep -q previous_response_id "$TMP/r0" || fail "previous_response_id without a store: $code $(cat "$TMP/r0")"
MLASERVE_BASE_URL="http://127.0.0.1:$SPORT/v1" MLASERVE_MODEL_NAME=tiny-v3 MLASERVE_MODE=r1 \
    timeout "$T" node "$ROOT/test/integration/responses.mjs" || fail "responses.mjs (r1)"
grep -q "Traceback\|AddressSanitizer" "$TMP/v3.err" "$TMP/r1.err" && fail "server logs show a crash"

[ $fails -eq 0 ] && echo "responses: all passed"
exit $((fails > 0))
