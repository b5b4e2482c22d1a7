#!/bin/sh
# Every check a lent GPU machine should run, in one pass, from binaries built elsewhere (the
# GPU machine has no Rust toolchain): libhami.so's end-to-end checks against the real driver,
# the simulated device's test programs on the real driver, the per-call hook cost against the
# real driver, NVML's raw samples beside capped and paired loads (limiter-diagnose.sh), then
# the compute-limiter harness (bench/gpu/run.sh).
#
#   scripts/stage-gpu.sh            here: builds in release and copies what travels into .gpu/
#   bench/gpu/device-checks.sh      there: OUT receives results.tar.gz; a summary goes to stdout
#
# Each step is bounded; the whole takes about 5 minutes and stays under 10. A failed step
# does not stop the later ones; the exit status is the number of failed steps.
set -u
cd "$(dirname "$0")/../.."
STAGE=$(pwd)/.gpu
OUT=${OUT:-./gpu-results}
WORK=$(mktemp -d)
failed=0
mkdir -p "$OUT"

# The e2e tests compile their C programs from the source path baked in at build time.
if [ ! -d /work/main/tests/e2e/cprog ]; then
    mkdir -p /work && ln -sfn "$(pwd)" /work/main
fi

step() { # name limit_s command...
    name=$1 limit=$2
    shift 2
    echo "== $(date -u +%H:%M:%S) $name (at most ${limit}s)"
    timeout "$limit" "$@" > "$WORK/$name.txt" 2>&1
    status=$?
    tail -n "${TAIL_LINES:-25}" "$WORK/$name.txt"
    echo "== $name: exit $status"
    [ "$status" -eq 0 ] || failed=$((failed + 1))
}

finish() {
    tar -czf "$OUT/results.tar.gz" -C "$WORK" .
    echo "== failed steps: $failed"
    exit "$failed"
}
trap finish EXIT INT TERM

nvidia-smi --query-gpu=name,uuid,memory.total,driver_version --format=csv,noheader | tee "$WORK/gpu.txt"
nvidia-smi >> "$WORK/gpu.txt" 2>&1
command -v cc > /dev/null || echo "no cc here: the e2e C programs cannot be built"

export HAMI_E2E_LIBHAMI="$STAGE/libhami.so"
step e2e-real-gpu 60 "$STAGE/real_gpu" --ignored --test-threads 1

step fakegpu-programs-on-real-driver 60 env HAMI_CUDA_CLIENT="$STAGE/hami-cuda-client" \
    tests/fakegpu/real-gpu.sh 0

TAIL_LINES=40 step hooks-real-driver 90 "$STAGE/hami" bench hooks --system-driver \
    --rounds 5 --samples 50 --batch 200

TAIL_LINES=40 step limiter-diagnose 90 env OUT="$WORK/diagnose" bench/gpu/limiter-diagnose.sh

TAIL_LINES=60 step limiter-real-gpu 300 env HAMI_BIN_DIR="$STAGE" OUT="$WORK/limiter" \
    HAMI_LIMITER_TIMEOUT_S=270 \
    bench/gpu/run.sh
