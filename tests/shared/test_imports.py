"""Shared budgets cost nothing until used: the core imports no client, each
pool imports only its own, and a missing client names the extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_core_and_each_pool_import_only_what_they_need() -> None:
    done = python(
        "import sys, steptrace\n"
        "assert steptrace.SharedBudget and steptrace.inject and steptrace.extract\n"
        "print(sorted(m for m in ('redis', 'psycopg', 'steptrace.shared') if m in sys.modules))\n"
        "from steptrace.shared import RedisPool\n"
        "RedisPool('redis://127.0.0.1:1/0')\n"
        "print('psycopg' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "False"]


@pytest.mark.parametrize(
    ("client", "pool", "extra"),
    [
        ("redis", "RedisPool", "steptrace[redis]"),
        ("psycopg", "PostgresPool", "steptrace[postgres]"),
    ],
)
def test_a_missing_client_names_its_extra(client: str, pool: str, extra: str) -> None:
    done = python(
        f"import sys; sys.modules[{client!r}] = None\nfrom steptrace.shared import {pool}\n"
    )
    assert done.returncode != 0
    assert f"pip install '{extra}'" in done.stderr
