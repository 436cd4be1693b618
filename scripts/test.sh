#!/usr/bin/env bash
# Set up and run every check: ruff (lint + format), import layers, mypy --strict, pytest.
# pytest runs on parallel workers (pytest-xdist: one per core, or
# STEPTRACE_TEST_WORKERS=N; 0 runs in this process), sharing one PostgreSQL and
# one Redis server for the run. mypy (one process, its cache in .mypy_cache
# reused between runs) checks meanwhile, so a cold check does not leave a core
# idle; its report is printed after pytest's. Arguments go to pytest:
# scripts/test.sh tests/store -x
# PYTHON and STEPTRACE_VENV choose the interpreter and venv (see setup.sh);
# STEPTRACE_LINT=0 skips ruff, mypy and lint-imports (CI runs them once, on Python 3.11).
# Run whole (no arguments), it then runs the core's tests once more with the
# compiled accelerators off (STEPTRACE_PURE_PYTHON=1): the pure-Python path
# they mirror is what users without a C compiler run.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${STEPTRACE_VENV:-.venv}"
scripts/setup.sh dev
mypy_pid=""
if [ "${STEPTRACE_LINT:-1}" != 0 ]; then
    echo "== ruff check"; "$venv/bin/ruff" check .
    echo "== ruff format --check"; "$venv/bin/ruff" format --check .
    echo "== lint-imports (the layers of DESIGN.md)"; "$venv/bin/lint-imports" --no-cache --no-logo
    mypy_log="$(mktemp)"
    trap 'rm -f "$mypy_log"; [ -z "$mypy_pid" ] || kill "$mypy_pid" 2>/dev/null || true' EXIT
    "$venv/bin/mypy" >"$mypy_log" 2>&1 &
    mypy_pid=$!
    echo "== mypy --strict: running beside pytest"
fi
echo "== pytest ($("$venv/bin/python" --version))"
status=0
"$venv/bin/python" -m pytest -n "${STEPTRACE_TEST_WORKERS:-auto}" --dist loadgroup "$@" || status=$?
if [ $# -eq 0 ]; then
    echo "== pytest, the core's tests on the pure-Python path (STEPTRACE_PURE_PYTHON=1)"
    STEPTRACE_PURE_PYTHON=1 "$venv/bin/python" -m pytest -n "${STEPTRACE_TEST_WORKERS:-auto}" \
        -q tests/test_*.py tests/guarantees || status=$?
fi
if [ -n "$mypy_pid" ]; then
    echo "== mypy --strict"
    mypy_status=0
    wait "$mypy_pid" || mypy_status=$?
    mypy_pid=""
    cat "$mypy_log"
    [ "$mypy_status" = 0 ] || status=1
fi
exit "$status"
