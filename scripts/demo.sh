#!/usr/bin/env bash
# Set up and run the main demo: a budgeted multi-step pipeline, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
exec .venv/bin/python examples/research_brief.py "$@"
