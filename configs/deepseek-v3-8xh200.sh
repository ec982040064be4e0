#!/bin/sh
# configs/deepseek-v3-8xh200.sh — DeepSeek-V3 / R1 / V3.1 (FP8, as published) on
# one node of 8x H200 (141 GB each) with expert parallelism over the 8 GPUs.
#   MODEL_DIR=/data/DeepSeek-V3 sh configs/deepseek-v3-8xh200.sh
#
# NOTE: `--ep` (expert parallelism) does not exist yet — it is issue #5, and the
# CUDA kernels are issue #4. This is the command as it will be; today the server
# rejects --ep as an unknown option.
set -eu
BIN=${MLASERVE_BIN:-build/mlaserve}
MODEL_DIR=${MODEL_DIR:?set MODEL_DIR to the DeepSeek-V3 checkpoint directory}

# Memory per GPU: the 256 routed experts x 58 MoE layers (~654 GB FP8) are split
# 32 per GPU (~82 GB); attention, dense layers, shared experts and embeddings
# (~17 GB) are replicated (attention is data-parallel) => ~100 GB of weights,
# ~40 GB left for activations and the KV cache.
#
# --ep 8                    rank r holds experts 32r..32r+31; tokens are dispatched to
#                           them with NCCL all-to-all each MoE layer (DESIGN.md).
# --host 0.0.0.0            reachable by the load balancer; the key comes from
# MLASERVE_API_KEY          the environment (not argv, which `ps` shows).
# --served-model-name       the `model` value clients send.
# --max-model-len 65536     of the 128K the checkpoint supports: longer requests would
#                           let a handful of users hold the whole cache.
# --kv-cache-tokens 28G     bytes of latent KV per GPU (each rank owns its sequences'
#                           pages): 61 layers x (512+64) x 2 B = ~70 KB per token,
#                           so ~400K tokens per GPU, ~3.2M per node.
# --max-num-seqs 256        per node; decode batches need to be large for the
#                           expert GEMMs to be efficient (each expert sees
#                           batch x 8 / 256 tokens).
# --max-num-batched-tokens 16384  prefill chunk per step, as DeepSeek's own
#                           deployment uses large prefill batches; decodes ride along.
# --max-queue 2048          beyond this, 429 so the balancer sends elsewhere.
# --drain-timeout 300       SIGTERM: long reasoning (R1) streams get 5 minutes to finish;
#                           set the orchestrator's grace period above it.
# --log-format json         structured access log for log shippers.
exec "$BIN" serve --model "$MODEL_DIR" --served-model-name deepseek-v3 \
    --host 0.0.0.0 --port "${PORT:-8000}" \
    --ep 8 \
    --max-model-len 65536 --kv-cache-tokens 28G \
    --max-num-seqs 256 --max-num-batched-tokens 16384 --max-queue 2048 \
    --drain-timeout 300 --log-format json
