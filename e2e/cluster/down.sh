#!/usr/bin/env bash
# Stops a local control plane started by up.sh and frees its ports.
#
#   e2e/cluster/down.sh [NAME]            stop (default NAME=bud); keeps logs
#   e2e/cluster/down.sh --check [NAME]    exit 0 only if every component is running
#   e2e/cluster/down.sh --purge [NAME]    stop and delete the state directory
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
mode=stop
case "${1:-}" in --check) mode=check; shift ;; --purge) mode=purge; shift ;; esac
name="${1:-bud}"
state="${BUD_CLUSTER_ROOT:-$repo/.work/clusters}/$name"
[ -f "$state/pids" ] || { [ "$mode" = check ] && exit 1; exit 0; }

if [ "$mode" = check ]; then
  while read -r component pid; do
    kill -0 "$pid" 2>/dev/null || { echo "$component is not running" >&2; exit 1; }
  done < "$state/pids"
  exit 0
fi

# Stop in reverse start order; each component runs in its own session (setsid), so its
# process group holds any children.
tac "$state/pids" | while read -r component pid; do
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
done
deadline=$((SECONDS + 20))
while read -r component pid; do
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
done < "$state/pids"
rm -f "$state/pids"
[ "$mode" = purge ] && rm -rf "$state"
exit 0
