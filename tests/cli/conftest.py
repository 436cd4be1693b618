"""Fixtures of the CLI tests: the real ``steptrace`` entry point in a subprocess,
run in a temporary working directory against a real SQLite store file.

``cli(*args)`` runs ``steptrace`` (the console script when installed, else
``python -m steptrace.cli``) and returns the completed process; the
environment carries no ``STEPTRACE_STORE`` or ``NO_COLOR`` unless a test sets
them. ``recorded`` is a store holding one run of ``scripts/pipeline.py``
(its known usage: see that script's docstring), shared by the tests of a
module that only read it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from steptrace.store import SQLiteStore, StoredRun

SCRIPTS = Path(__file__).resolve().parent / "scripts"
PIPELINE = SCRIPTS / "pipeline.py"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

_CONSOLE_SCRIPT = Path(sys.executable).parent / "steptrace"
ENTRY = (
    [str(_CONSOLE_SCRIPT)] if _CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "steptrace.cli"]
)

Cli = Callable[..., subprocess.CompletedProcess[str]]


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("STEPTRACE_STORE", "NO_COLOR")}
    env.pop("STEPTRACE_CAPTURE_CONTENT", None)
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENTRY, *args],
        cwd=cwd,
        env=cli_env(env),
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """``steptrace`` run in ``tmp_path`` (its default store: .steptrace/runs.db there)."""

    def call(
        *args: str, env: Mapping[str, str] | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=tmp_path, env=env, input=input)

    return call


def read_runs(store_path: Path) -> list[StoredRun]:
    """Every run in the store file, oldest first."""
    with SQLiteStore(store_path) as store:
        rows = store.list_runs(limit=1000)
        runs = [store.get_run(row.id) for row in reversed(rows)]
    return [run for run in runs if run is not None]


@dataclass(frozen=True)
class Recorded:
    workdir: Path
    store: Path
    run_id: str

    def cli(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=self.workdir, env=env)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    workdir = tmp_path_factory.mktemp("recorded")
    done = run_cli("run", str(PIPELINE), cwd=workdir, env={"PIPELINE_SALT": " (recorded)"})
    assert done.returncode == 0, done.stderr
    store = workdir / ".steptrace" / "runs.db"
    (run,) = read_runs(store)
    return Recorded(workdir, store, run.id)
