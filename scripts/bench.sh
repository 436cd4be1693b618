#!/usr/bin/env bash
# Set up and run the core benchmark (about 30 s). Extra arguments go to it,
# e.g. --quick, --json PATH, --check.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
exec .venv/bin/python benchmarks/bench_core.py "$@"
