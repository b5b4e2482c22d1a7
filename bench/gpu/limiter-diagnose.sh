#!/bin/sh
# What the compute limiter sees on a real GPU: NVML's raw per-process samples (period,
# reporting delay) beside a load alone and a load capped through `hami run` with the
# measurer's debug log. Binaries from scripts/stage-gpu.sh (.gpu/); OUT gets results.tar.gz.
set -u
cd "$(dirname "$0")/../.."
STAGE=$(pwd)/.gpu
OUT=${OUT:-./gpu-results}
W=$(mktemp -d)
mkdir -p "$OUT"
trap 'tar -czf "$OUT/diagnose.tar.gz" -C "$W" .' EXIT
export HAMI_LIBRARY="$STAGE/libhami.so"
cc -O2 -o "$W/nvml_samples" bench/gpu/nvml_samples.c -ldl || exit 1

sampled() { # name seconds command...
    name=$1 seconds=$2
    shift 2
    "$@" > "$W/$name-load.json" 2> "$W/$name-stderr.txt" &
    load=$!
    "$W/nvml_samples" "$seconds" 10 > "$W/$name-samples.txt"
    wait "$load"
    echo "== $name: $(tail -n 1 "$W/$name-load.json")"
    grep -v '^{' "$W/$name-stderr.txt" | tail -n 12
    python3 bench/gpu/nvml_summary.py < "$W/$name-samples.txt"
}
HAMI="$STAGE/hami"
sampled solo 3.5 "$HAMI" bench limiter load --kernel-us 1000 --seconds 3
for cap in 50 10; do
    sampled "cap$cap" 6.5 env HAMI_LOG=debug "$HAMI" run --cores "$cap" -- \
        "$HAMI" bench limiter load --kernel-us 1000 --seconds 6
done
sampled cap30-20ms 6.5 env HAMI_LOG=debug "$HAMI" run --cores 30 -- \
    "$HAMI" bench limiter load --kernel-us 20000 --seconds 6
