#!/usr/bin/env bash
# Set up and run every check: ruff (lint + format), mypy --strict, import layers, pytest.
# pytest runs on parallel workers (pytest-xdist: one per core, or
# STEPTRACE_TEST_WORKERS=N; 0 runs in this process), sharing one PostgreSQL and
# one Redis server for the run. Arguments go to pytest: scripts/test.sh tests/store -x
# PYTHON and STEPTRACE_VENV choose the interpreter and venv (see setup.sh);
# STEPTRACE_LINT=0 skips ruff, mypy and lint-imports (CI runs them once, on Python 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${STEPTRACE_VENV:-.venv}"
scripts/setup.sh dev
if [ "${STEPTRACE_LINT:-1}" != 0 ]; then
    echo "== ruff check"; "$venv/bin/ruff" check .
    echo "== ruff format --check"; "$venv/bin/ruff" format --check .
    echo "== mypy --strict"; "$venv/bin/mypy"
    echo "== lint-imports (the layers of DESIGN.md)"; "$venv/bin/lint-imports" --no-cache --no-logo
fi
echo "== pytest ($("$venv/bin/python" --version))"
"$venv/bin/python" -m pytest -n "${STEPTRACE_TEST_WORKERS:-auto}" --dist loadgroup "$@"
