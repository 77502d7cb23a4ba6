#!/usr/bin/env bash
# The README's test command: installs what is needed, then runs formatting and lint checks and
# every test of the workspace (unit, property, and integration tests that start real nodes).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. scripts/env.sh
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
# ringkv-compare (etcd and Redis clients) is built only with its feature: keep it compiling.
cargo clippy --release -p ringkv-client --features compare --all-targets -- -D warnings
cargo build --release --workspace --bins
cargo test --release --workspace 2>&1 | tee "${TMPDIR:-/tmp}/ringkv-test.log"
