#!/usr/bin/env bash
# The main job on any machine: build in release, then two tenants with different memory and
# compute caps share one device (the simulated one when there is no GPU), caps shown live.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --locked
exec target/release/hami demo "$@"
