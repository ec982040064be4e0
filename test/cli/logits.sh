#!/bin/sh
# `mlaserve logits` and `mlaserve generate` end to end on tiny-v3 / tiny-v2:
# top-20 at every position and the greedy continuation against the golden
# results (DeepSeek reference), the --last-logits file against the golden
# last-position logits, and the exit codes of bad invocations.
# Needs MLASERVE_BIN, MLASERVE_TEST_MODELS, MLASERVE_GOLDEN (scripts/run-tests.sh sets them) and node.
set -u
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
check() { if [ "$1" -eq 0 ]; then echo "ok: $2"; else echo "FAIL: $2"; fail=1; fi; }

for mode in "" --batch-invariant; do
for m in tiny-v3 tiny-v2; do
    for p in en_short zh; do
        res="$MLASERVE_GOLDEN/$m/results/$p.json"
        ids=$(node -e 'console.log(require(process.argv[1]).ids.join(","))' "$res")
        "$MLASERVE_BIN" logits --model "$MLASERVE_TEST_MODELS/$m" --ids "$ids" --top 20 --greedy 32 $mode \
            --last-logits "$tmp/last.bin" > "$tmp/out.json" 2> "$tmp/err"
        check $? "$m/$p$mode: logits exits 0"
        node - "$tmp/out.json" "$res" "$MLASERVE_GOLDEN/$m/logits/$p.last.f32.bin" "$tmp/last.bin" <<'JS'
const fs = require('fs');
const [out, gold, goldBin, lastBin] = process.argv.slice(2);
const o = JSON.parse(fs.readFileSync(out)), g = JSON.parse(fs.readFileSync(gold));
let worst = 0, problems = [];
g.top20.forEach((top, pos) => {
  const mine = new Map(o.top[pos].map(([id, v]) => [id, v]));
  if (o.top[pos][0][0] !== top[0][0]) problems.push(`pos ${pos}: top-1 ${o.top[pos][0][0]} != ${top[0][0]}`);
  for (const [id, v] of top.slice(0, 5)) {           // the golden top-5 must be in our top-20 within 1e-4
    if (!mine.has(id)) { problems.push(`pos ${pos}: id ${id} missing from top-20`); continue; }
    worst = Math.max(worst, Math.abs(mine.get(id) - v));
  }
});
const steps = g.greedy.steps_before_near_tie;
for (let s = 0; s < steps; s++)
  if (o.greedy[s] !== g.greedy.new_tokens[s]) { problems.push(`greedy step ${s}: ${o.greedy[s]} != ${g.greedy.new_tokens[s]}`); break; }
const a = new Float32Array(fs.readFileSync(goldBin).buffer.slice(0)), b = new Float32Array(fs.readFileSync(lastBin).buffer.slice(0));
if (a.length !== b.length) problems.push(`last logits: ${b.length} values, golden ${a.length}`);
let lw = 0; for (let i = 0; i < a.length; i++) lw = Math.max(lw, Math.abs(a[i] - b[i]));
if (!(worst <= 1e-4) || !(lw <= 1e-4)) problems.push(`max |diff| top ${worst}, last ${lw}`);
if (problems.length) { console.error(problems.slice(0, 5).join('\n')); process.exit(1); }
JS
        check $? "$m/$p$mode: top-20, greedy and last logits match the golden"
    done
done
done
"$MLASERVE_BIN" logits --model "$MLASERVE_TEST_MODELS/tiny-v3" --ids 1 --batch-invariant --attn naive > /dev/null 2>&1
check $([ $? -eq 2 ]; echo $?) "--batch-invariant with --attn naive exits 2"

# --bf16-activations: where the CPU has AVX512_BF16 the run succeeds and keeps the
# golden top-1 (test_model_golden checks the tolerances); elsewhere a clear error, exit 1
"$MLASERVE_BIN" logits --model "$MLASERVE_TEST_MODELS/tiny-v3" --ids 0,671,4787,13769,46012,54994,1060,270,41638,6397,16 --top 1 --bf16-activations \
    > "$tmp/out.json" 2> "$tmp/err"; rc=$?
if [ $rc -eq 0 ]; then
    node -e 'const o = require(process.argv[1]), g = require(process.argv[2]);
             process.exit(o.top.length === g.top20.length && o.top.every((t, p) => t[0][0] === g.top20[p][0][0]) ? 0 : 1)' \
        "$tmp/out.json" "$MLASERVE_GOLDEN/tiny-v3/results/en_short.json"
    check $? "--bf16-activations: logits keeps the golden top-1 at every position"
else
    check $([ $rc -eq 1 ] && grep -q "AVX512_BF16" "$tmp/err"; echo $?) "--bf16-activations without AVX512_BF16: exit 1 naming it"
fi

"$MLASERVE_BIN" logits --model "$MLASERVE_TEST_MODELS/tiny-v3" > /dev/null 2>&1; check $([ $? -eq 2 ]; echo $?) "logits without --ids exits 2"
"$MLASERVE_BIN" logits --model "$MLASERVE_TEST_MODELS/tiny-v3" --ids 1,x > /dev/null 2>&1; check $([ $? -eq 2 ]; echo $?) "bad --ids exits 2"
"$MLASERVE_BIN" logits --model "$tmp/nothing" --ids 1 > /dev/null 2> "$tmp/err"; rc=$?
check $([ $rc -eq 1 ] && grep -q "nothing/config.json" "$tmp/err"; echo $?) "bad model dir exits 1 naming the file"
"$MLASERVE_BIN" logits --model "$MLASERVE_TEST_MODELS/tiny-v3" --ids 0,999999 > /dev/null 2> "$tmp/err"; rc=$?
check $([ $rc -eq 1 ] && grep -q "out of range" "$tmp/err"; echo $?) "token id out of range is an error, not a crash"
"$MLASERVE_BIN" generate --model "$MLASERVE_TEST_MODELS/tiny-v3" > /dev/null 2>&1; check $([ $? -eq 2 ]; echo $?) "generate without a prompt exits 2"
out=$("$MLASERVE_BIN" generate --model "$MLASERVE_TEST_MODELS/tiny-v3" --prompt "The quick brown fox" --max-tokens 8 --temperature 0 --no-stats)
check $([ -n "$out" ]; echo $?) "generate prints a continuation"
out2=$("$MLASERVE_BIN" generate --model "$MLASERVE_TEST_MODELS/tiny-v3" --prompt "The quick brown fox" --max-tokens 8 --temperature 0.8 --seed 7 --no-stats)
out3=$("$MLASERVE_BIN" generate --model "$MLASERVE_TEST_MODELS/tiny-v3" --prompt "The quick brown fox" --max-tokens 8 --temperature 0.8 --seed 7 --no-stats)
check $([ "$out2" = "$out3" ]; echo $?) "same seed, same sampled text"

[ $fail -eq 0 ] && echo "logits.sh: all passed"
exit $fail
