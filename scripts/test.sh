#!/usr/bin/env bash
# Runs every test of HAMi-rs on a fresh machine: installs what the tests need, builds, tests.
#
#   ./scripts/test.sh            # everything (as root it installs Debian packages first)
#   SKIP_LINT=1 ./scripts/test.sh   # skip fmt/clippy (quicker local loop)
#
# The end-to-end shim tests start their own containerd on private paths; with CI=true they
# fail (never skip) when containerd or runc is missing. They run on containerd 1.6 (installed),
# then 1.7 and 2.x (downloaded from Debian into ~/.cache/hami/containerd, see
# scripts/containerd-versions.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: containerd + runc (shim e2e), busybox-static (container rootfs),
# protobuf-compiler (the CRI client's build), python3 (non-GPU program checks).
packages=(containerd runc busybox-static protobuf-compiler python3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "== warning: missing packages ${missing[*]} (not root: install them yourself)" >&2
  fi
fi

export CARGO_TERM_COLOR=never
if [ -z "${SKIP_LINT:-}" ]; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
fi

echo "== cargo build --release --workspace"
cargo build --release --workspace --locked

if [ -z "${SKIP_LINT:-}" ]; then
  echo "== cargo clippy --workspace --all-targets"
  cargo clippy --release --workspace --all-targets --locked -- -D warnings
fi

echo "== cargo test --release --workspace"
cargo test --release --workspace --locked

# The shim's end-to-end tests again on containerd 1.7 (Debian trixie) and 2.x (Debian sid), from
# Debian's packages unpacked into a cache, never installed (scripts/containerd-versions.sh); the
# run above used the installed 1.6 (bookworm). SKIP_CONTAINERD_VERSIONS=1 skips them.
if [ -z "${SKIP_CONTAINERD_VERSIONS:-}" ]; then
  if bins=$(./scripts/containerd-versions.sh); then
    for bin in $bins; do
      echo "== shim end-to-end tests on containerd $("$bin/containerd" --version | awk '{ print $3 }')"
      # --workspace (these test names exist only in shim/): the same feature set as the run
      # above, so nothing is rebuilt.
      HAMI_CONTAINERD_BIN="$bin" cargo test --release --locked --workspace \
        --test ctr --test cri --test capped --test crash --test error_texts
    done
  elif [ "${CI:-}" = true ]; then
    echo "== error: cannot get containerd 1.7 and 2.x from Debian" >&2
    exit 1
  else
    echo "== warning: SKIPPED shim tests on containerd 1.7 and 2.x (cannot get them from Debian)" >&2
  fi
fi
