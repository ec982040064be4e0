#!/bin/sh
# configs/deepseek-v2-lite-1gpu.sh — DeepSeek-V2-Lite(-Chat) on one GPU (H100/H200).
#   MODEL_DIR=/data/DeepSeek-V2-Lite-Chat sh configs/deepseek-v2-lite-1gpu.sh
# Needs a `make CUDA=1` build (the CUDA kernels themselves are issue #4; the
# flags below do not change when they land). The checkpoint directory is used
# exactly as published on Hugging Face (BF16 weights, ~31 GB).
set -eu
BIN=${MLASERVE_BIN:-build/mlaserve}
MODEL_DIR=${MODEL_DIR:?set MODEL_DIR to the DeepSeek-V2-Lite checkpoint directory}

# --host 0.0.0.0            reachable by the load balancer; protect it with a key:
# MLASERVE_API_KEY          read from the environment (not argv: argv shows in `ps`).
# --served-model-name       the `model` value clients send.
# --max-model-len 32768     V2-Lite's trained context (YaRN); requests beyond get a 400.
# --kv-cache-tokens 64G     bytes for the latent KV cache: 27 layers x (512+64) x 2 B
#                           = ~31 KB per token, so ~2M tokens; leaves room for the
#                           31 GB of weights and activations on an 80-141 GB GPU.
# --max-num-seqs 256        many concurrent streams: MLA's small cache makes them cheap.
# --max-num-batched-tokens 8192  prefill chunk per step: large enough to keep the
#                           GPU busy, small enough that decodes are not stalled.
# --max-queue 1024          waiting requests beyond which clients get 429 (back-pressure
#                           the balancer can act on).
# --drain-timeout 60        SIGTERM: in-flight requests get a minute to finish.
# --log-format json         one JSON access-log line per request, for log shippers.
exec "$BIN" serve --model "$MODEL_DIR" --served-model-name deepseek-v2-lite \
    --host 0.0.0.0 --port "${PORT:-8000}" \
    --max-model-len 32768 --kv-cache-tokens 64G \
    --max-num-seqs 256 --max-num-batched-tokens 8192 --max-queue 1024 \
    --drain-timeout 60 --log-format json
