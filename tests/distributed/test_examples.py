"""The Celery and Ray examples run as documented, against a real Redis and the
PostgreSQL store, and print a ledger whose total is the shared pool's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .conftest import require_engine

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, redis_url: str, store_url: str, cwd: Path) -> str:
    ray_temp = tempfile.mkdtemp(prefix="st-ray-")  # short: unix socket paths are limited
    env = os.environ | {
        "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/3",  # apart from the tests' queues
        "STEPTRACE_STORE": store_url,
        # Keep Ray on loopback, without usage statistics (see test_ray.py).
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": ray_temp,
    }
    try:
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / name)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("name", "engine"), [("celery_fanout.py", "celery"), ("ray_fanout.py", "ray")]
)
def test_the_fan_out_example_stores_every_part_within_the_shared_budget(
    name: str, engine: str, redis_url: str, store_url: str, tmp_path: Path
) -> None:
    require_engine(engine, engine)
    out = run_example(name, redis_url, store_url, tmp_path)
    steps = [line.split() for line in out.splitlines() if line.startswith("summarize ")]
    assert len(steps) == 8
    statuses = [row[3] for row in steps]
    assert "completed" in statuses
    assert "skipped" in statuses  # the shared budget refused the rest
    assert "8 worker parts stored under fan_out" in out
    found = re.search(r"shared pool: (\d+) tokens of 200, ledger: (\d+) tokens", out)
    assert found is not None, out
    assert found[1] == found[2]
    assert int(found[1]) == 32 * statuses.count("completed") <= 200
