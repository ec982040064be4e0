#!/bin/sh
# test/cli/ep.sh — expert parallelism over CPU ranks (issue #5), end to end:
#
#  1. `mlaserve logits --ep 1|2|4` on every golden prompt of tiny-v3 and tiny-v2
#     (16 and 12 routed experts): the whole output (top-20 at every position,
#     32 greedy tokens, per-expert row counts) and the last position's logits are
#     bitwise identical across rank counts and with a non-contiguous placement
#     file, and with a world of one rank (MLASERVE_EP_ONE_RANK_WORLD=1: --ep 1
#     through dispatch, exchanges and combine — what a 1-rank NCCL world runs
#     on a GPU, test/cuda/e2e_golden.sh); the per-expert counts add up to
#     tokens x top-k x MoE layers. (--ep 1 itself is checked against the
#     DeepSeek goldens in logits.sh.)
#  2. `mlaserve generate --ep 2` equals --ep 1 (greedy).
#  3. Bad launches fail with a message: more ranks than experts, a malformed
#     placement, a placement that leaves a rank empty, --ep-placement alone.
#  4. A failing rank (MLASERVE_EP_FAULT=1:3, the engine's test hook) stops
#     `logits` with exit 1 and a message naming the rank — no hang.
#  5. `serve --ep 2` vs `serve --ep 1` (no prefix caching, so both process the
#     same tokens): 16 concurrent requests of mixed prompt and output lengths
#     give identical texts; both ranks got requests; the per-expert counters in
#     /metrics are identical; a request alone (the other rank steps with no
#     tokens all along) also matches.
#  6. `serve --ep 2` with MLASERVE_EP_FAULT=1:30: the in-flight requests end
#     with an error response, the server exits 1 naming rank 1, no hang.
#  7. `serve --ep 2` with prefix caching: a prompt's continuation goes to the
#     rank that computed the prompt (prefix-cache hits) although the other
#     rank has more free pages.
# Needs MLASERVE_BIN, MLASERVE_TEST_MODELS, MLASERVE_GOLDEN, curl, node.
set -u
SCALE=${MLASERVE_TEST_TIME_SCALE:-1}
BIN=${MLASERVE_BIN:?}
MODEL=${MLASERVE_TEST_MODELS:?}/tiny-v3
. "$(dirname "$0")/lib/server.sh"
ok() { echo "ok: $*"; }

# ---- 1. logits across rank counts
echo '[1,0,1,0,1,0,1,0,1,0,1,0,1,0,1,0]' > "$TMP/v3.place"
for m in tiny-v3 tiny-v2; do
    for res in "$MLASERVE_GOLDEN/$m/results/"*.json; do
        p=$(basename "$res" .json)
        ids=$(node -e 'console.log(require(process.argv[1]).ids.join(","))' "$res")
        for ep in 1 2 4; do
            "$BIN" logits --model "$MLASERVE_TEST_MODELS/$m" --ids "$ids" --top 20 --greedy 32 --expert-counts \
                --threads 2 --ep $ep --last-logits "$TMP/last.$ep" > "$TMP/out.$ep" 2> "$TMP/err.$ep" ||
                fail "$m/$p --ep $ep: exit $? ($(head -c 300 "$TMP/err.$ep"))"
        done
        if [ $m = tiny-v3 ]; then
            "$BIN" logits --model "$MLASERVE_TEST_MODELS/$m" --ids "$ids" --top 20 --greedy 32 --expert-counts \
                --threads 2 --ep 2 --ep-placement "$TMP/v3.place" --last-logits "$TMP/last.p" > "$TMP/out.p" ||
                fail "$m/$p placement file: exit $?"
        else
            cp "$TMP/last.1" "$TMP/last.p"; cp "$TMP/out.1" "$TMP/out.p"
        fi
        MLASERVE_EP_ONE_RANK_WORLD=1 "$BIN" logits --model "$MLASERVE_TEST_MODELS/$m" --ids "$ids" --top 20 --greedy 32 \
            --expert-counts --threads 2 --last-logits "$TMP/last.w" > "$TMP/out.w" || fail "$m/$p one-rank world: exit $?"
        same=1
        for v in 2 4 p w; do
            cmp -s "$TMP/out.1" "$TMP/out.$v" || { same=0; fail "$m/$p: --ep $v output differs from --ep 1"; }
            cmp -s "$TMP/last.1" "$TMP/last.$v" || { same=0; fail "$m/$p: --ep $v last logits differ from --ep 1"; }
        done
        node - "$TMP/out.1" "$MLASERVE_TEST_MODELS/$m/config.json" "$(echo "$ids" | tr ',' '\n' | wc -l)" <<'JS' ||
const fs = require('fs');
const [out, cfgPath, nPrompt] = process.argv.slice(2);
const o = JSON.parse(fs.readFileSync(out)), c = JSON.parse(fs.readFileSync(cfgPath));
const moe = c.num_hidden_layers - c.first_k_dense_replace;
const tokens = Number(nPrompt) + o.greedy.length - 1;   // the last greedy token is never run
const sum = o.expert_tokens.reduce((a, b) => a + b, 0);
if (o.expert_tokens.length !== c.n_routed_experts || sum !== tokens * c.num_experts_per_tok * moe) {
  console.error(`expert rows ${sum} over ${o.expert_tokens.length} experts, want ${tokens} x ${c.num_experts_per_tok} x ${moe}`);
  process.exit(1);
}
JS
            { same=0; fail "$m/$p: per-expert counts do not add up"; }
        [ $same = 1 ] && ok "$m/$p: --ep 1, 2, 4 (a placement file, a one-rank world) bitwise identical, expert counts add up"
    done
done
# the one-rank world really runs the expert-parallel path: its fault hook fires
MLASERVE_EP_ONE_RANK_WORLD=1 MLASERVE_EP_FAULT=0:2 "$BIN" logits --model "$MODEL" --ids 1,2,3 --greedy 4 --threads 2 \
    > /dev/null 2> "$TMP/err.w1"
rc=$?
[ $rc = 1 ] && grep -q "injected fault" "$TMP/err.w1" && ok "one-rank world: the expert-parallel step runs (its fault hook fires)" ||
    fail "one-rank world: exit $rc, want 1 with the injected fault ($(head -c 200 "$TMP/err.w1"))"

# ---- 2. generate
"$BIN" generate --model "$MODEL" --prompt "The quick brown fox" --max-tokens 24 --temperature 0 --no-stats --ep 1 \
    --threads 2 > "$TMP/g1" && "$BIN" generate --model "$MODEL" --prompt "The quick brown fox" --max-tokens 24 \
    --temperature 0 --no-stats --ep 2 --threads 2 > "$TMP/g2" && cmp -s "$TMP/g1" "$TMP/g2" &&
    ok "generate --ep 2 == --ep 1" || fail "generate --ep 2 differs from --ep 1"

# ---- 3. bad launches
expect_fail() { # NAME PATTERN ARGS...
    name=$1 pat=$2
    shift 2
    "$BIN" logits --model "$MODEL" --ids 1,2,3 --threads 2 "$@" > /dev/null 2> "$TMP/bad.err"
    rc=$?
    if [ $rc -ne 0 ] && grep -q "$pat" "$TMP/bad.err"; then ok "$name: exit $rc, says '$pat'"
    else fail "$name: exit $rc, stderr: $(cat "$TMP/bad.err")"; fi
}
expect_fail "--ep 32 > experts" "every rank needs at least one expert" --ep 32
echo '[0,1,2]' > "$TMP/short.place"
expect_fail "short placement" "expected a JSON array of 16 rank numbers" --ep 2 --ep-placement "$TMP/short.place"
echo '[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]' > "$TMP/empty.place"
expect_fail "rank without experts" "rank 1 owns no expert" --ep 2 --ep-placement "$TMP/empty.place"
echo '[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,9]' > "$TMP/range.place"
expect_fail "rank out of range" "entry 15 must be a rank number" --ep 2 --ep-placement "$TMP/range.place"
expect_fail "placement without --ep" "needs --ep 2 or more" --ep-placement "$TMP/v3.place"
expect_fail "--ep 0" "bad option or value" --ep 0

# ---- 4. a failing rank in logits
MLASERVE_EP_FAULT=1:3 timeout $((30 * SCALE)) "$BIN" logits --model "$MODEL" --ids 1,2,3 --greedy 8 --ep 2 \
    --threads 2 > /dev/null 2> "$TMP/fault.err"
rc=$?
if [ $rc -eq 1 ] && grep -q "rank 1: injected fault" "$TMP/fault.err"; then ok "failing rank: logits exits 1 naming rank 1"
else fail "failing rank: exit $rc, stderr: $(cat "$TMP/fault.err")"; fi

# ---- 5. the server with --ep 2 against --ep 1
. "$(dirname "$0")/lib/ep_requests.sh"

start_server "$TMP/ep1" --no-prefix-caching || exit 1
P1=$SPORT
start_server "$TMP/ep2" --no-prefix-caching --ep 2 || exit 1
P2=$SPORT
grep -q "expert parallel: 2 CPU ranks" "$TMP/ep2.out" && ok "banner names 2 ranks" || fail "banner: $(cat "$TMP/ep2.out")"
requests "$TMP/r1" $P1 || fail "--ep 1 server: requests failed"
requests "$TMP/r2" $P2 || fail "--ep 2 server: requests failed"
cmp -s "$TMP/r1" "$TMP/r2" && ok "16 concurrent requests: --ep 2 texts == --ep 1" || fail "--ep 2 texts differ from --ep 1"
r0=$(metric $P2 'dp_rank_requests_finished_total{rank="0"}' | awk '{print $2}')
r1=$(metric $P2 'dp_rank_requests_finished_total{rank="1"}' | awk '{print $2}')
[ "${r0:-0}" -gt 0 ] && [ "${r1:-0}" -gt 0 ] && [ $((r0 + r1)) -eq 16 ] && ok "both ranks served requests ($r0 + $r1)" ||
    fail "rank request counts: '$r0' '$r1'"
metric $P1 expert_tokens_total > "$TMP/x1"
metric $P2 expert_tokens_total > "$TMP/x2"
[ -s "$TMP/x1" ] && cmp -s "$TMP/x1" "$TMP/x2" && ok "per-expert token counters equal across --ep 1 / --ep 2" ||
    fail "expert counters differ: $(paste "$TMP/x1" "$TMP/x2" | head -5)"
a=$(solo $P1) b=$(solo $P2)
[ -n "$a" ] && [ "$a" = "$b" ] && ok "a request alone on --ep 2 (rank 1 idle) == --ep 1" || fail "solo: '$a' vs '$b'"

# ---- 6. a failing rank stops the server
MLASERVE_EP_FAULT=1:30 start_server "$TMP/fault" --ep 2 || exit 1
P3=$SPORT
FPID=$SPID
CURLS=""
for i in 1 2 3 4; do
    curl -s -m $((60 * SCALE)) -o "$TMP/f.$i" -w '%{http_code}' "http://127.0.0.1:$P3/v1/completions" \
        -H 'Content-Type: application/json' \
        -d '{"model":"tiny-v3","prompt":"keep going","max_tokens":200,"temperature":0,"ignore_eos":true}' \
        > "$TMP/f.$i.code" &
    CURLS="$CURLS $!"
done
for p in $CURLS; do wait "$p"; done
wait_i=0
while kill -0 "$FPID" 2>/dev/null && [ $wait_i -lt $((300 * SCALE)) ]; do sleep 0.1; wait_i=$((wait_i + 1)); done
if kill -0 "$FPID" 2>/dev/null; then fail "server still running 30 s after a rank failed"
else
    wait "$FPID"
    src=$?
    [ $src -eq 1 ] && grep -q "rank 1: injected fault" "$TMP/fault.err" && ok "server exited 1 naming the failed rank" ||
        fail "server exit $src, stderr: $(tail -5 "$TMP/fault.err")"
fi
bad=0
for i in 1 2 3 4; do
    code=$(cat "$TMP/f.$i.code")
    [ "$code" = 500 ] && grep -q "injected fault" "$TMP/f.$i" || { bad=1; echo "request $i: $code $(head -c 200 "$TMP/f.$i")"; }
done
[ $bad = 0 ] && ok "in-flight requests ended with a 500 naming the fault" || fail "in-flight requests after the fault"

# ---- 7. prefix-cache affinity (engine/prefix_affinity.h): a continuation of a prompt goes to
# the rank that computed the prompt, even when the other rank has more free pages
start_server "$TMP/aff" --ep 2 || exit 1
P4=$SPORT
LONG=$(node -e 'console.log(Array.from({length: 150}, (_, i) => "word" + i).join(" "))')
complete() { curl -s -m $((60 * SCALE)) -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P4/v1/completions" \
    -H 'Content-Type: application/json' -d "{\"model\":\"tiny-v3\",\"prompt\":\"$1\",\"max_tokens\":1}"; }
[ "$(complete "$LONG")" = 200 ] || fail "affinity: the first request failed"
# a long request holds rank 0 (ties go to the lowest rank), so rank 1 has more free pages
curl -s -N -m $((120 * SCALE)) -o /dev/null "http://127.0.0.1:$P4/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model":"tiny-v3","prompt":"hold","max_tokens":2000,"stream":true,"ignore_eos":true}' &
HOLD=$!
k=0
while [ "$(metric $P4 'dp_rank_requests_running{rank="0"}' | awk '{print $2}')" != 1 ] && [ $k -lt $((100 * SCALE)) ]; do
    sleep 0.05
    k=$((k + 1))
done
h0=$(metric $P4 'prefix_cache_hits_total' | awk '{print $2}')
[ "$(complete "$LONG and then some more words")" = 200 ] || fail "affinity: the continuation failed"
h1=$(metric $P4 'prefix_cache_hits_total' | awk '{print $2}')
f0=$(metric $P4 'dp_rank_requests_finished_total{rank="0"}' | awk '{print $2}')
f1=$(metric $P4 'dp_rank_requests_finished_total{rank="1"}' | awk '{print $2}')
kill "$HOLD" 2>/dev/null
wait "$HOLD" 2>/dev/null
[ "$f0" = 2 ] && [ "$f1" = 0 ] && [ $((h1 - h0)) -ge 256 ] &&
    ok "a continuation followed its prompt to rank 0 and reused $((h1 - h0)) cached tokens" ||
    fail "affinity: finished rank 0 $f0, rank 1 $f1 (want 2, 0); prefix-cache hits +$((h1 - h0)) (want >= 256)"

[ $fails -eq 0 ] && echo "ep: all passed" || echo "ep: $fails failed"
[ $fails -eq 0 ]
