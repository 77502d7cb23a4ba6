#!/usr/bin/env bash
# ringkv side by side with etcd and Redis on this machine (README: "Comparing with etcd and
# Redis"): installs what it needs (Debian's etcd-server and redis-server; scripts/setup.sh adds
# the build dependencies, protoc for the etcd client crate among them), builds `ringkv-compare`,
# runs it, and stops and removes everything the run started. Arguments go to ringkv-compare,
# for example
#   ./scripts/compare.sh --duration 5 --concurrency 32 --json
# Safe to run again; a second run reuses the installed packages and the build.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. scripts/env.sh

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# package:service it may start
packages=(etcd-server:etcd redis-server:redis-server)
missing=()
for entry in "${packages[@]}"; do
  p="${entry%%:*}"
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$entry")
done
if [ "${#missing[@]}" -gt 0 ]; then
  names=()
  for entry in "${missing[@]}"; do names+=("${entry%%:*}"); done
  echo "compare: installing ${names[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${names[@]}" >/dev/null
  # Debian starts the services of the server packages it installs. The comparison runs its own
  # servers on free loopback ports with data in a temporary directory, so the system services
  # this script just installed are stopped and disabled again; services of packages that were
  # already installed are left as they are.
  for entry in "${missing[@]}"; do
    service="${entry#*:}"
    [ -n "$service" ] || continue
    if [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$service" ]; then
      $SUDO service "$service" stop >/dev/null 2>&1 || true
      $SUDO update-rc.d "$service" disable >/dev/null 2>&1 || true
    fi
    echo "compare: the $service system service (installed just now) is stopped and disabled"
  done
fi

echo "compare: building ringkv-node and ringkv-compare (release)"
cargo build --release -p ringkv-node --bin ringkv-node
cargo build --release -p ringkv-client --features compare --bin ringkv-compare

work="$(mktemp -d "${TMPDIR:-/tmp}/ringkv-compare.XXXXXX")"
keep=0
for arg in "$@"; do [ "$arg" = "--keep" ] && keep=1; done

# ringkv-compare stops every server it started on every exit, Ctrl-C and SIGTERM included. If it
# was killed outright, its servers are still listed in $work/pids: stop exactly those, and only
# while they still belong to this run (their command line or working directory is in $work; a
# Redis server renames its command line, so for it the working directory, its data directory,
# says so).
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -f "$work/pids" ]; then
    local left=()
    while read -r pid _; do
      [[ "$pid" =~ ^[0-9]+$ ]] && [ "$pid" -gt 1 ] || continue
      [ -d "/proc/$pid" ] || continue
      if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$work" ||
        readlink "/proc/$pid/cwd" 2>/dev/null | grep -qF -- "$work"; then
        left+=("$pid")
      fi
    done <"$work/pids"
    if [ "${#left[@]}" -gt 0 ]; then
      echo "compare: stopping ${#left[@]} server process(es) left behind: ${left[*]}" >&2
      kill -TERM "${left[@]}" 2>/dev/null || true
      for _ in $(seq 1 100); do
        alive=0
        for pid in "${left[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
      done
      kill -KILL "${left[@]}" 2>/dev/null || true
    fi
  fi
  if [ "$keep" -eq 1 ]; then
    echo "compare: data and logs kept in $work" >&2
  else
    rm -rf -- "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "compare: load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs before the run"
# In the background so that a signal to this script is handled at once: it is passed on to
# ringkv-compare, which then stops its servers, and the script waits for that.
"$RINGKV_BIN/ringkv-compare" --work-dir "$work" "$@" &
child=$!
forward() {
  kill -TERM "$child" 2>/dev/null || true
  wait "$child" 2>/dev/null || true
  exit "$1"
}
trap 'forward 130' INT
trap 'forward 143' TERM
wait "$child"
