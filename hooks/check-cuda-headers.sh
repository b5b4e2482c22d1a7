#!/usr/bin/env bash
# Checks the CUDA table of hami-hooks against NVIDIA's headers: every entry point's
# PFN_<base>_v<since> typedef in cudaTypedefs.h, its exact signature, struct sizes and codes.
# Uses $CUDA_INCLUDE_DIR, else /usr/local/cuda/include, else the headers of the PyPI wheel
# nvidia-cuda-runtime-cu12 (downloaded with pip into a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CUDA_INCLUDE_DIR:-}" ]; then
    if [ -f /usr/local/cuda/include/cudaTypedefs.h ]; then
        CUDA_INCLUDE_DIR=/usr/local/cuda/include
    else
        tmp="$(mktemp -d)"
        trap 'rm -rf "$tmp"' EXIT
        pip download --no-deps --quiet nvidia-cuda-runtime-cu12 -d "$tmp"
        python3 -m zipfile -e "$tmp"/nvidia_cuda_runtime_cu12-*.whl "$tmp/wheel"
        CUDA_INCLUDE_DIR="$tmp/wheel/nvidia/cuda_runtime/include"
    fi
fi
echo "checking hooks/src/cuda/table.rs against $CUDA_INCLUDE_DIR"
CUDA_INCLUDE_DIR="$CUDA_INCLUDE_DIR" cargo test -p hami-hooks -- --ignored table_matches_the_cuda_headers
