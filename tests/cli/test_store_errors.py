"""A store the CLI cannot use gives a clear error, never a traceback; one it
cannot write is still read.

- A page-damaged SQLite file: ``runs``, ``show``, ``export`` and ``portal``
  end with ``steptrace: error:`` naming the file.
- A store on a read-only mount: ``runs``, ``show``, ``export`` and the portal
  read it (opened ``mode=ro``/``immutable``, no migration).
- A full disk: the store's error says "database or disk is full", not the
  "cannot rollback" of a second rollback.

The mount tests need root (a tmpfs is mounted); they skip with the reason
elsewhere, and fail in CI (``STEPTRACE_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import steptrace
from steptrace.store import SQLiteStore, record_runs

from .conftest import ENTRY, Cli, cli_env

PAGE = 4096


def fill(path: Path, runs: int = 30, pad: int = 2000) -> None:
    """A store with ``runs`` runs of 20 steps each (``pad`` bytes of metadata a run)."""
    writer = record_runs(path)

    @steptrace.step
    def work(i: int) -> None:
        steptrace.record_llm_usage("gpt-4o-mini", 10, 5, cost_usd=0.001)

    try:
        for r in range(runs):
            with steptrace.run(f"r{r}", metadata={"pad": "x" * pad}):
                for i in range(20):
                    work(i)
    finally:
        writer.stop()


def damage(path: Path, table: str) -> None:
    """Overwrite the b-tree pages of ``table`` (its root and what follows)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with path.open("r+b") as file:
        for page in range(root, root + 3):
            file.seek((page - 1) * PAGE)
            file.write(b"\xa5" * PAGE)


def assert_clear_error(result: subprocess.CompletedProcess[str], path: Path) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("steptrace: error: "), result.stderr
    assert str(path) in result.stderr, result.stderr
    assert "malformed" in result.stderr or "not a database" in result.stderr, result.stderr


@pytest.mark.parametrize("table", ["runs", "spans"])
def test_a_damaged_store_is_a_clear_error_naming_the_file(
    cli: Cli, tmp_path: Path, table: str
) -> None:
    db = tmp_path / "runs.db"
    fill(db)
    damage(db, table)
    reads_runs = table == "runs"
    for command in (("runs",), ("show", "last"), ("export", "last", "-o", "-")):
        result = cli("--store", str(db), *command)
        if reads_runs or command[0] != "runs":  # `runs` never reads the spans
            assert_clear_error(result, db)
    if reads_runs:
        assert_clear_error(cli("--store", str(db), "portal", "--port", "0"), db)


@contextlib.contextmanager
def read_only_mount(folder: Path) -> Iterator[Path]:
    """A tmpfs mounted at ``folder``, handed back to fill, then made read-only."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        reason = "mounting a read-only file system needs root and mount(8)"
        if os.environ.get("STEPTRACE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_store_on_a_read_only_mount_is_read(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    fill(source, runs=3, pad=10)
    with read_only_mount(tmp_path / "ro") as mount:
        db = mount / "runs.db"
        shutil.copy(source, db)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        with pytest.raises(sqlite3.OperationalError):
            SQLiteStore(db)  # what every command failed with before
        runs = cli("--store", str(db), "runs", "--json")
        assert runs.returncode == 0, runs.stderr
        assert [r["name"] for r in json.loads(runs.stdout)["runs"]] == ["r2", "r1", "r0"]
        show = cli("--store", str(db), "--color", "never", "show", "last")
        assert show.returncode == 0, show.stderr
        assert "20 completed" in show.stdout
        export = cli("--store", str(db), "export", "r1", "-o", "-")
        assert export.returncode == 0, export.stderr
        assert export.stdout.count("\n") > 20
        assert sorted(p.name for p in mount.iterdir()) == ["runs.db"]
        assert portal_runs(db) == 3


def portal_runs(db: Path) -> int:
    """How many runs ``steptrace portal`` over ``db`` lists (started and stopped here)."""
    process = subprocess.Popen(
        [*ENTRY, "--store", str(db), "portal", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("steptrace portal on http://127.0.0.1:"), (
            line + process.stderr.read() if process.stderr else line
        )
        url = line.split()[3]
        deadline = time.monotonic() + 30  # a hang guard: the line comes before listening
        while True:
            try:
                with urllib.request.urlopen(url + "api/runs", timeout=30) as response:
                    return len(json.load(response)["runs"])
            except urllib.error.URLError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


def test_a_full_disk_is_named_in_the_store_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with read_only_mount(tmp_path / "small") as mount:
        subprocess.run(["mount", "-o", "remount,size=256k", str(mount)], check=True)
        caplog.set_level(logging.WARNING, logger="steptrace.store")
        fill(mount / "runs.db", runs=40, pad=20_000)
    logged = caplog.text
    assert "database or disk is full" in logged
    assert "cannot rollback" not in logged
