#!/usr/bin/env bash
# Install the Debian packages the integration tests use: PostgreSQL and Redis
# (started on 127.0.0.1 by the tests themselves), Chromium (the web viewer's
# browser tests) and a C compiler (the optional compiled accelerators, which
# CI tests against their pure-Python reference). Needs root; does nothing when
# they are all present.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v cc >/dev/null 2>&1 || need+=(gcc)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${need[*]}; run as root or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
