#!/usr/bin/env bash
# Install Arize Phoenix (a real OpenTelemetry receiver) into a venv of its own,
# for the opt-in integration test tests/integration/test_phoenix.py.
# Phoenix pins openai/anthropic versions that clash with steptrace's dev
# extras, so it never goes into .venv and is no extra of steptrace.
# Usage: scripts/phoenix.sh            (venv in .cache/phoenix-venv)
#        STEPTRACE_PHOENIX_VENV=/path scripts/phoenix.sh
# Installs only when the venv has no Phoenix yet; prints the venv's python.
# Then: STEPTRACE_PHOENIX=1 scripts/test.sh tests/integration
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${STEPTRACE_PHOENIX_VENV:-.cache/phoenix-venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import importlib.metadata as m; m.version("arize-phoenix")' 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet arize-phoenix
fi
"$venv/bin/python" -c 'import sys; print(sys.executable)'
