#!/bin/sh
# Builds in release what bench/gpu/device-checks.sh runs on a GPU machine without a Rust
# toolchain, and copies it into .gpu/ (ignored by git; carried to the GPU machine).
set -eu
cd "$(dirname "$0")/.."
cargo build --release --locked -p hami -p hami-intercept -p hami-cuda-client
test_binary=$(cargo test --release --locked -p hami-e2e --test real_gpu --no-run \
    --message-format json 2> /dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") \
            and message["target"]["name"] == "real_gpu":
        print(message["executable"])')
rm -rf .gpu
mkdir -p .gpu
cp target/release/hami target/release/libhami.so target/release/hami-cuda-client .gpu/
cp "$test_binary" .gpu/real_gpu
strip .gpu/hami .gpu/hami-cuda-client .gpu/real_gpu
du -sh .gpu
