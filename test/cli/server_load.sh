#!/bin/sh
# test/cli/server_load.sh — `mlaserve serve` under load, with real clients
# (curl processes for the concurrent streams, node `fetch` for the
# disconnects): the "Must show" items of issue #3 about batching.
#
#  1. 32 concurrent streaming requests (chat and completions, prompts of
#     ~5..300 tokens, 8..64 output tokens, temperature 0, ignore_eos) all end
#     with `data: [DONE]`, finish "length" with usage.completion_tokens ==
#     max_tokens, and each stream's text equals the same request sent alone
#     afterwards (batch invariance; the solo runs also reuse the prefix cache
#     the concurrent run left behind). While they run, /metrics shows several
#     running at once; afterwards running 0, waiting 0 and
#     mlaserve:kv_pages_free == mlaserve:kv_pages_total (prefix-cached pages
#     count as free).
#  2. Disconnect: 10 streams aborted by the client after 3 chunks; within one
#     second of the last abort /metrics shows running 0 and all pages free, 10
#     more cancelled requests, and a normal request still gives its solo text.
#  3. Preemption: a second server with a KV pool of 512 tokens (8 pages) and
#     8 sequences; 8 concurrent requests needing 3..4 pages each (~28 in all,
#     each growing by 2..3 pages while decoding) all complete with the solo
#     text of the first server, and mlaserve:num_preemptions_total > 0.
#  4. --batch-invariant: the 32 requests with logprobs, concurrent == solo bit for bit;
#     `generate --batch-invariant` gives the server's greedy text.
#  5. --bf16-activations --batch-invariant: 8 of them, concurrent == solo bit for bit and unlike
#     part 4's fp32 logprobs (where the CPU has AVX512_BF16; elsewhere the refusal is checked).
# Oracle: the server's own solo output (itself checked against
# `mlaserve generate` in server.sh). Servers on free loopback ports, bounded
# waits, killed on exit; under the sanitizers (MLASERVE_TEST_TIME_SCALE, set by
# scripts/sanitize.sh) the time bounds, the one-second one included, scale by it.
# Needs MLASERVE_BIN, MLASERVE_TEST_MODELS, curl, node.
set -u
SCALE=${MLASERVE_TEST_TIME_SCALE:-1}
BIN=${MLASERVE_BIN:?}
MODEL=${MLASERVE_TEST_MODELS:?}/tiny-v3
. "$(dirname "$0")/lib/server.sh"
T0=$(date +%s)
say() { echo "server_load: $(($(date +%s) - T0)) s: $*"; }


# metric URL NAME: the value of an unlabelled metric ("" if absent)
metric() {
    curl -s -m 5 "$1/metrics" | sed -n "s/^$2 \([0-9.e+]*\).*/\1/p" | head -1
}

# pages_settled URL: running 0, waiting 0, free == total within a second x SCALE (the engine publishes a
# step's numbers before its events, but a cancelled stream's pages return at the next step); prints the
# numbers when not
pages_settled() {
    _k=0
    while [ $_k -lt $((10 * SCALE)) ]; do
        curl -s -m 5 "$1/metrics" > "$TMP/m.txt"
        _t=$(sed -n 's/^mlaserve:kv_pages_total \([0-9]*\).*/\1/p' "$TMP/m.txt")
        _f=$(sed -n 's/^mlaserve:kv_pages_free \([0-9]*\).*/\1/p' "$TMP/m.txt")
        _r=$(sed -n 's/^mlaserve:num_requests_running \([0-9]*\).*/\1/p' "$TMP/m.txt")
        _w=$(sed -n 's/^mlaserve:num_requests_waiting \([0-9]*\).*/\1/p' "$TMP/m.txt")
        [ -n "$_t" ] && [ "$_t" = "$_f" ] && [ "$_r" = 0 ] && [ "$_w" = 0 ] && return 0
        sleep 0.1
        _k=$((_k + 1))
    done
    echo "total=$_t free=$_f running=$_r waiting=$_w"
    return 1
}

# stream URL I OUTPREFIX: sends request I as a curl stream; body in OUTPREFIX$I.sse, status in OUTPREFIX$I.st
stream() {
    curl -s -N -m $((120 * SCALE)) -o "$3$2.sse" -w '%{http_code}' -H 'Content-Type: application/json' \
        --data-binary @"$TMP/req$2.json" "$1$(cat "$TMP/req$2.path")" > "$3$2.st" 2>/dev/null
}

# logprobs.js: lps(file) = every logprob number of a stream, in order, as the server wrote it
cat > "$TMP/logprobs.js" <<'EOF'
const fs = require("fs");
exports.lps = (file) => fs.readFileSync(file, "utf8").split("\n").filter((l) => l.startsWith("data: {")).flatMap((l) =>
  JSON.parse(l.slice(6)).choices.flatMap((c) => !c.logprobs ? [] : c.logprobs.content ? c.logprobs.content.map((e) => e.logprob)
                                                                     : c.logprobs.token_logprobs));
EOF

# same_as_solo CC SOLO FIRST COUNT: streams FIRST..FIRST+COUNT-1 of $TMP/CC* have max_tokens logprobs
# and the text and logprob bits of the same streams in $TMP/SOLO*
same_as_solo() {
    node -e '
const { parse } = require(process.argv[1] + "/sse.js"); const { lps } = require(process.argv[1] + "/logprobs.js");
const fs = require("fs"), [dir, cc, solo] = process.argv.slice(1, 4), first = +process.argv[4], n = +process.argv[5];
const errs = [];
let total = 0;
for (let i = first; i < first + n; i++) {
  const req = JSON.parse(fs.readFileSync(dir + "/req" + i + ".json", "utf8"));
  try {
    const a = parse(dir + "/" + cc + i + ".sse", req.max_tokens), b = parse(dir + "/" + solo + i + ".sse", req.max_tokens);
    const la = lps(dir + "/" + cc + i + ".sse"), lb = lps(dir + "/" + solo + i + ".sse");
    if (a.text !== b.text) errs.push("request " + i + ": text differs from solo");
    if (la.length !== req.max_tokens) errs.push("request " + i + ": " + la.length + " logprobs");
    if (JSON.stringify(la) !== JSON.stringify(lb)) errs.push("request " + i + ": logprobs differ from solo: " +
                                                             JSON.stringify(la.slice(0, 4)) + " vs " + JSON.stringify(lb.slice(0, 4)));
    total += la.length;
  } catch (e) { errs.push("request " + i + ": " + e.message); }
}
console.log("server_load: " + cc + ": " + total + " logprobs of " + n + " concurrent streams compared with their solo runs");
if (errs.length) { console.log(errs.join("\n")); process.exit(1); }
' "$TMP" "$1" "$2" "$3" "$4"
}

# run_streams URL CC SOLO FIRST COUNT: requests FIRST..FIRST+COUNT-1 all at once into $TMP/CC*, then
# one by one into $TMP/SOLO*
run_streams() {
    _i=$4 _jobs=""
    while [ $_i -lt $(($4 + $5)) ]; do
        stream "$1" $_i "$TMP/$2" &
        _jobs="$_jobs $!"
        _i=$((_i + 1))
    done
    for _j in $_jobs; do wait "$_j"; done
    _i=$4
    while [ $_i -lt $(($4 + $5)) ]; do
        stream "$1" $_i "$TMP/$3"
        _i=$((_i + 1))
    done
}

start_server "$TMP/main" || { fail "main server did not start"; exit 1; }
URL=http://127.0.0.1:$SPORT
MAIN_PID=$SPID

# ---------------------------------------------------------------- the 32 requests
# Deterministic: request i has ~(i*67 mod 290)+5 words of text (a word is ~1.3 tokens; the
# first words name the request, so no two prompts share a KV page), max_tokens 8 + (i*23 mod 57);
# even i are completions, odd i chat. Requests 28..31 share a ~200-word prefix (prefix cache under
# concurrency). Requests 32..39 are for the preemption test: ~25..60-token prompts and 120..190
# output tokens (2..4 pages each). All streaming, with include_usage.
N=32
NP=8
node -e '
const fs = require("fs"), dir = process.argv[1], n = +process.argv[2], np = +process.argv[3];
const words = ("the sea is wide and deep under a grey sky where ships sail slowly toward distant harbours " +
  "carrying grain timber salt and letters from people who wait for news of home while gulls circle " +
  "above the waves and old sailors tell stories of storms islands whales lighthouses and lost maps").split(" ");
let x = 12345;
const rnd = () => (x = (x * 1103515245 + 12345) % 2147483648) / 2147483648;
const text = (k) => Array.from({ length: k }, () => words[Math.floor(rnd() * words.length)]).join(" ");
const shared = text(200);
for (let i = 0; i < n + np; i++) {
  const nw = (i * 67) % 290 + 5;
  const body = i >= n ? "Preemption request " + i + ": " + text(15 + 5 * (i - n))
             : i >= 28 ? shared + " Question " + i + ": " + text(10) : "Request number " + i + " begins here: " + text(nw);
  const max_tokens = i >= n ? 120 + 10 * (i - n) : 8 + (i * 23) % 57;
  const common = { model: "tiny-v3", max_tokens, temperature: 0, ignore_eos: true, stream: true,
                   stream_options: { include_usage: true } };
  const req = i % 2 === 0 ? { ...common, prompt: body } : { ...common, messages: [{ role: "user", content: body }] };
  fs.writeFileSync(dir + "/req" + i + ".json", JSON.stringify(req));
  fs.writeFileSync(dir + "/req" + i + ".path", i % 2 === 0 ? "/v1/completions" : "/v1/chat/completions");
}' "$TMP" $N $NP

# checker for SSE files: node check.js SSE WANT_MAX_TOKENS -> prints {"text","prompt_tokens","cached"} or an error
cat > "$TMP/sse.js" <<'EOF'
const fs = require("fs");
// parse(file, max_tokens): throws on a malformed stream; returns the text and usage
function parse(file, maxTokens) {
  const raw = fs.readFileSync(file, "utf8");
  const lines = raw.split("\n");
  for (let i = 0; i + 1 < lines.length; i += 2) {
    if (!lines[i].startsWith("data: ")) throw new Error("line " + i + " is not a data line: " + lines[i].slice(0, 80));
    if (lines[i + 1] !== "") throw new Error("no blank line after event " + i);
  }
  const events = lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6));
  if (events[events.length - 1] !== "[DONE]") throw new Error("no [DONE] at the end (" + events.length + " events)");
  let text = "", usage = null, finish = [];
  for (const e of events.slice(0, -1)) {
    const c = JSON.parse(e);
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) {
      text += ch.delta ? ch.delta.content || "" : ch.text;
      if (ch.finish_reason) finish.push(ch.finish_reason);
    }
  }
  if (finish.join() !== "length") throw new Error("finish reasons " + JSON.stringify(finish));
  if (!usage || usage.completion_tokens !== maxTokens)
    throw new Error("usage " + JSON.stringify(usage) + ", want completion_tokens " + maxTokens);
  return { text, prompt_tokens: usage.prompt_tokens,
           cached: (usage.prompt_tokens_details || {}).cached_tokens || 0 };
}
module.exports = { parse };
EOF

# ---------------------------------------------------------------- 1. 32 concurrent streams
say "32 concurrent streams"
i=0 jobs=""
while [ $i -lt $N ]; do
    stream "$URL" $i "$TMP/cc" &
    jobs="$jobs $!"
    i=$((i + 1))
done
# watch /metrics while they run (bounded: the curl timeout)
maxrun=0 k=0
while [ $k -lt $((1200 * SCALE)) ]; do
    r=$(metric "$URL" mlaserve:num_requests_running)
    [ -n "$r" ] && [ "$r" -gt "$maxrun" ] && maxrun=$r
    left=0
    for j in $jobs; do kill -0 "$j" 2>/dev/null && left=1; done
    [ $left -eq 0 ] && break
    sleep 0.1
    k=$((k + 1))
done
for j in $jobs; do wait "$j"; done
[ "$maxrun" -ge 8 ] || fail "at most $maxrun requests were seen running at once (want >= 8 of 32)"
say "concurrent done (up to $maxrun running at once); solo runs"
pages_settled "$URL" > "$TMP/settle.txt" || fail "after 32 streams: $(cat "$TMP/settle.txt")"

# ---------------------------------------------------------------- the same requests alone
# (and the preemption test's 8, whose references these solo runs are)
i=0
while [ $i -lt $((N + NP)) ]; do
    stream "$URL" $i "$TMP/solo"
    i=$((i + 1))
done
say "solo runs done"
node -e '
const { parse } = require(process.argv[1] + "/sse.js");
const dir = process.argv[1], n = +process.argv[2], np = +process.argv[3], fs = require("fs");
const errs = [], lens = [], out = {};
let cachedSolo = 0;
for (let i = n; i < n + np; i++) {
  const req = JSON.parse(fs.readFileSync(dir + "/req" + i + ".json", "utf8"));
  try {
    const b = parse(dir + "/solo" + i + ".sse", req.max_tokens);
    out[i] = { text: b.text, prompt_tokens: b.prompt_tokens, max_tokens: req.max_tokens };
  } catch (e) { errs.push("solo " + i + ": " + e.message); }
}
for (let i = 0; i < n; i++) {
  const req = JSON.parse(fs.readFileSync(dir + "/req" + i + ".json", "utf8"));
  for (const kind of ["cc", "solo"]) {
    const st = fs.readFileSync(dir + "/" + kind + i + ".st", "utf8");
    if (st !== "200") { errs.push(kind + " " + i + ": status " + st); continue; }
  }
  let a, b;
  try { a = parse(dir + "/cc" + i + ".sse", req.max_tokens); } catch (e) { errs.push("concurrent " + i + ": " + e.message); continue; }
  try { b = parse(dir + "/solo" + i + ".sse", req.max_tokens); } catch (e) { errs.push("solo " + i + ": " + e.message); continue; }
  if (a.text !== b.text)
    errs.push("request " + i + " (" + a.prompt_tokens + " prompt tokens, " + req.max_tokens + " out): concurrent " +
              JSON.stringify(a.text) + " != solo " + JSON.stringify(b.text));
  if (a.prompt_tokens !== b.prompt_tokens) errs.push("request " + i + ": prompt_tokens differ");
  lens.push(a.prompt_tokens);
  cachedSolo += b.cached;
  out[i] = { text: b.text, prompt_tokens: b.prompt_tokens, max_tokens: req.max_tokens };
}
fs.writeFileSync(dir + "/solo.json", JSON.stringify(out));
const mn = Math.min(...lens), mx = Math.max(...lens);
if (lens.length === n && !(mn <= 20 && mx >= 250 && mx <= 400)) errs.push("prompt lengths " + mn + ".." + mx + ", want ~5..300");
console.log("server_load: prompts " + mn + ".." + mx + " tokens; solo runs reused " + cachedSolo + " cached prompt tokens");
if (errs.length) { console.log(errs.join("\n")); process.exit(1); }
' "$TMP" $N $NP || fail "32 concurrent streams vs solo"
pages_settled "$URL" > "$TMP/settle.txt" || fail "after the solo runs: $(cat "$TMP/settle.txt")"

# ---------------------------------------------------------------- 2. disconnects
say "10 disconnects"
cancelled0=$(curl -s -m 5 "$URL/metrics" | sed -n 's/^mlaserve:request_success_total{finished_reason="abort"} \([0-9]*\).*/\1/p')
node -e '
const url = process.argv[1], scale = +process.argv[2];
const metrics = async () => {
  const t = await (await fetch(url + "/metrics")).text();
  const g = (n) => { const m = t.match(new RegExp("^" + n + " (\\S+)", "m")); return m ? +m[1] : NaN; };
  return { total: g("mlaserve:kv_pages_total"), free: g("mlaserve:kv_pages_free"),
           running: g("mlaserve:num_requests_running"), waiting: g("mlaserve:num_requests_waiting") };
};
async function one(i) {
  const ctl = new AbortController();
  const body = { model: "tiny-v3", max_tokens: 400, ignore_eos: true, temperature: 0, stream: true,
                 prompt: "Disconnect test " + i + ": the client will hang up after three chunks." };
  const res = await fetch(url + "/v1/completions", { method: "POST", headers: { "content-type": "application/json" },
                                                    body: JSON.stringify(body), signal: ctl.signal });
  if (res.status !== 200) throw new Error("stream " + i + ": status " + res.status);
  const reader = res.body.getReader(), dec = new TextDecoder();
  let buf = "", events = 0;
  while (events < 3) {
    const { value, done } = await reader.read();
    if (done) throw new Error("stream " + i + " ended before 3 chunks");
    buf += dec.decode(value, { stream: true });
    events = (buf.match(/^data: /gm) || []).length;
  }
  if (buf.includes("[DONE]")) throw new Error("stream " + i + " finished before the abort");
  ctl.abort();
  return events;
}
(async () => {
  const t = setTimeout(() => { console.log("disconnect test: timed out"); process.exit(1); }, 60000 * scale);
  await Promise.all(Array.from({ length: 10 }, (_, i) => one(i)));
  const t0 = Date.now();
  let m;
  for (;;) {
    m = await metrics();
    if (m.running === 0 && m.waiting === 0 && m.free === m.total) break;
    if (Date.now() - t0 > 1000 * scale) {
      console.log(scale + " s after 10 aborts: " + JSON.stringify(m));
      process.exit(1);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  console.log("server_load: 10 aborted streams released their pages " + (Date.now() - t0) + " ms after the last abort");
  clearTimeout(t);
})().catch((e) => { console.log(String(e)); process.exit(1); });
' "$URL" "$SCALE" || fail "disconnect test"
cancelled1=$(curl -s -m 5 "$URL/metrics" | sed -n 's/^mlaserve:request_success_total{finished_reason="abort"} \([0-9]*\).*/\1/p')
[ $((cancelled1 - cancelled0)) -eq 10 ] || fail "cancelled requests went from $cancelled0 to $cancelled1, want +10"
# the server keeps serving: request 3 again, same text as its solo run
stream "$URL" 3 "$TMP/after"
node -e '
const { parse } = require(process.argv[1] + "/sse.js"); const s = require(process.argv[1] + "/solo.json")[3];
const a = parse(process.argv[1] + "/after3.sse", s.max_tokens);
if (a.text !== s.text) { console.log("after the disconnects: " + JSON.stringify(a.text) + " != " + JSON.stringify(s.text)); process.exit(1); }
' "$TMP" || fail "normal request after the disconnects"
kill -0 "$MAIN_PID" 2>/dev/null || fail "main server died"

# ---------------------------------------------------------------- 3. preemption
# Requests 32..39: each fits the 8-page pool, all together need ~3x that. Admission keeps one spare
# page per running sequence, so only sequences that grow by more than a page during decode force a
# preemption: these grow by 120..190 tokens (2..3 pages) each, so as soon as 3 run at once the pool
# runs out mid-decode whatever the timing, and the scheduler must preempt and recompute.
say "preemption server"
PICK="" i=$N
while [ $i -lt $((N + NP)) ]; do PICK="$PICK $i"; i=$((i + 1)); done
NEED=$(node -e '
const s = require(process.argv[1] + "/solo.json"); let pages = 0;
for (const i of process.argv.slice(2)) pages += Math.ceil((s[i].prompt_tokens + s[i].max_tokens) / 64);
process.stdout.write(String(pages));' "$TMP" $PICK)
[ "$(echo $PICK | wc -w)" -eq 8 ] && [ "$NEED" -gt 8 ] || fail "preemption set: requests '$PICK' need $NEED pages (want 8 requests, > 8 pages)"
start_server "$TMP/small" --kv-cache-tokens 512 --max-num-seqs 8 || fail "small-KV server did not start"
SURL=http://127.0.0.1:$SPORT
grep -q "KV cache 8 pages" "$TMP/small.out" || fail "small server banner: $(grep 'KV cache' "$TMP/small.out")"
jobs=""
for i in $PICK; do
    stream "$SURL" "$i" "$TMP/pre" &
    jobs="$jobs $!"
done
for j in $jobs; do wait "$j"; done
node -e '
const { parse } = require(process.argv[1] + "/sse.js"); const fs = require("fs");
const s = require(process.argv[1] + "/solo.json"); const errs = [];
for (const i of process.argv.slice(2)) {
  const st = fs.readFileSync(process.argv[1] + "/pre" + i + ".st", "utf8");
  if (st !== "200") { errs.push("request " + i + ": status " + st); continue; }
  try {
    const a = parse(process.argv[1] + "/pre" + i + ".sse", s[i].max_tokens);
    if (a.text !== s[i].text) errs.push("request " + i + " (" + s[i].prompt_tokens + "+" + s[i].max_tokens + " tokens): " +
                                        JSON.stringify(a.text) + " != solo " + JSON.stringify(s[i].text));
  } catch (e) { errs.push("request " + i + ": " + e.message); }
}
if (errs.length) { console.log(errs.join("\n")); process.exit(1); }
' "$TMP" $PICK || fail "requests on the small KV cache differ from their solo runs"
pre=$(metric "$SURL" mlaserve:num_preemptions_total)
say "preemption: requests $PICK need $NEED pages of 8; $pre preemptions"
[ -n "$pre" ] && [ "$pre" -gt 0 ] || fail "mlaserve:num_preemptions_total is '$pre', want > 0"
pages_settled "$SURL" > "$TMP/settle.txt" || fail "small server after the preemption test: $(cat "$TMP/settle.txt")"

# ---------------------------------------------------------------- 4. --batch-invariant
# The same 32 requests with logprobs, against a server started with --batch-invariant: concurrent
# and solo runs must give the same text and the same logprob bits (the default kernels give the
# same text here but not always the same last bits: docs/design.md "Batch invariance").
say "batch-invariant server: 32 concurrent streams with logprobs"
start_server "$TMP/inv" --batch-invariant || fail "--batch-invariant server did not start"
IURL=http://127.0.0.1:$SPORT
grep -q "batch-invariant kernels" "$TMP/inv.out" || fail "--batch-invariant banner: $(cat "$TMP/inv.out")"
node -e '
const fs = require("fs"), dir = process.argv[1], n = +process.argv[2];
for (let i = 0; i < n; i++) {
  const req = JSON.parse(fs.readFileSync(dir + "/req" + i + ".json", "utf8"));
  if (req.messages) { req.logprobs = true; req.top_logprobs = 2; } else req.logprobs = 2;
  fs.writeFileSync(dir + "/req" + (100 + i) + ".json", JSON.stringify(req));
  fs.copyFileSync(dir + "/req" + i + ".path", dir + "/req" + (100 + i) + ".path");
}' "$TMP" $N
run_streams "$IURL" icc isolo 100 $N
same_as_solo icc isolo 100 $N || fail "--batch-invariant: concurrent differs from solo"
pages_settled "$IURL" > "$TMP/settle.txt" || fail "batch-invariant server: $(cat "$TMP/settle.txt")"
# `generate --batch-invariant` runs the same kernels: the same greedy text as this server
curl -s -m $((60 * SCALE)) "$IURL/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model":"tiny-v3","prompt":"The quick brown fox","max_tokens":24,"temperature":0,"ignore_eos":true}' |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).choices[0].text))' > "$TMP/inv.srv"
"$BIN" generate --model "$MODEL" --prompt "The quick brown fox" --max-tokens 24 --temperature 0 --ignore-eos \
    --no-stats --batch-invariant --threads 2 > "$TMP/inv.gen" || fail "generate --batch-invariant failed"
[ -s "$TMP/inv.srv" ] && cmp -s "$TMP/inv.srv" "$TMP/inv.gen" || fail "generate --batch-invariant differs from the server: '$(cat "$TMP/inv.gen")' vs '$(cat "$TMP/inv.srv")'"

# ---------------------------------------------------------------- 5. --bf16-activations
# Requests 100..107 against a server with --bf16-activations and --batch-invariant (the pair is
# batch-invariant too: docs/operations.md): concurrent == solo bit for bit, and the logprobs are
# not those of the fp32 server of part 4 (the bf16 kernels ran). Where the CPU has no AVX512_BF16
# (or MLASERVE_CPU_SIMD caps the kernels) the server must refuse to start, naming it.
say "bf16-activations server: 8 concurrent streams with logprobs"
if start_server "$TMP/bf" --bf16-activations --batch-invariant > "$TMP/bf.start"; then
    BURL=http://127.0.0.1:$SPORT
    grep -q "bf16 activations" "$TMP/bf.out" || fail "--bf16-activations banner: $(cat "$TMP/bf.out")"
    run_streams "$BURL" bcc bsolo 100 8
    same_as_solo bcc bsolo 100 8 || fail "--bf16-activations --batch-invariant: concurrent differs from solo"
    node -e '
const { lps } = require(process.argv[1] + "/logprobs.js"), dir = process.argv[1];
let same = 0;
for (let i = 100; i < 108; i++)
  if (JSON.stringify(lps(dir + "/bcc" + i + ".sse")) === JSON.stringify(lps(dir + "/icc" + i + ".sse"))) same++;
console.log("server_load: bf16: " + (8 - same) + " of 8 streams have logprobs other than the fp32 server'"'"'s");
process.exit(same === 8 ? 1 : 0);
' "$TMP" || fail "--bf16-activations: every logprob equals the fp32 server's: the bf16 kernels did not run"
    pages_settled "$BURL" > "$TMP/settle.txt" || fail "bf16 server: $(cat "$TMP/settle.txt")"
elif grep -q "AVX512_BF16" "$TMP/bf.err"; then
    say "SKIP --bf16-activations server (refused as it must be here): $(grep -o "bf16 activations need.*" "$TMP/bf.err" | head -1)"
else
    fail "--bf16-activations server did not start: $(cat "$TMP/bf.start")"
fi

say "done"
[ $fails -eq 0 ] && echo "server_load.sh: all checks passed"
[ $fails -eq 0 ]
