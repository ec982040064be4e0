#!/bin/sh
# test/cli/server.sh — `mlaserve serve` end to end with curl and the official
# `openai` npm client (test/integration/openai_sdk.mjs).
#
# References: greedy output (temperature 0, ignore_eos) must equal what
# `mlaserve generate` prints for the same chat message / prompt text, and what
# `mlaserve logits --greedy` gives for a token-id prompt (detokenized by
# `mlaserve detokenize`); a stream must concatenate to the non-stream text; a
# stop string must cut the greedy text at its first occurrence (hand-derived
# from that text). Errors: status and `param` as listed in issue #3.
# Runs two servers on free loopback ports (--port 0; the port is read from the
# log): the main one with an API key, a small one (1 sequence, queue of 1) for
# 429 and the graceful SIGTERM stop. Every wait is bounded; the servers are
# killed on exit. Needs MLASERVE_BIN, MLASERVE_TEST_MODELS (run-tests.sh),
# curl and node (JSON checks; the SDK test needs node_modules/openai).
set -u
BIN=${MLASERVE_BIN:?}
MODEL=${MLASERVE_TEST_MODELS:?}/tiny-v3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/lib/server.sh"
KEY=test-key-123
NAME=tiny-v3

# jq-like field access with node: jget EXPR FILE (EXPR over `j`, strings printed raw)
jget() {
    node -e 'const fs=require("fs");let j;try{j=JSON.parse(fs.readFileSync(process.argv[2],"utf8"))}catch(e){process.stdout.write("<not json>");process.exit(0)}
let v;try{v=(new Function("j","return ("+process.argv[1]+")"))(j)}catch(e){v="<error: "+e.message+">"}
process.stdout.write(typeof v==="string"?v:JSON.stringify(v)===undefined?"undefined":JSON.stringify(v))' "$1" "$2"
}


start_server "$TMP/main" --api-key "$KEY" --max-model-len 256 --max-body-bytes 65536 ||
    { fail "main server did not start"; exit 1; }
PORT=$SPORT
MAIN_PID=$SPID
URL=http://127.0.0.1:$PORT
grep -q "listening on http://127.0.0.1:$PORT" "$TMP/main.out" || fail "banner: $(cat "$TMP/main.out")"
grep -q "KV cache .* pages" "$TMP/main.out" || fail "banner lacks KV pages"

# post PATH BODY OUT [curl args...] -> prints the HTTP status
post() {
    p=$1 b=$2 o=$3
    shift 3
    curl -s -m 120 -o "$o" -w '%{http_code}' -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        --data-binary "$b" "$@" "$URL$p"
}

# expect_error STATUS PARAM PATH BODY [curl args...]: status, OpenAI error shape and param ("null" for none)
expect_error() {
    st=$1 param=$2 p=$3 b=$4
    shift 4
    got=$(post "$p" "$b" "$TMP/err.json" "$@")
    [ "$got" = "$st" ] || { fail "$p $b: status $got, want $st: $(head -c 300 "$TMP/err.json")"; return; }
    shape=$(jget 'Object.keys(j.error).sort().join(",")+"|"+typeof j.error.message+"|"+j.error.param' "$TMP/err.json")
    [ "$shape" = "code,message,param,type|string|$param" ] || fail "$p $b: error object $(head -c 300 "$TMP/err.json")"
}

# ---------------------------------------------------------------- simple routes
[ "$(curl -s -m 10 "$URL/health")" = '{"status":"ok"}' ] || fail "/health"
curl -s -m 10 -H "Authorization: Bearer $KEY" "$URL/v1/models" > "$TMP/models.json"
[ "$(jget 'j.object+" "+j.data[0].id+" "+j.data[0].max_model_len' "$TMP/models.json")" = "list $NAME 256" ] ||
    fail "/v1/models: $(cat "$TMP/models.json")"
[ "$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "$URL/v1/models/$NAME")" = 200 ] ||
    fail "/v1/models/$NAME"

post /tokenize '{"model":"tiny-v3","prompt":"Hello world"}' "$TMP/tok.json" > /dev/null
[ "$(cat "$TMP/tok.json")" = '{"count":3,"max_model_len":256,"tokens":[0,19923,2058]}' ] || fail "/tokenize: $(cat "$TMP/tok.json")"
post /tokenize '{"messages":[{"role":"user","content":"Hi"}]}' "$TMP/tokm.json" > /dev/null
[ "$(jget 'j.count === j.tokens.length && j.tokens[0] === 0' "$TMP/tokm.json")" = true ] || fail "/tokenize messages: $(cat "$TMP/tokm.json")"
# CORS is off by default (server/cors.h): no header for a browser's Origin, its preflight refused
curl -s -m 10 -o /dev/null -D "$TMP/cors.h" -H "Authorization: Bearer $KEY" -H 'Origin: https://app.example' "$URL/v1/models"
grep -qi '^access-control' "$TMP/cors.h" && fail "CORS headers by default: $(cat "$TMP/cors.h")"
[ "$(curl -s -m 10 -o /dev/null -w '%{http_code}' -X OPTIONS -H 'Origin: https://app.example' \
    -H 'Access-Control-Request-Method: POST' "$URL/v1/completions")" = 403 ] || fail "default CORS preflight not refused"
grep -q "CORS off" "$TMP/main.out" || fail "banner lacks CORS off: $(cat "$TMP/main.out")"
# /tokenize renders messages as the chat endpoint does: tools and a developer message count the same
body='"messages":[{"role":"developer","content":"Be brief"},{"role":"user","content":"Weather?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]'
post /v1/chat/completions "{\"model\":\"tiny-v3\",$body,\"max_tokens\":1}" "$TMP/toolchat.json" > /dev/null
post /tokenize "{$body}" "$TMP/tooltok.json" > /dev/null
[ "$(jget 'j.usage.prompt_tokens' "$TMP/toolchat.json")" = "$(jget 'j.count' "$TMP/tooltok.json")" ] ||
    fail "/tokenize with tools: $(cat "$TMP/tooltok.json") vs chat usage $(jget 'j.usage' "$TMP/toolchat.json")"
# SageMaker's contract: GET /ping, POST /invocations routed by body (messages: chat, prompt: completion)
[ "$(curl -s -m 10 "$URL/ping")" = '{"status":"ok"}' ] || fail "/ping"
post /invocations '{"model":"tiny-v3","messages":[{"role":"user","content":"Hi"}],"max_tokens":2}' "$TMP/inv1.json" > /dev/null
post /invocations '{"model":"tiny-v3","prompt":"Hi","max_tokens":2}' "$TMP/inv2.json" > /dev/null
post /invocations '{"model":"tiny-v3","input":"Hi","max_output_tokens":2}' "$TMP/inv3.json" > /dev/null
[ "$(jget 'j.object' "$TMP/inv1.json") $(jget 'j.object' "$TMP/inv2.json") $(jget 'j.object' "$TMP/inv3.json")" = \
    "chat.completion text_completion response" ] ||
    fail "/invocations: $(cat "$TMP/inv1.json") $(cat "$TMP/inv2.json") $(cat "$TMP/inv3.json")"
expect_error 400 null /invocations '{"model":"tiny-v3","max_tokens":2}'
expect_error 400 null /invocations '{"model":"tiny-v3","input":"Hi","prompt":"Hi"}'
# the routed body is parsed once and checked as its route checks it
expect_error 400 null /invocations '{"model":"tiny-v3","prompt":'
grep -q '"code":"invalid_json"' "$TMP/err.json" || fail "/invocations truncated JSON: $(cat "$TMP/err.json")"
expect_error 400 temperature /invocations '{"model":"tiny-v3","prompt":"Hi","temperature":"hot"}'
expect_error 404 model /invocations '{"model":"nope","input":"Hi"}'
st=$(post /invocations '{"model":"tiny-v3","prompt":"Hi","max_tokens":2,"stream":true}' "$TMP/inv4.txt")
[ "$st" = 200 ] && grep -q '^data: \[DONE\]' "$TMP/inv4.txt" || fail "/invocations streaming: $st $(head -c 300 "$TMP/inv4.txt")"
# a misspelled parameter is not lost silently: the log names it (as vLLM's)
post /v1/completions '{"model":"tiny-v3","prompt":"Hi","max_tokens":1,"max_token":5}' "$TMP/ign.json" > /dev/null
grep -q "ignored request fields: max_token" "$TMP/main.err" || fail "ignored field not logged: $(tail -3 "$TMP/main.err")"
# a continued last message (DeepSeek's "prefix", vLLM's continue_final_message) tokenizes as its text spelled out
post /tokenize '{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"The","prefix":true}]}' "$TMP/tokp.json" > /dev/null
post /tokenize '{"prompt":"<｜User｜>Hi<｜Assistant｜>The"}' "$TMP/tokq.json" > /dev/null
cmp -s "$TMP/tokp.json" "$TMP/tokq.json" || fail "/tokenize prefix: $(cat "$TMP/tokp.json") vs $(cat "$TMP/tokq.json")"
post /tokenize '{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"The"}],"continue_final_message":true}' "$TMP/tokc.json" > /dev/null
cmp -s "$TMP/tokc.json" "$TMP/tokq.json" || fail "/tokenize continue_final_message: $(cat "$TMP/tokc.json")"
expect_error 400 messages /tokenize '{"messages":[{"role":"user","content":"Hi"}],"continue_final_message":true}'
post /detokenize '{"tokens":[19923,2058]}' "$TMP/detok.json" > /dev/null
[ "$(cat "$TMP/detok.json")" = '{"prompt":"Hello world"}' ] || fail "/detokenize: $(cat "$TMP/detok.json")"

# ---------------------------------------------------------------- greedy equals the CLI
CHAT_BODY='{"model":"tiny-v3","messages":[{"role":"user","content":"Hello! Who are you?"}],"max_tokens":12,"temperature":0,"ignore_eos":true}'
st=$(post /v1/chat/completions "$CHAT_BODY" "$TMP/chat.json")
[ "$st" = 200 ] || fail "chat: status $st: $(cat "$TMP/chat.json")"
shape=$(jget '[/^chatcmpl-/.test(j.id), j.object, typeof j.created, j.model, typeof j.system_fingerprint, j.choices.length,
    j.choices[0].index, j.choices[0].message.role, j.choices[0].finish_reason, j.choices[0].logprobs,
    j.usage.completion_tokens, j.usage.total_tokens === j.usage.prompt_tokens + j.usage.completion_tokens].join(" ")' "$TMP/chat.json")
[ "$shape" = "true chat.completion number tiny-v3 string 1 0 assistant length  12 true" ] || fail "chat shape: $shape"
jget 'j.choices[0].message.content' "$TMP/chat.json" > "$TMP/chat.txt"
"$BIN" generate --model "$MODEL" --chat "Hello! Who are you?" --max-tokens 12 --temperature 0 --ignore-eos --no-stats \
    --threads 2 > "$TMP/gen_chat.txt" 2>/dev/null || fail "generate --chat"
printf '%s\n' "$(cat "$TMP/chat.txt")" | cmp -s - "$TMP/gen_chat.txt" ||
    fail "chat greedy differs from generate: '$(cat "$TMP/chat.txt")' vs '$(cat "$TMP/gen_chat.txt")'"

CMPL_BODY='{"model":"tiny-v3","prompt":"The capital of France is","max_tokens":10,"temperature":0,"ignore_eos":true}'
st=$(post /v1/completions "$CMPL_BODY" "$TMP/cmpl.json")
[ "$st" = 200 ] || fail "completions: status $st: $(cat "$TMP/cmpl.json")"
shape=$(jget '[/^cmpl-/.test(j.id), j.object, j.choices[0].finish_reason, j.usage.prompt_tokens, j.usage.completion_tokens].join(" ")' "$TMP/cmpl.json")
[ "$shape" = "true text_completion length 6 10" ] || fail "completions shape: $shape"
jget 'j.choices[0].text' "$TMP/cmpl.json" > "$TMP/cmpl.txt"
"$BIN" generate --model "$MODEL" --prompt "The capital of France is" --max-tokens 10 --temperature 0 --ignore-eos \
    --no-stats --threads 2 > "$TMP/gen_cmpl.txt" 2>/dev/null || fail "generate --prompt"
printf '%s\n' "$(cat "$TMP/cmpl.txt")" | cmp -s - "$TMP/gen_cmpl.txt" ||
    fail "completions greedy differs from generate: '$(cat "$TMP/cmpl.txt")' vs '$(cat "$TMP/gen_cmpl.txt")'"

# echo: the prompt as sent, then the same greedy continuation
post /v1/completions '{"model":"tiny-v3","prompt":"The capital of France is","max_tokens":10,"temperature":0,"ignore_eos":true,"echo":true}' "$TMP/echo.json" > /dev/null
[ "$(jget 'j.choices[0].text' "$TMP/echo.json")" = "The capital of France is$(cat "$TMP/cmpl.txt")" ] || fail "echo: $(cat "$TMP/echo.json")"

# token-id prompt against `logits --greedy` (ids -> text with the detokenize CLI)
st=$(post /v1/completions '{"model":"tiny-v3","prompt":[0,19923,2058],"max_tokens":8,"temperature":0,"ignore_eos":true}' "$TMP/ids.json")
[ "$st" = 200 ] || fail "token-id prompt: status $st"
"$BIN" logits --model "$MODEL" --ids 0,19923,2058 --greedy 8 --threads 2 > "$TMP/logits.json" 2>/dev/null || fail "logits CLI"
printf '{"ids":%s,"skip_special_tokens":true}\n' "$(jget 'j.greedy' "$TMP/logits.json")" |
    "$BIN" detokenize --model "$MODEL" > "$TMP/greedy_text.json"
[ "$(jget 'j.text' "$TMP/greedy_text.json")" = "$(jget 'j.choices[0].text' "$TMP/ids.json")" ] ||
    fail "token-id prompt differs from logits --greedy: $(cat "$TMP/greedy_text.json") vs $(jget 'j.choices[0].text' "$TMP/ids.json")"
[ "$(jget 'j.usage.prompt_tokens' "$TMP/ids.json")" = 3 ] || fail "token-id prompt usage"

# prefix caching: the same 130-token prompt twice; the second reuses 2 full KV pages (128 tokens)
LONG=$(node -e 'console.log(JSON.stringify(Array.from({length: 130}, (_, i) => (i * 7919) % 100000 + 10)))')
post /v1/completions "{\"model\":\"tiny-v3\",\"prompt\":$LONG,\"max_tokens\":4,\"temperature\":0}" "$TMP/pc1.json" > /dev/null
post /v1/completions "{\"model\":\"tiny-v3\",\"prompt\":$LONG,\"max_tokens\":4,\"temperature\":0}" "$TMP/pc2.json" > /dev/null
[ "$(jget '[j.usage.prompt_tokens_details.cached_tokens, j.usage.prompt_cache_hit_tokens, j.usage.prompt_cache_miss_tokens].join(" ")' "$TMP/pc2.json")" = "128 128 2" ] ||
    fail "prefix cache usage: $(cat "$TMP/pc2.json")"
[ "$(jget 'j.choices[0].text' "$TMP/pc1.json")" = "$(jget 'j.choices[0].text' "$TMP/pc2.json")" ] || fail "prefix cache changed the output"
curl -s -m 10 "$URL/metrics" | grep -q '^mlaserve:prefix_cache_hits_total 128' || fail "prefix cache hits not in /metrics"

# ---------------------------------------------------------------- streaming
SBODY='{"model":"tiny-v3","messages":[{"role":"user","content":"Hello! Who are you?"}],"max_tokens":12,"temperature":0,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}'
st=$(post /v1/chat/completions "$SBODY" "$TMP/sse.txt" -N -D "$TMP/sse.hdr")
[ "$st" = 200 ] || fail "stream: status $st"
grep -qi '^content-type: text/event-stream' "$TMP/sse.hdr" || fail "stream content type: $(cat "$TMP/sse.hdr")"
node -e '
const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n");
const want = require("fs").readFileSync(process.argv[2], "utf8");
const errs = [];
// SSE framing: "data: ..." lines each followed by a blank line
for (let i = 0; i + 1 < lines.length; i += 2) {
  if (!lines[i].startsWith("data: ")) errs.push("line " + i + " is not a data line: " + lines[i]);
  if (lines[i + 1] !== "") errs.push("no blank line after event " + i);
}
const events = lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6));
if (events[events.length - 1] !== "[DONE]") errs.push("last event is not [DONE]");
const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
let text = "", finishes = 0, usage = null, tokens = 0;
chunks.forEach((c, i) => {
  if (c.object !== "chat.completion.chunk") errs.push("object " + c.object);
  if (c.usage) usage = c.usage;
  for (const ch of c.choices) {
    if (i === 0 && ch.delta.role !== "assistant") errs.push("first delta has no role");
    if (i > 0 && ch.delta.role) errs.push("role repeated");
    if (ch.delta.content) text += ch.delta.content, tokens++;
    if (ch.finish_reason) finishes++, ch.finish_reason !== "length" && errs.push("finish " + ch.finish_reason);
  }
});
const last = chunks[chunks.length - 1];
if (!(last.choices.length === 0 && usage && usage.completion_tokens === 12)) errs.push("usage chunk: " + JSON.stringify(last));
if (finishes !== 1) errs.push(finishes + " finish reasons");
if (text !== want) errs.push("stream text " + JSON.stringify(text) + " != " + JSON.stringify(want));
if (tokens < 6) errs.push("only " + tokens + " content chunks for 12 tokens");
if (errs.length) { console.log(errs.join("; ")); process.exit(1); }
' "$TMP/sse.txt" "$TMP/chat.txt" || fail "SSE stream format"

# ---------------------------------------------------------------- stop strings (from the greedy text)
node -e 'const t=require("fs").readFileSync(process.argv[1],"utf8");const c=Array.from(t);const k=Math.floor(c.length/2);
const stop=c.slice(k-1,k+2).join("");require("fs").writeFileSync(process.argv[2],JSON.stringify({stop,want:t.slice(0,t.indexOf(stop))}))' \
    "$TMP/cmpl.txt" "$TMP/stop.json"
STOP=$(node -e 'process.stdout.write(JSON.stringify(require(process.argv[1]).stop))' "$TMP/stop.json")
for mode in false true; do
    post /v1/completions "{\"model\":\"tiny-v3\",\"prompt\":\"The capital of France is\",\"max_tokens\":10,\"temperature\":0,\"ignore_eos\":true,\"stop\":[\"zzzz\",$STOP],\"stream\":$mode}" \
        "$TMP/stop_$mode.out" -N > /dev/null
    node -e 'const fs=require("fs");const raw=fs.readFileSync(process.argv[1],"utf8");const {stop,want}=require(process.argv[2]);
let text="",fin=null;
if(process.argv[3]==="true"){for(const l of raw.split("\n"))if(l.startsWith("data: {")){const c=JSON.parse(l.slice(6));for(const ch of c.choices){text+=ch.text;if(ch.finish_reason)fin=ch.finish_reason}}}
else{const j=JSON.parse(raw);text=j.choices[0].text;fin=j.choices[0].finish_reason}
if(text!==want||fin!=="stop"||text.includes(stop)){console.log("stop "+JSON.stringify(stop)+": got "+JSON.stringify(text)+" ("+fin+"), want "+JSON.stringify(want));process.exit(1)}' \
        "$TMP/stop_$mode.out" "$TMP/stop.json" "$mode" || fail "stop string (stream=$mode)"
done

# ---------------------------------------------------------------- errors
expect_error 400 null /v1/chat/completions '{"model": "tiny-v3", "messages": ['
expect_error 400 null /v1/chat/completions '[]'
expect_error 400 temperature /v1/chat/completions '{"model":"tiny-v3","messages":[{"role":"user","content":"x"}],"temperature":"hot"}'
expect_error 400 top_p /v1/chat/completions '{"model":"tiny-v3","messages":[{"role":"user","content":"x"}],"top_p":5}'
expect_error 400 messages /v1/chat/completions '{"model":"tiny-v3"}'
expect_error 400 model /v1/chat/completions '{"messages":[{"role":"user","content":"x"}]}'
expect_error 400 n /v1/completions '{"model":"tiny-v3","prompt":"x","n":0}'
expect_error 400 stop /v1/completions '{"model":"tiny-v3","prompt":"x","stop":7}'
expect_error 400 prompt /v1/completions '{"model":"tiny-v3","prompt":{"a":1}}'
expect_error 400 max_tokens /v1/completions '{"model":"tiny-v3","prompt":"x","max_tokens":300}'
grep -q "maximum context length is 256 tokens" "$TMP/err.json" || fail "context error does not say the limit: $(cat "$TMP/err.json")"
expect_error 404 model /v1/chat/completions '{"model":"gpt-4","messages":[{"role":"user","content":"x"}]}'
expect_error 404 null /v1/nothing-here '{}'
st=$(curl -s -m 10 -o "$TMP/e.json" -w '%{http_code}' "$URL/v1/models")
[ "$st" = 401 ] || fail "no API key: status $st"
st=$(curl -s -m 10 -o "$TMP/e.json" -w '%{http_code}' -H 'Authorization: Bearer wrong' "$URL/v1/models")
[ "$st" = 401 ] || fail "wrong API key: status $st"
[ "$(jget 'j.error.type' "$TMP/e.json")" = authentication_error ] || fail "401 body: $(cat "$TMP/e.json")"
st=$(curl -s -m 10 -o "$TMP/e.json" -D "$TMP/e.hdr" -w '%{http_code}' -H "Authorization: Bearer $KEY" "$URL/v1/chat/completions")
[ "$st" = 405 ] || fail "GET chat: status $st"
grep -qi '^allow: POST' "$TMP/e.hdr" || fail "405 without Allow: POST"
head -c 100000 /dev/zero | tr '\0' 'a' > "$TMP/big"
st=$(curl -s -m 20 -o "$TMP/e.json" -w '%{http_code}' -H "Authorization: Bearer $KEY" --data-binary @"$TMP/big" "$URL/v1/completions")
[ "$st" = 413 ] || fail "huge body: status $st"
st=$(curl -s -m 20 -o "$TMP/e.json" -w '%{http_code}' -H "Authorization: Bearer $KEY" -H 'Transfer-Encoding: chunked' \
    --data-binary @"$TMP/big" "$URL/v1/completions")
[ "$st" = 413 ] || fail "huge chunked body: status $st"

# ---------------------------------------------------------------- hostile input; the server still answers
printf '{"model":"tiny-v3","prompt":"\377\376"}' > "$TMP/badutf8"
st=$(curl -s -m 10 -o "$TMP/e.json" -w '%{http_code}' -H "Authorization: Bearer $KEY" --data-binary @"$TMP/badutf8" "$URL/v1/completions")
[ "$st" = 400 ] || fail "invalid UTF-8: status $st"
head -c 3000 /dev/urandom > "$TMP/garbage"
st=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" --data-binary @"$TMP/garbage" "$URL/v1/chat/completions")
[ "$st" = 400 ] || fail "random bytes: status $st"
st=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" -X POST "$URL/v1/chat/completions")
[ "$st" = 400 ] || fail "empty body: status $st"
st=$(post /v1/chat/completions '{"model":"tiny-v3","messages":[{"role":"user","content":"x"}],"max_tokens":1,"n":1,"stop":["a","b","c","d","e","f","g","h","i"]}' /dev/null)
[ "$st" = 400 ] || fail "9 stop strings: status $st"
[ "$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$URL/health")" = 200 ] || fail "/health after hostile input"

# ---------------------------------------------------------------- 16 concurrent requests
i=0 jobs=""
while [ $i -lt 16 ]; do
    if [ $((i % 2)) -eq 0 ]; then
        post /v1/completions "$CMPL_BODY" "$TMP/c$i.json" > "$TMP/c$i.st" &
    else
        post /v1/chat/completions "$SBODY" "$TMP/c$i.json" -N > "$TMP/c$i.st" &
    fi
    jobs="$jobs $!"
    i=$((i + 1))
done
for j in $jobs; do wait "$j"; done
i=0
while [ $i -lt 16 ]; do
    [ "$(cat "$TMP/c$i.st")" = 200 ] || fail "concurrent request $i: status $(cat "$TMP/c$i.st")"
    if [ $((i % 2)) -eq 0 ]; then
        [ "$(jget 'j.choices[0].text' "$TMP/c$i.json")" = "$(cat "$TMP/cmpl.txt")" ] || fail "concurrent request $i: text differs from solo"
    else
        tail -c 200 "$TMP/c$i.json" | grep -q 'data: \[DONE\]' || fail "concurrent stream $i: no [DONE]"
    fi
    i=$((i + 1))
done

# ---------------------------------------------------------------- disconnect: pages come back
curl -s -N -m 2 -H "Authorization: Bearer $KEY" --data-binary \
    '{"model":"tiny-v3","prompt":"x","max_tokens":240,"ignore_eos":true,"stream":true}' "$URL/v1/completions" > /dev/null 2>&1
i=0 freed=no
limit=$((50 * ${MLASERVE_TEST_TIME_SCALE:-1}))   # 5 s, longer under the sanitizers
while [ $i -lt $limit ]; do
    curl -s -m 5 "$URL/metrics" > "$TMP/metrics.txt"
    total=$(sed -n 's/^mlaserve:kv_pages_total \([0-9]*\).*/\1/p' "$TMP/metrics.txt")
    free=$(sed -n 's/^mlaserve:kv_pages_free \([0-9]*\).*/\1/p' "$TMP/metrics.txt")
    run=$(sed -n 's/^mlaserve:num_requests_running \([0-9]*\).*/\1/p' "$TMP/metrics.txt")
    if [ -n "$total" ] && [ "$total" = "$free" ] && [ "$run" = 0 ]; then freed=yes; break; fi
    sleep 0.1
    i=$((i + 1))
done
[ $freed = yes ] || fail "after a client disconnect the KV pages did not return (total=$total free=$free running=$run)"
for m in mlaserve:time_to_first_token_seconds_count mlaserve:e2e_request_latency_seconds 'mlaserve:http_requests_total{code="200"}' \
    mlaserve:generation_tokens_total 'mlaserve:request_success_total{finished_reason="abort"}'; do
    grep -qF "$m" "$TMP/metrics.txt" || fail "/metrics lacks $m"
done

# ---------------------------------------------------------------- the official SDK
if [ -f "$ROOT/node_modules/openai/package.json" ]; then
    MLASERVE_BASE_URL="$URL/v1" MLASERVE_API_KEY=$KEY MLASERVE_MODEL_NAME=$NAME \
        timeout 300 node "$ROOT/test/integration/openai_sdk.mjs" || fail "openai SDK test"
else
    fail "node_modules/openai missing (npm ci)"
fi
[ "$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$URL/health")" = 200 ] || fail "/health at the end"
kill -0 "$MAIN_PID" 2>/dev/null || fail "main server died"

# ---------------------------------------------------------------- queue full, graceful stop
start_server "$TMP/small" --max-num-seqs 1 --max-queue 1 --log-format json || fail "small server did not start"
SURL=http://127.0.0.1:$SPORT
i=0 jobs=""
while [ $i -lt 4 ]; do
    curl -s -m 120 -o "$TMP/q$i.json" -w '%{http_code}' -D "$TMP/q$i.hdr" --data-binary \
        '{"model":"tiny-v3","prompt":"x","max_tokens":40,"ignore_eos":true}' "$SURL/v1/completions" > "$TMP/q$i.st" &
    jobs="$jobs $!"
    i=$((i + 1))
done
for j in $jobs; do wait "$j"; done
n429=$(cat "$TMP"/q*.st | tr ' ' '\n' | grep -c 429)
[ "$n429" -ge 1 ] || fail "queue of 1, 4 requests: no 429 ($(cat "$TMP"/q*.st))"
for i in 0 1 2 3; do
    if [ "$(cat "$TMP/q$i.st")" = 429 ]; then
        grep -qi '^retry-after:' "$TMP/q$i.hdr" || fail "429 without Retry-After"
        [ "$(jget 'j.error.code' "$TMP/q$i.json")" = queue_full ] || fail "429 body: $(cat "$TMP/q$i.json")"
    fi
done
head -1 "$TMP/small.err" | grep -q '^{"ts":' || fail "--log-format json: $(head -1 "$TMP/small.err")"
# SIGTERM while a stream runs: the stream completes, the process exits 0, the port closes.
# No new work is taken once the drain starts: a client that had a kept-alive connection
# (node: one keep-alive socket, a request before the signal and one after it) finds it
# closed and the port refusing (libmicrohttpd closes idle connections at quiesce), or,
# if its request raced the drain, gets 503 shutting_down with Connection: close.
curl -s -N -m 60 --data-binary '{"model":"tiny-v3","prompt":"x","max_tokens":400,"ignore_eos":true,"stream":true}' \
    "$SURL/v1/completions" > "$TMP/drain.txt" &
CURL_PID=$!
sleep 0.3
SPID="$SPID" SURL="$SURL" node -e '
const http = require("http");
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const body = JSON.stringify({ model: "tiny-v3", prompt: "x", max_tokens: 2 });
const post = () => new Promise((ok, bad) => {
  const r = http.request(process.env.SURL + "/v1/completions", { method: "POST", agent,
    headers: { "Content-Type": "application/json" } }, (res) => {
    let t = ""; res.on("data", (d) => (t += d)); res.on("end", () => ok({ res, t }));
  });
  r.on("error", bad); r.end(body);
});
(async () => {
  const a = await post();
  if (a.res.statusCode !== 200) throw new Error("before the drain: HTTP " + a.res.statusCode);
  process.kill(Number(process.env.SPID), "SIGTERM");
  await new Promise((r) => setTimeout(r, 200));
  let b;
  try { b = await post(); } catch (e) {
    if (e.code === "ECONNREFUSED" || e.code === "ECONNRESET") return; /* closed: the expected case */
    throw e;
  }
  const code = JSON.parse(b.t).error?.code;
  if (b.res.statusCode !== 503 || code !== "shutting_down") throw new Error("during the drain: " + b.res.statusCode + " " + b.t);
  if (b.res.headers.connection !== "close") throw new Error("drain 503 without Connection: close: " + JSON.stringify(b.res.headers));
})().catch((e) => { console.error(e.message); process.exit(1); });
' 2> "$TMP/late.err" || fail "request on a kept-alive connection during the drain: $(cat "$TMP/late.err")"
i=0
while kill -0 "$SPID" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if kill -0 "$SPID" 2>/dev/null; then
    fail "server still running 30 s after SIGTERM"
else
    wait "$SPID"
    rc=$?
    [ $rc -eq 0 ] || fail "exit status after SIGTERM: $rc"
fi
wait "$CURL_PID"
tail -c 100 "$TMP/drain.txt" | grep -q 'data: \[DONE\]' || fail "in-flight stream did not finish during the drain"
[ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$SURL/health")" = 000 ] || fail "port still open after stop"

# ---------------------------------------------------------------- usage errors
"$BIN" serve > /dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "serve without --model: exit $rc, want 2"
"$BIN" serve --model "$MODEL" --port 99999 > /dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "bad --port: exit $rc, want 2"
"$BIN" serve --model "$MODEL" --log-format xml > /dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "bad --log-format: exit $rc, want 2"
timeout 60 "$BIN" serve --model "$TMP/nonexistent" --port 0 > /dev/null 2> "$TMP/load.err"; rc=$?
[ $rc -eq 1 ] || fail "missing model dir: exit $rc, want 1"
grep -q nonexistent "$TMP/load.err" || fail "load failure does not name the path: $(cat "$TMP/load.err")"
timeout 60 "$BIN" serve --model "$MODEL" --port "$PORT" > /dev/null 2> "$TMP/bind.err"; rc=$?
[ $rc -eq 1 ] || fail "port in use: exit $rc, want 1"

# the main server, after all of the above, stops cleanly (exit 0; under ASan this is also the leak check)
kill -TERM "$MAIN_PID"
i=0
while kill -0 "$MAIN_PID" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if kill -0 "$MAIN_PID" 2>/dev/null; then
    fail "main server still running 30 s after SIGTERM"
else
    wait "$MAIN_PID"
    rc=$?
    [ $rc -eq 0 ] || fail "main server exit status after SIGTERM: $rc: $(tail -5 "$TMP/main.err")"
fi

[ $fails -eq 0 ] && echo "server.sh: all checks passed"
[ $fails -eq 0 ]
