#!/bin/sh
# What the compute limiter sees on a real GPU: NVML's raw per-process samples (period,
# reporting delay) beside a load alone, loads capped through `hami run` with the measurer's
# debug log, and two loads time-slicing the device (uncapped, then capped 30 + 70): how NVML
# attributes shared time, against each load's kernel count. Binaries from
# scripts/stage-gpu.sh (.gpu/); OUT gets diagnose.tar.gz. About 45 s.
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

# Two loads at once: the per-process samples of both, and each load's kernel count.
pair() { # name cores_a cores_b
    name=$1
    run_load() { # cores
        if [ "$1" = "-" ]; then
            "$HAMI" bench limiter load --kernel-us 1000 --seconds 6
        else
            env HAMI_LOG=debug "$HAMI" run --cores "$1" -- \
                "$HAMI" bench limiter load --kernel-us 1000 --seconds 6
        fi
    }
    run_load "$2" > "$W/$name-a-load.json" 2> "$W/$name-a-stderr.txt" &
    a=$!
    run_load "$3" > "$W/$name-b-load.json" 2> "$W/$name-b-stderr.txt" &
    b=$!
    "$W/nvml_samples" 6.5 10 > "$W/$name-samples.txt"
    wait "$a" "$b"
    echo "== $name: a $(tr "\n" " " < "$W/$name-a-load.json") b $(tr "\n" " " < "$W/$name-b-load.json")"
    python3 bench/gpu/nvml_summary.py < "$W/$name-samples.txt"
}
pair pair-uncapped - -
pair pair-30-70 30 70
