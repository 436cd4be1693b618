#!/usr/bin/env bash
# Set up and run every check: ruff (lint + format), mypy --strict, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
echo "== ruff check"; .venv/bin/ruff check .
echo "== ruff format --check"; .venv/bin/ruff format --check .
echo "== mypy --strict"; .venv/bin/mypy
echo "== lint-imports (the layers of DESIGN.md)"; .venv/bin/lint-imports --no-cache --no-logo
echo "== pytest"; .venv/bin/python -m pytest "$@"
