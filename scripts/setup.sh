#!/usr/bin/env bash
# Create a venv (if needed) and install steptrace with the given extras into it.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh dev, scripts/setup.sh schema,prices
# PYTHON picks the interpreter, STEPTRACE_VENV the venv (default .venv), e.g.
#   PYTHON=python3.13 STEPTRACE_VENV=.venv-3.13 scripts/setup.sh dev
# Installs only when pyproject.toml changed or an extra is missing: a venv set
# up for `dev` already has what the demo's extras ask for.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
python="${PYTHON:-python3}"
venv="${STEPTRACE_VENV:-.venv}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "steptrace needs Python 3.11 or newer; '$python' is $("$python" --version 2>&1)." >&2
    echo "Set PYTHON=/path/to/python3.11 and run again." >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi

# The stamp holds a hash of what the install is built from (pyproject.toml,
# setup.py and the compiled accelerators' C sources, which an editable install
# compiles in place), then the extras installed, one a line.
stamp="$venv/.steptrace-installed"
hash="$(cat pyproject.toml setup.py $(compgen -G "src/steptrace/_speedups/*.c" || true) | sha256sum | cut -c1-16)"
installed=()
if [ "$(head -n1 "$stamp" 2>/dev/null)" = "$hash" ]; then
    mapfile -t installed < <(tail -n +2 "$stamp")
fi
# `dev` holds every other extra (see pyproject.toml).
missing=()
for extra in ${extras//,/ }; do
    case " ${installed[*]} " in
        *" $extra "* | *" dev "*) ;;
        *) missing+=("$extra") ;;
    esac
done
if [ ! -f "$stamp" ] || [ "$(head -n1 "$stamp")" != "$hash" ] || [ ${#missing[@]} -gt 0 ]; then
    want=("${installed[@]}" "${missing[@]}")
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    spec="."
    if [ ${#want[@]} -gt 0 ]; then
        spec=".[$(IFS=,; echo "${want[*]}")]"
    fi
    "$venv/bin/python" -m pip install --quiet -e "$spec"
    printf '%s\n' "$hash" "${want[@]}" > "$stamp"
fi
