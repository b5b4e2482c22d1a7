#!/bin/sh
# The compute-limiter harness on a real NVIDIA GPU: the same scenarios as on the simulated
# device (`hami bench limiter`), with the machine's driver, NVML as the judge, and the
# shipped PTX spin kernel (JIT-compiled by the driver). No Rust toolchain is needed here:
# it runs the release binaries built elsewhere.
#
#   HAMI_BIN_DIR  directory holding `hami` and `libhami.so` (default: target/release)
#   OUT           directory for the results (default: ./gpu-results)
#   HAMI_LIMITER_TIMEOUT_S  bound on the harness itself (default 420)
#
# Writes: gpu.txt (nvidia-smi), solo.json (the load alone, no cap: the device's pace),
# nvml-probe.txt (a few probe lines: NVML per-process data is available), limiter.json and
# limiter.txt (the harness), run.log. Finishes in about 4-5 minutes; each step is bounded so
# the whole stays under 8.
set -eu

BIN=${HAMI_BIN_DIR:-target/release}
OUT=${OUT:-./gpu-results}
mkdir -p "$OUT"
log() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$OUT/run.log"; }

for artifact in "$BIN/hami" "$BIN/libhami.so"; do
    if [ ! -f "$artifact" ]; then
        log "missing $artifact: build with 'cargo build --release -p hami -p hami-intercept' and set HAMI_BIN_DIR"
        exit 2
    fi
done
HAMI=$(cd "$(dirname "$BIN/hami")" && pwd)/hami
export HAMI_LIBRARY="$(cd "$(dirname "$BIN/libhami.so")" && pwd)/libhami.so"

log "GPU"
nvidia-smi > "$OUT/gpu.txt" 2>&1 || { log "nvidia-smi failed: no GPU or driver here"; exit 2; }
nvidia-smi -L | tee -a "$OUT/run.log"

log "the load alone, no library, 3 s of 1 ms spin kernels"
timeout 60 "$HAMI" bench limiter load --kernel-us 1000 --seconds 3 > "$OUT/solo.json" 2>> "$OUT/run.log"
cat "$OUT/solo.json" | tee -a "$OUT/run.log"

log "NVML per-process utilization while the load runs (the harness's judge)"
timeout 60 "$HAMI" bench limiter load --kernel-us 1000 --seconds 2 > /dev/null 2>> "$OUT/run.log" &
load=$!
timeout 3 "$HAMI" bench limiter probe --interval-ms 50 > "$OUT/nvml-probe.txt" 2>> "$OUT/run.log" || true
wait "$load" || true
tail -n 3 "$OUT/nvml-probe.txt" | tee -a "$OUT/run.log"

log "limiter harness (all scenarios, real GPU)"
status=0
timeout "${HAMI_LIMITER_TIMEOUT_S:-420}" "$HAMI" bench limiter --real-gpu --json > "$OUT/limiter.json" 2> "$OUT/limiter.txt" || status=$?
cat "$OUT/limiter.txt" | tee -a "$OUT/run.log"
log "harness exit status $status"
exit "$status"
