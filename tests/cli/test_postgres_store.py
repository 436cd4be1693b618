"""The CLI against a real PostgreSQL store: ``--store postgresql://...`` (or
``STEPTRACE_STORE``) records, lists, shows and replays exactly as with SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from .._services import fresh_database
from .conftest import PIPELINE, Cli


@pytest.fixture
def db_url(postgres_url: str) -> Iterator[str]:
    with fresh_database(postgres_url) as url:
        yield url


def test_record_list_show_and_replay_in_postgresql(cli: Cli, db_url: str, tmp_path: Path) -> None:
    done = cli("run", "--store", db_url, str(PIPELINE), env={"PIPELINE_SALT": " (recorded)"})
    assert done.returncode == 0, done.stderr
    listed = json.loads(cli("runs", "--json", env={"STEPTRACE_STORE": db_url}).stdout)
    (run,) = listed["runs"]
    assert (run["name"], run["status"], run["input_tokens"], run["output_tokens"]) == (
        "pipeline",
        "completed",
        300,
        60,
    )
    shown = json.loads(cli("show", run["id"][:-1], "--json", "--store", db_url).stdout)
    fetch = shown["tree"][0]["children"][0]["children"][0]
    assert fetch["budget"]["used_tokens"] == 120
    replay = cli("replay", "--store", db_url, "last", str(PIPELINE), env={"PIPELINE_SALT": "!"})
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.strip().endswith(" (recorded)")
    assert not (tmp_path / ".steptrace").exists()
