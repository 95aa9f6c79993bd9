#!/usr/bin/env bash
# Builds the gateway and runs the Python tests (official openai/anthropic SDKs) against it.
# Needs: python3 with pytest, openai, anthropic (pip install -r gateway/tests/python/requirements.txt).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
cargo build -p bud-gateway
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
export BUD_GATEWAY_BIN="$target/debug/bud-gateway"
cd "$here/python"
exec python3 -m pytest -q "$@"
