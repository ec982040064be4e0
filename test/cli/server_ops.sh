#!/bin/sh
# test/cli/server_ops.sh — the operator-facing parts of `mlaserve serve` (issue #6):
# request ids (X-Request-Id echoed or generated, in the access log of that
# request), the JSON access log fields, /health/generate running a real engine
# step, several API keys (--api-key repeated, --api-key-file), the Prometheus
# histograms and their vLLM-mapped names, and the request-head deadline that
# closes a slowloris connection. Expected values are the documented contract
# (docs/operations.md). Needs MLASERVE_BIN, MLASERVE_TEST_MODELS, curl, node.
set -u
BIN=${MLASERVE_BIN:?}
MODEL=${MLASERVE_TEST_MODELS:?}/tiny-v3
. "$(dirname "$0")/lib/server.sh"

printf '# keys for the test\n\n  second-key  \nthird-key\n' > "$TMP/keys"
start_server "$TMP/s" --api-key first-key --api-key-file "$TMP/keys" --log-format json --header-timeout 2 --allowed-origins '*' ||
    { fail "server did not start"; exit 1; }
URL=http://127.0.0.1:$SPORT

# ---- API keys: every configured key works, anything else is 401
for k in first-key second-key third-key; do
    st=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $k" "$URL/v1/models")
    [ "$st" = 200 ] || fail "key $k: status $st"
done
for k in wrong-key "# keys for the test" ""; do
    st=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $k" "$URL/v1/models")
    [ "$st" = 401 ] || fail "key '$k': status $st, want 401"
done
grep -q "3 keys" "$TMP/s.out" || fail "banner does not count the keys: $(grep -i key "$TMP/s.out")"

# ---- request ids: echoed when sent, generated otherwise, in the access log
curl -s -m 60 -D "$TMP/h1" -o "$TMP/b1" -H "Authorization: Bearer first-key" -H "X-Request-Id: trace-abc-123" \
    --data-binary '{"model":"tiny-v3","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"ignore_eos":true}' \
    "$URL/v1/chat/completions" > /dev/null
grep -qi '^x-request-id: trace-abc-123' "$TMP/h1" || fail "X-Request-Id not echoed: $(cat "$TMP/h1")"
curl -s -m 10 -D "$TMP/h2" -o /dev/null "$URL/health"
grep -qiE '^x-request-id: [0-9a-f]{32}' "$TMP/h2" || fail "no generated X-Request-Id: $(cat "$TMP/h2")"
curl -s -m 10 -D "$TMP/h3" -o /dev/null -H 'X-Request-Id: bad id with spaces' "$URL/health"
grep -qiE '^x-request-id: [0-9a-f]{32}' "$TMP/h3" || fail "an invalid X-Request-Id was not replaced: $(cat "$TMP/h3")"
i=0
while ! grep -q '"request_id":"trace-abc-123"' "$TMP/s.err" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
line=$(grep '"request_id":"trace-abc-123"' "$TMP/s.err" | head -1)
for f in '"method":"POST"' '"path":"/v1/chat/completions"' '"status":200' '"prompt_tokens":' '"completion_tokens":5' \
    '"ttft_ms":' '"duration_ms":'; do
    echo "$line" | grep -qF "$f" || fail "access log line lacks $f: $line"
done
# a 401 is logged with its request id too
curl -s -m 10 -o /dev/null -H 'X-Request-Id: denied-1' "$URL/v1/models"
i=0
while ! grep -q '"request_id":"denied-1"' "$TMP/s.err" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
grep '"request_id":"denied-1"' "$TMP/s.err" | grep -q '"status":401' || fail "401 not in the access log with its id"

# ---- /health/generate: a real one-token step
st=$(curl -s -m 60 -o "$TMP/hg" -w '%{http_code}' "$URL/health/generate")
[ "$st" = 200 ] || fail "/health/generate: $st $(cat "$TMP/hg")"
node -e 'const j=JSON.parse(require("fs").readFileSync(process.argv[1]));if(j.status!=="ok"||j.tokens!==1||!(j.latency_ms>0))process.exit(1)' \
    "$TMP/hg" || fail "/health/generate body: $(cat "$TMP/hg")"
curl -s -m 10 "$URL/metrics" > "$TMP/m1"
steps1=$(sed -n 's/^mlaserve:engine_steps_total \([0-9]*\).*/\1/p' "$TMP/m1")
curl -s -m 60 -o /dev/null "$URL/health/generate"
curl -s -m 10 "$URL/metrics" > "$TMP/m2"
steps2=$(sed -n 's/^mlaserve:engine_steps_total \([0-9]*\).*/\1/p' "$TMP/m2")
[ -n "$steps1" ] && [ "$steps2" -gt "$steps1" ] || fail "/health/generate did not step the engine ($steps1 -> $steps2)"

# ---- metrics: vLLM-mapped names, histograms with buckets, per-status counts
curl -s -m 60 -o /dev/null -H "Authorization: Bearer first-key" \
    --data-binary '{"model":"tiny-v3","prompt":"x","max_tokens":6,"ignore_eos":true,"stream":true}' "$URL/v1/completions"
curl -s -m 10 "$URL/metrics" > "$TMP/m3"
for m in 'mlaserve:num_requests_running ' 'mlaserve:num_requests_waiting ' 'mlaserve:kv_cache_usage_perc ' \
    'mlaserve:prompt_tokens_total ' 'mlaserve:generation_tokens_total ' 'mlaserve:num_preemptions_total ' \
    'mlaserve:prefix_cache_queries_total ' 'mlaserve:prefix_cache_hits_total ' \
    'mlaserve:request_success_total{finished_reason="length"} ' \
    'mlaserve:time_to_first_token_seconds_bucket{le="+Inf"} ' 'mlaserve:inter_token_latency_seconds_bucket{le="0.01"} ' \
    'mlaserve:e2e_request_latency_seconds_count ' 'mlaserve:request_prompt_tokens_sum ' \
    'mlaserve:request_generation_tokens_bucket{le="5"} ' 'mlaserve:http_requests_total{code="401"} ' \
    '# TYPE mlaserve:time_to_first_token_seconds histogram'; do
    grep -qF "$m" "$TMP/m3" || fail "/metrics lacks '$m'"
done
# 2 generations finished with "length": e2e count 2+, ITL count >= 4+5 gaps
node -e '
const t=require("fs").readFileSync(process.argv[1],"utf8");
const g=(n)=>{const m=t.match(new RegExp("^"+n.replace(/[{}"+.]/g,"\\$&")+" ([0-9.e+]+)$","m"));return m?Number(m[1]):NaN};
const ok=g("mlaserve:request_success_total{finished_reason=\"length\"}")>=2 && g("mlaserve:e2e_request_latency_seconds_count")>=2
 && g("mlaserve:inter_token_latency_seconds_count")>=9 && g("mlaserve:time_to_first_token_seconds_bucket{le=\"+Inf\"}")===g("mlaserve:time_to_first_token_seconds_count");
process.exit(ok?0:1)' "$TMP/m3" || fail "/metrics counts: $(grep -E 'success|_count' "$TMP/m3")"

# ---- keep-alive on GET and OPTIONS too (libmicrohttpd closes a connection answered on a request's first call)
n=$(curl -sv -m 10 "$URL/health" "$URL/metrics" "$URL/version" 2>&1 | grep -c "Re-using existing connection")
[ "$n" = 2 ] || fail "GET requests did not share the connection ($n reuses of 2)"
n=$(curl -sv -m 10 -X OPTIONS "$URL/v1/models" "$URL/v1/chat/completions" 2>&1 | grep -c "Re-using existing connection")
[ "$n" = 1 ] || fail "OPTIONS requests did not share the connection ($n reuses of 1)"
# a POST refused before its body (401, 404, 405) is answered once the body is read: the connection stays
n=$(curl -sv -m 10 "$URL/v1/chat/completions" -H 'Authorization: Bearer wrong' -d '{"model":"tiny-v3","messages":[]}' \
    --next -s -X POST "$URL/v1/nowhere" -d '{}' --next -s -X POST "$URL/v1/models" -H 'Authorization: Bearer first-key' -d 'x' \
    --next -s "$URL/health" 2>&1 | grep -c -E "Re-using existing connection|< HTTP/1.1 (401|404|405|200)")
[ "$n" = 7 ] || fail "refused POSTs did not keep the connection ($n of 4 answers + 3 reuses)"

# ---- the build: GET /version (no key), the banner, mlaserve_build_info, `mlaserve --version`, all the same
want_version=$(tr -d ' \n\r' < "$(dirname "$0")/../../VERSION")
curl -s -m 10 "$URL/version" > "$TMP/version.json"
ver=$(node -e 'const j=JSON.parse(require("fs").readFileSync(process.argv[1]));console.log(j.version+" "+j.commit)' "$TMP/version.json")
case "$ver" in "$want_version "?*) ;; *) fail "/version: $(cat "$TMP/version.json")" ;; esac
commit=${ver#* }
if git -C "$(dirname "$0")" rev-parse HEAD > /dev/null 2>&1; then # a commit of this repository (HEAD when built)
    git -C "$(dirname "$0")" cat-file -e "${commit%-dirty}^{commit}" 2> /dev/null || fail "/version commit $commit is not a commit here"
fi
[ "$("$BIN" --version)" = "mlaserve $want_version (commit $commit)" ] || fail "--version: $("$BIN" --version)"
grep -q "mlaserve $want_version (commit $commit) serve" "$TMP/s.out" || fail "banner lacks the version: $(head -1 "$TMP/s.out")"
curl -s -m 10 "$URL/metrics" | grep -q "^mlaserve_build_info{version=\"$want_version\",commit=\"$commit\"} 1$" ||
    fail "/metrics lacks mlaserve_build_info"

# ---- CORS (server/cors.h) with --allowed-origins '*': any origin; a preflight needs no key
# hdr FILE NAME: the value of response header NAME in a curl -D dump ("" if absent)
hdr() { tr -d '\r' < "$1" | sed -n "s/^$2: //Ip" | head -1; }
st=$(curl -s -m 10 -o /dev/null -D "$TMP/pre.h" -w '%{http_code}' -X OPTIONS -H 'Origin: https://app.example' \
    -H 'Access-Control-Request-Method: POST' -H 'Access-Control-Request-Headers: authorization,content-type' \
    "$URL/v1/chat/completions")
[ "$st" = 204 ] || fail "CORS preflight: status $st"
[ "$(hdr "$TMP/pre.h" Access-Control-Allow-Origin)" = "*" ] || fail "preflight allow-origin: $(cat "$TMP/pre.h")"
[ "$(hdr "$TMP/pre.h" Access-Control-Allow-Methods)" = "POST, OPTIONS" ] || fail "preflight methods: $(cat "$TMP/pre.h")"
[ "$(hdr "$TMP/pre.h" Access-Control-Allow-Headers)" = "authorization,content-type" ] || fail "preflight headers: $(cat "$TMP/pre.h")"
[ -n "$(hdr "$TMP/pre.h" Access-Control-Max-Age)" ] || fail "preflight max-age: $(cat "$TMP/pre.h")"
st=$(curl -s -m 30 -o "$TMP/cors.json" -D "$TMP/cors.h" -w '%{http_code}' -H 'Origin: https://app.example' \
    -H "Authorization: Bearer first-key" -H 'Content-Type: application/json' \
    -d '{"model":"tiny-v3","messages":[{"role":"user","content":"Hi"}],"max_tokens":2}' "$URL/v1/chat/completions")
[ "$st" = 200 ] && [ "$(hdr "$TMP/cors.h" Access-Control-Allow-Origin)" = "*" ] || fail "CORS request: $st $(cat "$TMP/cors.h")"
hdr "$TMP/cors.h" Access-Control-Expose-Headers | grep -q X-Request-Id || fail "X-Request-Id not exposed: $(cat "$TMP/cors.h")"
curl -s -m 10 -o /dev/null -D "$TMP/nocors.h" -H "Authorization: Bearer first-key" "$URL/v1/models"
[ -z "$(hdr "$TMP/nocors.h" Access-Control-Allow-Origin)" ] || fail "CORS header without an Origin: $(cat "$TMP/nocors.h")"
st=$(curl -s -m 10 -o /dev/null -D "$TMP/opt.h" -w '%{http_code}' -X OPTIONS "$URL/v1/models")
[ "$st" = 204 ] && [ "$(hdr "$TMP/opt.h" Allow)" = "GET, HEAD, OPTIONS" ] || fail "OPTIONS without Origin: $st $(cat "$TMP/opt.h")"
# HEAD on a GET route (load balancer probes): the GET's status and headers, no body
st=$(curl -s -m 10 -I -o "$TMP/head.h" -w '%{http_code} %{size_download}' "$URL/health")
[ "$st" = "200 0" ] && grep -qi '^content-type: application/json' "$TMP/head.h" || fail "HEAD /health: $st $(cat "$TMP/head.h")"
[ "$(curl -s -m 10 -I -o /dev/null -w '%{http_code}' "$URL/v1/completions")" = 405 ] || fail "HEAD on a POST route is not 405"
st=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -X OPTIONS "$URL/no/such/route")
[ "$st" = 404 ] || fail "OPTIONS on an unknown route: $st"

# ---- request-head deadline: a client dripping its headers is cut off after --header-timeout (2 s)
node -e '
const net=require("net");const t0=Date.now();
const s=net.connect(Number(process.argv[1]),"127.0.0.1",()=>{s.write("GET /health HTTP/1.1\r\nHost: x\r\n");
 const iv=setInterval(()=>{try{s.write("X")}catch(e){}},300);s.on("close",()=>{clearInterval(iv);
 const dt=(Date.now()-t0)/1000;console.log(dt.toFixed(1));process.exit(dt>=1.5&&dt<12?0:1)})});
s.on("error",()=>{});setTimeout(()=>{console.log("still open after 15 s");process.exit(1)},15000);' "$SPORT" > "$TMP/slow" ||
    fail "slow request head not closed in time: $(cat "$TMP/slow")"
[ "$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$URL/health")" = 200 ] || fail "/health after the slow client"

kill -TERM "$SPID"
i=0
while kill -0 "$SPID" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
wait "$SPID"; rc=$?
[ $rc -eq 0 ] || fail "exit status after SIGTERM: $rc"

# ---- CORS with a list of origins (vLLM's JSON spelling): listed ones echoed (Vary: Origin), others get no header and a 403 preflight
start_server "$TMP/c" --allowed-origins '["https://app.example", "http://localhost:3000"]' \
    --served-model-name tiny --served-model-name deepseek-chat ||
    { fail "server with --allowed-origins did not start"; exit 1; }
CURL=http://127.0.0.1:$SPORT
grep -q "CORS allowed from https://app.example,http://localhost:3000" "$TMP/c.out" || fail "banner: $(grep CORS "$TMP/c.out")"
curl -s -m 10 -o /dev/null -D "$TMP/l1.h" -H 'Origin: http://localhost:3000' "$CURL/v1/models"
[ "$(hdr "$TMP/l1.h" Access-Control-Allow-Origin)" = "http://localhost:3000" ] && [ "$(hdr "$TMP/l1.h" Vary)" = Origin ] ||
    fail "listed origin: $(cat "$TMP/l1.h")"
curl -s -m 10 -o /dev/null -D "$TMP/l2.h" -H 'Origin: https://evil.example' "$CURL/v1/models"
[ -z "$(hdr "$TMP/l2.h" Access-Control-Allow-Origin)" ] || fail "unlisted origin allowed: $(cat "$TMP/l2.h")"
st=$(curl -s -m 10 -o "$TMP/l3.json" -w '%{http_code}' -X OPTIONS -H 'Origin: https://evil.example' \
    -H 'Access-Control-Request-Method: POST' "$CURL/v1/completions")
[ "$st" = 403 ] && grep -q cors_origin_not_allowed "$TMP/l3.json" || fail "unlisted preflight: $st $(cat "$TMP/l3.json")"
# ---- --served-model-name repeated: every name is accepted and listed; the reply names the one sent
[ "$(curl -s -m 10 "$CURL/v1/models" | node -e 'console.log(JSON.parse(require("fs").readFileSync(0)).data.map(m=>m.id).join(","))')" = \
    "tiny,deepseek-chat" ] || fail "/v1/models with aliases: $(curl -s "$CURL/v1/models")"
[ "$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$CURL/v1/models/deepseek-chat")" = 200 ] || fail "/v1/models/ALIAS"
curl -s -m 30 -H 'Content-Type: application/json' -d '{"model":"deepseek-chat","prompt":"Hi","max_tokens":2}' \
    "$CURL/v1/completions" > "$TMP/alias.json"
[ "$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).model)' "$TMP/alias.json")" = deepseek-chat ] ||
    fail "request by alias: $(cat "$TMP/alias.json")"
grep -q "also served as deepseek-chat" "$TMP/c.out" || fail "banner lacks the alias: $(cat "$TMP/c.out")"
[ "$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    -d '{"model":"tiny-v3","prompt":"Hi","max_tokens":2}' "$CURL/v1/completions")" = 404 ] ||
    fail "the directory name is not served when names are given"
kill -TERM "$SPID"; wait "$SPID"
"$BIN" serve --model "$MODEL" --allowed-origins 'app.example' > /dev/null 2> "$TMP/o.err"; rc=$?
[ $rc -eq 2 ] && grep -q "allowed-origins: 'app.example' is not an origin" "$TMP/o.err" ||
    fail "bad --allowed-origins: exit $rc: $(cat "$TMP/o.err")"

# ---- usage errors
"$BIN" serve --model "$MODEL" --api-key-file "$TMP/none" > /dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "missing --api-key-file: exit $rc, want 2"
printf '# only comments\n\n' > "$TMP/empty"
"$BIN" serve --model "$MODEL" --api-key-file "$TMP/empty" > /dev/null 2> "$TMP/e.err"; rc=$?
[ $rc -eq 2 ] && grep -q "holds no key" "$TMP/e.err" || fail "empty --api-key-file: exit $rc: $(cat "$TMP/e.err")"

[ $fails -eq 0 ] && echo "server_ops: all passed"
exit $((fails > 0))
