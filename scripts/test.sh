#!/usr/bin/env bash
# Set up and run every check: ruff (lint + format), mypy --strict, pytest.
# pytest runs on parallel workers (pytest-xdist: one per core, or
# STEPTRACE_TEST_WORKERS=N; 0 runs in this process), sharing one PostgreSQL and
# one Redis server for the run. Arguments go to pytest: scripts/test.sh tests/store -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
echo "== ruff check"; .venv/bin/ruff check .
echo "== ruff format --check"; .venv/bin/ruff format --check .
echo "== mypy --strict"; .venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -n "${STEPTRACE_TEST_WORKERS:-auto}" --dist loadgroup "$@"
