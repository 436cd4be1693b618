#!/usr/bin/env bash
# Print the path of a working Python interpreter of the given minor version, e.g.
# `scripts/find-python.sh 3.13`: python3.13 on the PATH, else the newest pyenv
# build of it (this machine's image carries pyenv builds of 3.12 and 3.13; a
# pyenv shim on the PATH fails unless that version is selected, so each
# candidate is run to check). Exits 1, saying where it looked, when there is none.
set -euo pipefail
version="$1"
root="${PYENV_ROOT:-$HOME/.pyenv}"
candidates=()
if on_path="$(command -v "python$version")"; then
    candidates+=("$on_path")
fi
while IFS= read -r dir; do
    candidates+=("$dir/bin/python$version")
done < <(ls -d "$root/versions/$version".* 2>/dev/null | sort -V -r)
check="import sys; sys.exit(f'{sys.version_info[0]}.{sys.version_info[1]}' != '$version')"
for candidate in "${candidates[@]}"; do
    if "$candidate" -c "$check" >/dev/null 2>&1; then
        echo "$candidate"
        exit 0
    fi
done
echo "no working Python $version: not on the PATH, not in $root/versions" >&2
exit 1
