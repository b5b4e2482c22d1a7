#!/bin/sh
# Runs libhami.so's end-to-end checks against this host's real NVIDIA driver (the tests in
# tests/e2e/tests/real_gpu.rs, ignored where no GPU is present). Prints each test's result;
# exits non-zero if any fails. On a GPU machine without a Rust toolchain, use
# bench/gpu/device-checks.sh with binaries staged by scripts/stage-gpu.sh instead.
set -eu
cd "$(dirname "$0")/../.."
nvidia-smi --query-gpu=name,uuid,memory.total,driver_version --format=csv,noheader
cargo build --release -p hami-intercept
cargo test --release -p hami-e2e --test real_gpu -- --ignored --test-threads 1
