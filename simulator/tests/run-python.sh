#!/usr/bin/env bash
# Build bud-sim and run the emulator tests with the official OpenAI Python client.
# Needs: python3 with `openai` and `pytest` (see tests/python/requirements.txt); when they are
# missing, they are installed into a virtualenv at ${BUD_SIM_VENV:-simulator/tests/python/.venv}.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cd "$repo"
cargo build -p bud-simulator --bin bud-sim
case "$CARGO_TARGET_DIR" in
  /*) target="$CARGO_TARGET_DIR" ;;
  *) target="$repo/$CARGO_TARGET_DIR" ;;
esac
export BUD_SIM_BIN="$target/debug/bud-sim"
python="${PYTHON:-python3}"
if ! "$python" -c "import openai, pytest" 2>/dev/null; then
  venv="${BUD_SIM_VENV:-$here/python/.venv}"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet -r "$here/python/requirements.txt"
  python="$venv/bin/python"
fi
exec "$python" -m pytest -q "$here/python" "$@"
