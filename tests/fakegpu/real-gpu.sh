#!/usr/bin/env bash
# Runs the test programs of the simulated device against the real NVIDIA driver, to check
# that they (and tests/fakegpu/kernels/hami_kernels.ptx) behave the same on a GPU.
# Needs a GPU, its driver (libcuda.so.1) and cc. Usage: tests/fakegpu/real-gpu.sh [device]
# HAMI_CUDA_CLIENT names a hami-cuda-client built elsewhere (no cargo needed then).
set -euo pipefail
cd "$(dirname "$0")/../.."
device="${1:-0}"
if [ -n "${HAMI_FAKEGPU_DIR:-}" ]; then
    echo "HAMI_FAKEGPU_DIR is set: this script is for a real GPU (open a fresh shell)" >&2
    exit 2
fi
client="${HAMI_CUDA_CLIENT:-}"
if [ -z "$client" ]; then
    cargo build --release -p hami-cuda-client
    client=target/release/hami-cuda-client
fi
out="$(mktemp -d)"
cc -O2 -Wall -Werror -o "$out/runtime_like" tests/fakegpu/cprog/runtime_like.c -ldl
ptx=tests/fakegpu/kernels/hami_kernels.ptx
set -x
"$client" --device "$device" demo
"$client" --device "$device" spin --kernel-us 1000 --seconds 1
"$out/runtime_like" info --device "$device"
"$out/runtime_like" spin --device "$device" --ptx "$ptx" --kernel-us 1000 --seconds 1
"$out/runtime_like" spin --device "$device" --ptx "$ptx" --kernel-us 1000 --seconds 1 --ptsz
"$out/runtime_like" resolve cuMemAlloc
"$out/runtime_like" resolve cuGraphInstantiate
"$out/runtime_like" call-cost --device "$device" --ptx "$ptx" --count 100000
for path in plain pitch async pool vmm array; do
    "$out/runtime_like" fill-until-oom --device "$device" --path "$path" --step $((1 << 30))
done
"$client" --device "$device" fill-until-oom --step 1Gi
