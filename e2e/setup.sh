#!/usr/bin/env bash
# Installs what a fresh machine lacks for the demo and the tests: Debian packages (openssl,
# redis-server, clickhouse-server), the Python test clients, and the pinned control-plane
# binaries with kubectl and helm (built once into ~/.cache/bud-foundry); prints their folder.
# Idempotent and quiet when everything is present.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
log() { echo "setup: $*" >&2; }

packages=()
command -v openssl >/dev/null || packages+=(openssl)
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || packages+=(redis-server)
command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] || command -v clickhouse >/dev/null ||
  packages+=(clickhouse-server clickhouse-client)
if ((${#packages[@]})); then
  log "installing ${packages[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

requirements=()
for f in "$repo"/gateway/tests/python/requirements.txt "$repo"/simulator/tests/python/requirements.txt "$repo"/e2e/requirements.txt; do
  [ -f "$f" ] && requirements+=(-r "$f")
done
if python3 -m pip install --disable-pip-version-check --dry-run "${requirements[@]}" 2>/dev/null | grep -q "Would install"; then
  log "installing Python test packages"
  python3 -m pip install -q --disable-pip-version-check "${requirements[@]}" >&2
fi

# Prints the directory of the control-plane binaries, kubectl and helm.
"$here/cluster/build-binaries.sh"
