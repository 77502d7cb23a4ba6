#!/usr/bin/env bash
# Installs what building and testing ringkv needs on a fresh Debian (or Ubuntu) machine:
# a C/C++ toolchain and libclang for the RocksDB bindings, nftables and faketime for the
# partition tests, protoc for the etcd client crate of `ringkv-compare` (which CI lints), jq for
# the benchmark scripts, and a
# Rust toolchain when none is installed. Safe to run again.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(build-essential clang libclang-dev pkg-config ca-certificates curl iproute2 nftables faketime procps protobuf-compiler jq)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing the Rust toolchain (rustup)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
echo "setup: $(cargo --version)"
