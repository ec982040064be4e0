#!/bin/sh
# test/cuda/e2e_golden.sh BIN MODELS GOLDEN — the whole model on the GPU:
# `mlaserve logits --device cuda` against `--device cpu` (the CPU backend is
# itself checked against DeepSeek's goldens in test/cli/logits.sh) on every
# golden prompt of tiny-v3 and tiny-v2: last-position logits within 3e-2
# absolute (bf16-level), and the greedy continuation equal for the steps the
# golden file marks as free of near-ties. tiny-v3 also runs as a one-rank
# NCCL world (MLASERVE_EP_ONE_RANK_WORLD=1 --device cuda: issue #5's 1-rank
# NCCL check — routing ids and hidden rows through cuda/comm_nccl, experts per
# rank, combine) against the same CPU run and criteria; on a machine with 2 or
# more GPUs also as 2 NCCL ranks (--ep 2 --device cuda). Needs only sh, od and
# awk (the GPU machine has no node). Without a device: one SKIP line, exit 0.
set -u
BIN=$1 MODELS=$2 GOLDEN=$3
TMP=$(mktemp -d) || exit 1
trap 'rm -rf "$TMP"' EXIT
if ! "$BIN" logits --model "$MODELS/tiny-v3" --ids 0 --device cuda > /dev/null 2> "$TMP/probe"; then
    if grep -q "no CUDA device is visible\|built without the CUDA backend" "$TMP/probe"; then
        echo "e2e_golden: SKIP: $(cat "$TMP/probe")"
        exit 0
    fi
    echo "e2e_golden: FAIL: $(cat "$TMP/probe")"
    exit 1
fi
fails=0
ep2=""
if "$BIN" logits --model "$MODELS/tiny-v3" --ids 0 --device cuda --ep 2 > /dev/null 2> "$TMP/probe2"; then ep2=ep2
else echo "e2e_golden: --ep 2 on GPUs not run: $(cat "$TMP/probe2")"; fi
for m in tiny-v3 tiny-v2; do
    for res in "$GOLDEN/$m/results/"*.json; do
        p=$(basename "$res" .json)
        ids=$(tr -d ' \n' < "$res" | sed 's/.*"ids":\[\([0-9,]*\)\].*/\1/')
        steps=$(tr -d ' \n' < "$res" | sed 's/.*"steps_before_near_tie":\([0-9]*\).*/\1/')
        runs="cpu cuda"
        [ $m = tiny-v3 ] && runs="cpu cuda nccl1 $ep2"
        for run in $runs; do
            dev=$run world=0 ep=1
            [ $run = nccl1 ] && dev=cuda world=1
            [ $run = ep2 ] && dev=cuda ep=2
            MLASERVE_EP_ONE_RANK_WORLD=$world "$BIN" logits --model "$MODELS/$m" --ids "$ids" --top 1 --greedy 32 \
                --device $dev --ep $ep --last-logits "$TMP/$run.bin" > "$TMP/$run.json" 2> "$TMP/$run.err" ||
                { echo "FAIL: $m/$p $run: $(cat "$TMP/$run.err")"; fails=$((fails + 1)); continue 2; }
        done
        for run in $runs; do
            [ $run = cpu ] && continue
            diff=$(od -An -v -f "$TMP/cpu.bin" | tr -s ' ' '\n' | grep . > "$TMP/a"; od -An -v -f "$TMP/$run.bin" |
                tr -s ' ' '\n' | grep . > "$TMP/b"; paste "$TMP/a" "$TMP/b" |
                awk '{d = $1 - $2; if (d < 0) d = -d; if (d > m || $2 != $2) m = d} END {printf "%g", m}')
            g_cpu="" g_gpu=""
            if [ "$steps" -gt 0 ] 2>/dev/null; then
                g_cpu=$(sed 's/.*"greedy":\[\([0-9,]*\)\].*/\1/' "$TMP/cpu.json" | cut -d, -f1-"$steps")
                g_gpu=$(sed 's/.*"greedy":\[\([0-9,]*\)\].*/\1/' "$TMP/$run.json" | cut -d, -f1-"$steps")
            fi
            what="cuda"
            [ $run = nccl1 ] && what="cuda, one-rank NCCL world"
            [ $run = ep2 ] && what="cuda, 2 NCCL ranks on 2 GPUs"
            if awk -v d="$diff" 'BEGIN {exit !(d <= 3e-2)}' && [ "$g_cpu" = "$g_gpu" ]; then
                echo "ok: $m/$p ($what): max |logit diff| $diff, greedy equal for $steps steps"
            else
                echo "FAIL: $m/$p ($what): max |logit diff| $diff; greedy cpu $g_cpu / $run $g_gpu"
                fails=$((fails + 1))
            fi
        done
    done
done
[ $fails -eq 0 ] && echo "e2e_golden: all passed" || echo "e2e_golden: $fails failed"
[ $fails -eq 0 ]
