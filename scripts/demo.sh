#!/usr/bin/env bash
# The README's first command: installs what is needed, builds ringkv, starts a local 3-node
# cluster (RF 3) and writes and reads at several consistency levels. The cluster keeps running;
# stop it with `ringkv cluster down`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. scripts/env.sh
cargo build --release --workspace --bins
ringkv() { "$RINGKV_BIN/ringkv" "$@"; }
ringkv cluster up --nodes 3 --rf 3
for level in ONE QUORUM ALL LOCAL_QUORUM; do
  ringkv put "greeting-$level" "hello at $level" --consistency "$level"
  printf '%-13s get -> %s\n' "$level" "$(ringkv get "greeting-$level" --consistency "$level")"
done
ringkv put counter 1 --consistency ANY
ringkv delete counter --consistency QUORUM
ringkv get counter --consistency QUORUM || echo "counter -> not found after delete (exit $?)"
ringkv cluster status
echo
echo "The cluster is running. Try: $RINGKV_BIN/ringkv get greeting-ONE --consistency ALL"
echo "Stop it with: $RINGKV_BIN/ringkv cluster down"
