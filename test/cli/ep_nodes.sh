#!/bin/sh
# test/cli/ep_nodes.sh — expert parallelism over several processes ("nodes") on
# this machine, through the TCP rendezvous and cpu/comm_tcp (issue #5):
#
#  1. `logits --nnodes 2` with --ep 1 and --ep 2 per node (2 and 4 ranks in all,
#     contiguous and a non-contiguous placement) on every tiny-v3 golden prompt:
#     output and last logits bitwise equal to one process with --ep 1; the
#     worker exits 0 once node 0 is done.
#  2. `generate --nnodes 2` equals one process (greedy).
#  3. `serve --nnodes 2` (node 0 serves HTTP, node 1 runs `serve --node-rank 1`
#     and takes sequences from node 0): 16 concurrent completions give the
#     texts of a one-process server, 8 chat requests with logprobs (half
#     streamed) the same text and logprob bits (--batch-invariant on both);
#     both nodes ran sequences; node 0's /metrics per-expert rows (node 1's
#     experts included) equal the one-process server's; 6 streams aborted midway free their pages on
#     both nodes; SIGTERM on node 0 stops the worker too (exit 0).
#  4. Node 1 killed (SIGKILL) under load (requests on both nodes): node 0's
#     in-flight requests end with a 500 and node 0 exits 1 naming rank 1 — no hang.
#  5. A worker whose queue is full refuses the requests node 0 hands it: the
#     clients get a 429 with Retry-After (streamed requests too, before any
#     byte of the stream), the others are served, node 0 keeps serving.
#  6. Bad launches fail on every node with a message: a node that never comes
#     (rendezvous timeout naming it), a different model, a different --ep,
#     --node-rank outside --nnodes.
# Needs MLASERVE_BIN, MLASERVE_TEST_MODELS, MLASERVE_GOLDEN, curl, node.
set -u
SCALE=${MLASERVE_TEST_TIME_SCALE:-1}
BIN=${MLASERVE_BIN:?}
MODEL=${MLASERVE_TEST_MODELS:?}/tiny-v3
. "$(dirname "$0")/lib/server.sh"
. "$(dirname "$0")/lib/ep_requests.sh"
ok() { echo "ok: $*"; }
free_port() { node -e 'const s=require("net").createServer().listen(0,()=>{console.log(s.address().port);s.close()})'; }

# worker LOG ARGS...: a node >= 1 in the background (WPID); its exit status goes to LOG.rc
worker() {
    log=$1
    shift
    ( "$BIN" "$@" > /dev/null 2> "$log.err"; echo $? > "$log.rc" ) &
    WPID=$!
    PIDS="$PIDS $WPID"
}
# wait_worker LOG: the worker's exit status (waits 30 s at most; 124 if still running)
wait_worker() {
    k=0
    while [ ! -s "$1.rc" ] && [ $k -lt $((300 * SCALE)) ]; do sleep 0.1; k=$((k + 1)); done
    [ -s "$1.rc" ] && cat "$1.rc" || echo 124
}

# ---- 1. logits across nodes
echo '[1,3,0,2,1,3,0,2,1,3,0,2,1,3,0,2]' > "$TMP/four.place"
n=0
for res in "$MLASERVE_GOLDEN/tiny-v3/results/"*.json; do
    ids=$(node -e 'console.log(require(process.argv[1]).ids.join(","))' "$res")
    "$BIN" logits --model "$MODEL" --ids "$ids" --top 20 --greedy 16 --threads 2 --last-logits "$TMP/ref.bin" \
        > "$TMP/ref.json" || fail "logits --ep 1 failed"
    for shape in "1" "2" "2 four"; do
        set -- $shape
        ep=$1
        place=""
        [ $# -gt 1 ] && place="--ep-placement $TMP/$2.place"
        port=$(free_port)
        common="logits --model $MODEL --ids $ids --top 20 --greedy 16 --threads 1 --ep $ep $place --nnodes 2 --master-port $port --rendezvous-timeout $((30 * SCALE))"
        worker "$TMP/w" $common --node-rank 1
        "$BIN" $common --node-rank 0 --last-logits "$TMP/n.bin" > "$TMP/n.json" 2> "$TMP/n.err" || fail "node 0: $(cat "$TMP/n.err")"
        wrc=$(wait_worker "$TMP/w")
        rm -f "$TMP/w.rc"
        [ "$wrc" = 0 ] || fail "$(basename "$res") --ep $ep x 2 nodes: worker exit $wrc: $(cat "$TMP/w.err")"
        if cmp -s "$TMP/ref.json" "$TMP/n.json" && cmp -s "$TMP/ref.bin" "$TMP/n.bin"; then n=$((n + 1))
        else fail "$(basename "$res") --ep $ep $place x 2 nodes differs from one process"; fi
    done
done
[ $n -gt 0 ] && ok "logits over 2 nodes (2 and 4 ranks, two placements) == one process, bitwise ($n runs)"

# ---- 2. generate across nodes
"$BIN" generate --model "$MODEL" --prompt "The quick brown fox" --max-tokens 24 --temperature 0 --threads 2 --no-stats \
    > "$TMP/g1" 2>/dev/null || fail "generate failed"
port=$(free_port)
worker "$TMP/gw" generate --model "$MODEL" --threads 1 --nnodes 2 --node-rank 1 --master-port $port
"$BIN" generate --model "$MODEL" --prompt "The quick brown fox" --max-tokens 24 --temperature 0 --threads 1 --no-stats \
    --nnodes 2 --master-port $port > "$TMP/g2" 2>/dev/null || fail "generate node 0 failed"
[ "$(wait_worker "$TMP/gw")" = 0 ] || fail "generate worker: $(cat "$TMP/gw.err")"
[ -s "$TMP/g1" ] && cmp -s "$TMP/g1" "$TMP/g2" && ok "generate over 2 nodes == one process" ||
    fail "generate differs: '$(cat "$TMP/g1")' vs '$(cat "$TMP/g2")'"

# ---- 3. the server over 2 nodes: node 1 runs sequences too
# lp_requests FILE PORT: 8 concurrent chat completions with logprobs (half streamed) -> [{text, logprobs}];
# each with a logit_bias (odd ones force " world", id 2058, even ones ban " cultura", id 39883), and
# 1 and 5 with stop_token_ids [2058] and min_tokens 3 (so: three other tokens, then " world"), and the
# non-streamed ones with prompt_logprobs 2 (ranks included), which must reach the node that runs the
# sequence and come back
lp_requests() {
    node - "$1" "$2" <<'JS'
const [file, port] = process.argv.slice(2);
const words = 'red green blue cyan magenta yellow black white'.split(' ');
const one = async i => {
  const body = {model: 'tiny-v3', temperature: 0, max_tokens: 6 + i * 3, logprobs: true, top_logprobs: 2,
    stream: i % 2 === 1, messages: [{role: 'user', content: words.slice(0, 1 + i).join(' ')}],
    logit_bias: i % 2 ? {2058: 100} : {39883: -100}, ...(i % 4 === 1 ? {stop_token_ids: [2058], min_tokens: 3} : {}),
    ...(i % 2 ? {} : {prompt_logprobs: 2})};
  const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`,
    {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  if (res.status !== 200) throw new Error(`status ${res.status}: ${await res.text()}`);
  if (!body.stream) {
    const j = await res.json();
    if (!j.prompt_logprobs || j.prompt_logprobs.slice(1).some(e => Object.values(e).some(v => !(v.rank >= 1))))
      throw new Error(`request ${i}: prompt_logprobs without ranks: ${JSON.stringify(j.prompt_logprobs)}`);
    return {text: j.choices[0].message.content, lp: j.choices[0].logprobs.content, pl: j.prompt_logprobs};
  }
  let text = '', lp = [];
  for (const line of (await res.text()).split('\n')) {
    if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
    const c = JSON.parse(line.slice(6)).choices[0];
    if (!c) continue;
    text += c.delta.content || '';
    if (c.logprobs) lp = lp.concat(c.logprobs.content);
  }
  return {text, lp};
};
Promise.all(Array.from({length: 8}, (_, i) => one(i).then(r => {
  if (i % 4 === 3 && r.text !== ' world'.repeat(6 + i * 3)) throw new Error(`request ${i}: logit_bias ignored: ${r.text}`);
  if (i % 4 === 1 && (r.lp.length !== 4 || r.lp[3].token !== ' world' || r.lp.slice(0, 3).some(e => e.token === ' world')))
    throw new Error(`request ${i}: stop_token_ids / min_tokens ignored: ${JSON.stringify(r.lp.map(e => e.token))}`);
  return r;
}))).then(r => require('fs').writeFileSync(file, JSON.stringify(r)), e => { console.error(e.message); process.exit(1); });
JS
}
# aborts PORT: 6 streams cut after their first chunks
aborts() {
    node - "$1" <<'JS'
const port = process.argv[2];
Promise.all(Array.from({length: 6}, async (_, i) => {
  const ac = new AbortController();
  const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, {method: 'POST', signal: ac.signal,
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({model: 'tiny-v3', prompt: 'go on ' + i, max_tokens: 3000, ignore_eos: true, stream: true})});
  const rd = res.body.getReader();
  await rd.read(); await rd.read();
  ac.abort();
})).catch(() => {}).then(() => process.exit(0));
JS
}
start_server "$TMP/one" --no-prefix-caching --batch-invariant || exit 1
P1=$SPORT
requests "$TMP/r1" $P1 || fail "one-process server: requests failed"
lp_requests "$TMP/l1" $P1 || fail "one-process server: logprob requests failed"
port=$(free_port)
worker "$TMP/sw" serve --model "$MODEL" --threads 1 --nnodes 2 --node-rank 1 --master-port $port --no-prefix-caching \
    --batch-invariant
start_server "$TMP/two" --no-prefix-caching --batch-invariant --threads 1 --nnodes 2 --master-port $port || exit 1
P2=$SPORT
N0=$SPID
requests "$TMP/r2" $P2 || fail "2-node server: requests failed"
cmp -s "$TMP/r1" "$TMP/r2" && ok "16 concurrent requests: 2 nodes == one process" || fail "2-node texts differ"
lp_requests "$TMP/l2" $P2 || fail "2-node server: logprob requests failed"
cmp -s "$TMP/l1" "$TMP/l2" && ok "8 chat requests with logprobs (4 streamed, 4 with prompt_logprobs): 2 nodes == one process, bitwise" ||
    fail "2-node logprobs differ"
# Node 1's counters reach node 0 with its stats (every 50 ms), possibly after
# the last event of a request: poll (5 s at most) rather than read once.
k=0
while :; do
    r0=$(metric $P2 'dp_rank_requests_finished_total{rank="0"}' | awk '{print $2}')
    r1=$(metric $P2 'dp_rank_requests_finished_total{rank="1"}' | awk '{print $2}')
    [ $((${r0:-0} + ${r1:-0})) -ge 24 ] || [ $k -ge $((50 * SCALE)) ] && break
    sleep 0.1
    k=$((k + 1))
done
[ "${r0:-0}" -gt 0 ] && [ "${r1:-0}" -gt 0 ] && [ $((r0 + r1)) -eq 24 ] &&
    ok "both nodes ran sequences (rank 0: $r0, rank 1 on node 1: $r1)" || fail "rank request counts: '$r0' '$r1'"
curl -s "http://127.0.0.1:$P1/metrics" | grep '^mlaserve:expert_tokens_total{' > "$TMP/x1"
k=0
while :; do
    curl -s "http://127.0.0.1:$P2/metrics" | grep '^mlaserve:expert_tokens_total{' > "$TMP/x2"
    cmp -s "$TMP/x1" "$TMP/x2" || [ $k -ge $((50 * SCALE)) ] && break
    sleep 0.1
    k=$((k + 1))
done
hi=$(awk -F'"' '$2 >= 8 {split($3, v, " "); s += v[2]} END {print s + 0}' "$TMP/x2")
[ -s "$TMP/x1" ] && cmp -s "$TMP/x1" "$TMP/x2" && [ "$hi" -gt 0 ] &&
    ok "/metrics per-expert rows on node 0 include node 1's experts (8-15: $hi rows), equal to one process" ||
    fail "per-expert rows differ from one process (node 1's experts 8-15: $hi rows): $(diff "$TMP/x1" "$TMP/x2" | head -4)"
aborts $P2
k=0
while [ $k -lt $((50 * SCALE)) ]; do
    busy=$(metric $P2 'dp_rank_requests_running' | awk '{s += $2} END {print s + 0}')
    free=$(metric $P2 'dp_rank_kv_pages_free' | awk '{s += $2} END {print s + 0}')
    done_n=$(metric $P2 'dp_rank_requests_finished_total' | awk '{s += $2} END {print s + 0}')
    [ "$busy" = 0 ] && [ "$free" = 512 ] && [ "$done_n" = 30 ] && break
    sleep 0.1
    k=$((k + 1))
done
[ "$busy" = 0 ] && [ "$free" = 512 ] && [ "$done_n" = 30 ] &&
    ok "6 aborted streams ended and every rank's pages are free again (within $((k * 100)) ms of the aborts)" ||
    fail "after the aborts: running $busy, free pages $free of 512, finished $done_n of 30"
kill -TERM $N0
wait $N0
[ $? = 0 ] || fail "node 0 did not exit 0 on SIGTERM"
wrc=$(wait_worker "$TMP/sw")
[ "$wrc" = 0 ] && grep -q "node 0 stopped the world" "$TMP/sw.err" && ok "SIGTERM on node 0 stops node 1 too (exit 0)" ||
    fail "worker after node 0 stopped: exit $wrc, $(cat "$TMP/sw.err")"

# ---- 4. node 1 dies under load
port=$(free_port)
worker "$TMP/kw" serve --model "$MODEL" --threads 1 --nnodes 2 --node-rank 1 --master-port $port
KW=$WPID
start_server "$TMP/kill" --threads 1 --nnodes 2 --master-port $port || exit 1
P3=$SPORT
N0=$SPID
CURLS=""
for i in 1 2 3 4; do
    curl -s -m $((60 * SCALE)) -o "$TMP/k.$i" -w '%{http_code}' "http://127.0.0.1:$P3/v1/completions" \
        -H 'Content-Type: application/json' \
        -d '{"model":"tiny-v3","prompt":"keep going","max_tokens":2000,"temperature":0,"ignore_eos":true}' \
        > "$TMP/k.$i.code" &
    CURLS="$CURLS $!"
done
sleep 1
pkill -KILL -P $KW 2>/dev/null # the mlaserve under the worker's subshell
for p in $CURLS; do wait "$p"; done
k=0
while kill -0 $N0 2>/dev/null && [ $k -lt $((300 * SCALE)) ]; do sleep 0.1; k=$((k + 1)); done
if kill -0 $N0 2>/dev/null; then fail "node 0 still running 30 s after node 1 died"
else
    wait $N0
    src=$?
    [ $src = 1 ] && grep -q "lost its connection to rank 1 (node 1)" "$TMP/kill.err" &&
        ok "node 1 killed: node 0 exits 1 naming rank 1 / node 1" || fail "node 0 exit $src: $(tail -3 "$TMP/kill.err")"
fi
bad=0
for i in 1 2 3 4; do
    [ "$(cat "$TMP/k.$i.code")" = 500 ] || { bad=1; echo "request $i: $(cat "$TMP/k.$i.code") $(head -c 200 "$TMP/k.$i")"; }
done
[ $bad = 0 ] && ok "in-flight requests ended with a 500" || fail "in-flight requests after node 1 died"

# ---- 5. a worker's full queue: node 0 answers 429 (streamed or not) and keeps serving
port=$(free_port)
worker "$TMP/qw" serve --model "$MODEL" --threads 1 --nnodes 2 --node-rank 1 --master-port $port --max-num-seqs 1 \
    --max-queue 1
start_server "$TMP/q" --threads 1 --nnodes 2 --master-port $port --max-num-seqs 1 || exit 1
P4=$SPORT
CURLS=""
for i in 1 2 3 4 5 6 7 8; do
    stream=$([ $((i % 2)) = 0 ] && echo true || echo false)
    curl -s -m $((120 * SCALE)) -D "$TMP/q.$i.h" -o "$TMP/q.$i" -w '%{http_code}' "http://127.0.0.1:$P4/v1/completions" \
        -H 'Content-Type: application/json' \
        -d '{"model":"tiny-v3","prompt":"queue '$i'","max_tokens":300,"ignore_eos":true,"stream":'$stream'}' \
        > "$TMP/q.$i.code" &
    CURLS="$CURLS $!"
done
for p in $CURLS; do wait "$p"; done
n200=0 n429=0 s429=0 bad=0
for i in 1 2 3 4 5 6 7 8; do
    case "$(cat "$TMP/q.$i.code")" in
    200) n200=$((n200 + 1)) ;;
    429) if grep -q '"code": *"queue_full"' "$TMP/q.$i" && grep -qi '^retry-after: 1' "$TMP/q.$i.h"; then
             n429=$((n429 + 1)); [ $((i % 2)) = 0 ] && s429=$((s429 + 1))
         else bad=1; echo "request $i: 429 without queue_full / Retry-After: $(head -c 200 "$TMP/q.$i")"; fi ;;
    *) bad=1; echo "request $i: $(cat "$TMP/q.$i.code") $(head -c 200 "$TMP/q.$i")" ;;
    esac
done
[ $bad = 0 ] && [ $n429 -gt 0 ] && [ $n200 -gt 0 ] &&
    ok "a worker's full queue is a 429 on node 0 ($n429 of 8, $s429 of them streamed; $n200 served)" ||
    fail "worker queue full: $n200 x 200, $n429 x 429"
code=$(curl -s -m $((60 * SCALE)) -o "$TMP/q.after" -w '%{http_code}' "http://127.0.0.1:$P4/v1/completions" \
    -H 'Content-Type: application/json' -d '{"model":"tiny-v3","prompt":"after","max_tokens":4}')
[ "$code" = 200 ] && kill -0 $SPID 2>/dev/null && ok "node 0 keeps serving after the refusals" ||
    fail "after the refusals: $code $(head -c 200 "$TMP/q.after")"

# ---- 6. bad launches
port=$(free_port)
"$BIN" logits --model "$MODEL" --ids 1,2,3 --nnodes 2 --master-port $port --rendezvous-timeout 2 > /dev/null 2> "$TMP/b.err"
rc=$?
[ $rc = 1 ] && grep -q "node(s) 1 of 2 did not join within 2.0 s" "$TMP/b.err" && ok "a missing node is named at the timeout" ||
    fail "missing node: exit $rc, $(cat "$TMP/b.err")"
port=$(free_port)
worker "$TMP/mw" logits --model "$MLASERVE_TEST_MODELS/tiny-v2" --threads 1 --nnodes 2 --node-rank 1 --master-port $port
"$BIN" logits --model "$MODEL" --ids 1,2,3 --threads 1 --nnodes 2 --master-port $port > /dev/null 2> "$TMP/m.err"
rc=$?
wrc=$(wait_worker "$TMP/mw")
[ $rc = 1 ] && [ "$wrc" = 1 ] && grep -q "node 1 loaded a different model" "$TMP/m.err" &&
    grep -q "node 0 loaded a different model" "$TMP/mw.err" && ok "a different model fails both nodes, named" ||
    fail "model mismatch: $rc/$wrc: $(cat "$TMP/m.err" "$TMP/mw.err")"
port=$(free_port)
worker "$TMP/ew" logits --model "$MODEL" --threads 1 --ep 2 --nnodes 2 --node-rank 1 --master-port $port
"$BIN" logits --model "$MODEL" --ids 1,2,3 --threads 1 --nnodes 2 --master-port $port > /dev/null 2> "$TMP/e.err"
rc=$?
wrc=$(wait_worker "$TMP/ew")
[ $rc = 1 ] && [ "$wrc" = 1 ] && grep -q "node 1 runs --ep 2, node 0 --ep 1" "$TMP/e.err" &&
    ok "a different --ep fails both nodes, named" || fail "--ep mismatch: $rc/$wrc: $(cat "$TMP/e.err" "$TMP/ew.err")"
"$BIN" logits --model "$MODEL" --ids 1,2,3 --nnodes 2 --node-rank 2 > /dev/null 2> "$TMP/r.err"
rc=$?
[ $rc = 1 ] && grep -q "node-rank 2 is outside 0..1" "$TMP/r.err" && ok "--node-rank outside --nnodes is refused" ||
    fail "--node-rank 2: exit $rc, $(cat "$TMP/r.err")"

[ $fails -eq 0 ] && echo "ep_nodes: all passed" || echo "ep_nodes: $fails failed"
[ $fails -eq 0 ]
