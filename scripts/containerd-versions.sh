#!/usr/bin/env bash
# Newer containerd for the shim's end-to-end tests, from Debian's own packages, without touching
# the system: containerd 1.7 (trixie) and 2.x (sid) are downloaded with a private apt source
# list and state, unpacked with `dpkg -x` into a cache, and never installed. The installed runc
# serves them all.
#
#   scripts/containerd-versions.sh          # prints one directory per suite (containerd, ctr,
#                                           # containerd-shim-runc-v2 inside), for HAMI_CONTAINERD_BIN
#
# Cache: $HAMI_CONTAINERD_CACHE (default ~/.cache/hami/containerd). A suite already unpacked
# there (<cache>/<suite>/bin, plus the .debs in <cache>/debs) is used as is, with no network;
# HAMI_CONTAINERD_REFRESH=1 downloads again.
# Suites: $HAMI_CONTAINERD_SUITES (default "trixie sid").
set -euo pipefail
trap 'echo "containerd-versions.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR

cache="${HAMI_CONTAINERD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hami/containerd}"
suites=(${HAMI_CONTAINERD_SUITES:-trixie sid})
mkdir -p "$cache"

# The machine's own Debian mirror: the URIs line of the main (non-security) deb822 stanza, or
# the first `deb` line of sources.list.
debian_uri() {
  local uri=""
  if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
      /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' \
      /etc/apt/sources.list)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

tools=(containerd ctr containerd-shim-runc-v2)
unpacked() {
  local tool
  for tool in "${tools[@]}"; do [ -x "$cache/$1/bin/$tool" ] || return 1; done
}

missing=()
for suite in "${suites[@]}"; do
  if [ -n "${HAMI_CONTAINERD_REFRESH:-}" ]; then rm -rf "${cache:?}/$suite"; fi
  unpacked "$suite" || missing+=("$suite")
done

if ((${#missing[@]})); then
  apt_dir="$cache/apt"
  mkdir -p "$apt_dir/sources" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$cache/debs"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  {
    echo "Types: deb"
    echo "URIs: $(debian_uri)"
    echo "Suites: ${missing[*]}"
    echo "Components: main"
    if [ -r "$keyring" ]; then echo "Signed-By: $keyring"; fi
  } >"$apt_dir/sources/hami-containerd.sources"
  apt_opts=(
    -o "Dir::Etc::SourceList=/dev/null"
    -o "Dir::Etc::SourceParts=$apt_dir/sources"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir/cache"
    -o "Acquire::Languages=none"
    -o "APT::Sandbox::User=root"
  )
  echo "== downloading containerd of ${missing[*]} from $(debian_uri) into $cache" >&2
  apt-get -qq "${apt_opts[@]}" update >&2
  packages=()
  for suite in "${missing[@]}"; do packages+=("containerd/$suite"); done
  (cd "$cache/debs" && apt-get -qq "${apt_opts[@]}" download "${packages[@]}" >&2)
  for suite in "${missing[@]}"; do
    # awk reads to the end: an early exit would kill apt-cache with SIGPIPE (pipefail).
    version=$(apt-cache "${apt_opts[@]}" show "containerd/$suite" | awk '/^Version:/ && !v { v = $2 } END { print v }')
    deb=$(ls "$cache/debs/containerd_$(echo "$version" | sed 's/^[0-9]*://')_"*.deb)
    rm -rf "${cache:?}/$suite"
    mkdir -p "$cache/$suite/bin" "$cache/$suite/root"
    dpkg -x "$deb" "$cache/$suite/root"
    # Only the three programs the tests run are kept (the .deb stays in debs/).
    for tool in "${tools[@]}"; do
      if [ -x "$cache/$suite/root/usr/bin/$tool" ]; then mv "$cache/$suite/root/usr/bin/$tool" "$cache/$suite/bin/"; fi
    done
    rm -rf "${cache:?}/$suite/root"
    echo "$version" >"$cache/$suite/version"
    unpacked "$suite" || { echo "containerd of $suite: $deb lacks containerd, ctr or containerd-shim-runc-v2" >&2; exit 1; }
  done
  rm -rf "${apt_dir:?}" # the package lists (60 MB): the .debs and the unpacked trees are the cache
fi

for suite in "${suites[@]}"; do
  echo "$cache/$suite/bin"
done
