#!/usr/bin/env bash
# What joining a node costs while clients run (README: "Membership and topology changes"):
#   1. a local 3-node cluster (RF 3) is loaded with KEYS distinct keys (1,000,000 by default,
#      100-byte values, at QUORUM);
#   2. an open-loop QUORUM write load at RATE ops/s over those keys runs in WINDOW-second
#      windows: BASELINE windows with no change, then windows for as long as
#      `ringkv cluster add` joins a fourth node (streaming throttled by the node's
#      `streaming.max-bytes-per-sec`, 8 MiB/s by default);
#   3. it prints every window's throughput and p50/p99/p99.9/max (corrected for coordinated
#      omission), and the join's time, records and bytes streamed.
# Everything lives in a temporary directory that is removed at the end, nodes included. Every
# loop is bounded: at most MAX_JOIN_WINDOWS windows while the join runs. KEEP=1 keeps the
# directory (node logs, RocksDB LOG files) and prints where it is.
#   KEYS=200000 RATE=2000 ./scripts/bench-join.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-1000000}
RATE=${RATE:-4000}
WINDOW=${WINDOW:-10}
BASELINE=${BASELINE:-3}
MAX_JOIN_WINDOWS=${MAX_JOIN_WINDOWS:-60}
./scripts/setup.sh
. scripts/env.sh
cargo build --release -p ringkv-client -p ringkv-node
RINGKV="$RINGKV_BIN/ringkv"
export RINGKV_NODE_BIN="$RINGKV_BIN/ringkv-node"

WORK=$(mktemp -d /tmp/ringkv-join.XXXXXX)
CLUSTER="$WORK/cluster"
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then
    "$RINGKV" --cluster-dir "$CLUSTER" cluster down >/dev/null 2>&1 || true
    echo "bench-join: kept $WORK (KEEP=1)"
  else
    "$RINGKV" --cluster-dir "$CLUSTER" cluster down --purge >/dev/null 2>&1 || true
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

"$RINGKV" --cluster-dir "$CLUSTER" cluster up --nodes 3 --base-port 0 >/dev/null
echo "bench-join: loading $KEYS keys at QUORUM..."
"$RINGKV" --cluster-dir "$CLUSTER" bench --workload read --keys "$KEYS" --ops 1 \
  --concurrency 64 --json >"$WORK/preload.json"
jq -r '"loaded \(.preload.keys) keys in \(.preload.elapsed_s | . * 10 | round / 10) s, \(.preload.errors) errors"' \
  "$WORK/preload.json"
du -sh "$CLUSTER"/node-*/data | sed 's/^/  data: /'

# One window of load; prints one row.
window() {
  local label=$1
  "$RINGKV" --cluster-dir "$CLUSTER" bench --workload write -c QUORUM --keys "$KEYS" \
    --rate "$RATE" --concurrency 64 --duration "$WINDOW" --json >"$WORK/window.json" || true
  jq -r --arg l "$label $(date +%T)" '.ops.write as $w | $w.latency_us as $h |
      "\($l)\t\(.ops_per_s | round)\t\($h.p50 / 1000)\t\($h.p99 / 1000)\t\($h.p999 / 1000)\t\($h.max / 1000)\t\($w.errors | [.[]] | add // 0)"' \
    "$WORK/window.json"
}

printf 'window\tops/s\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\terrors\n'
for i in $(seq 1 "$BASELINE"); do window "baseline-$i"; done

started=$(date +%s.%N)
"$RINGKV" --cluster-dir "$CLUSTER" cluster add --json >"$WORK/add.json" 2>"$WORK/add.err" &
add_pid=$!
n=0
while kill -0 "$add_pid" 2>/dev/null && [ "$n" -lt "$MAX_JOIN_WINDOWS" ]; do
  n=$((n + 1))
  window "join-$n"
done
add_status=0
wait "$add_pid" || add_status=$?
ended=$(date +%s.%N)
for i in 1 2; do window "after-$i"; done

if [ "$add_status" -ne 0 ]; then
  echo "bench-join: cluster add failed (exit $add_status):" >&2
  cat "$WORK/add.err" "$WORK/add.json" >&2
  exit "$add_status"
fi
jq -r '"join: transition \(.transition) took \(.seconds | . * 10 | round / 10) s (the CLI'"'"'s count, from commit to the new ring), \(.records_streamed) records, \(.bytes_streamed / 1e6 | . * 10 | round / 10) MB streamed"' \
  "$WORK/add.json"
awk -v s="$started" -v e="$ended" 'BEGIN { printf "join: %.1f s from `cluster add` to its exit (node start included)\n", e - s }'
du -sh "$CLUSTER"/node-4/data | sed 's/^/  new node data: /'
