#!/bin/sh
# Without Kubernetes: run a program capped at 2 GiB of one GPU through the hami runtime.
# Needs containerd with the shim installed (deploy/containerd/), runtime_binary =
# "nvidia-container-runtime" in /etc/hami/shim.toml on a GPU node, and the image pulled.
set -eu
image=${IMAGE:-docker.io/nvidia/cuda:12.4.1-base-ubuntu22.04}
ctr run --rm --runtime io.containerd.hami.v2 \
    --annotation hami.io/gpu-memory=2Gi \
    --annotation hami.io/gpu-cores=50 \
    "$image" hami-demo nvidia-smi
