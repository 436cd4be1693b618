"""A real Celery worker (prefork, two processes, Redis as broker and result
backend) continues one run: every task's step lands in the one PostgreSQL
store under the span that injected, and all tasks draw from one shared budget
whose limit holds. The worker starts once for the module."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from steptrace._shared import SharedPool
from steptrace.store import StoreWriter

from ._fanout import check_one_faithful_run, fan_out_run
from .conftest import require_engine

if TYPE_CHECKING:
    from celery import Celery

REPO = Path(__file__).resolve().parents[2]


def _redis_db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


@pytest.fixture(scope="module")
def celery_app(redis_url: str, store_url: str) -> Iterator[Celery]:
    """A Celery worker subprocess of ``_celery_app``, ready for tasks."""
    require_engine("celery", "celery")
    from . import _celery_app

    broker, backend = _redis_db(redis_url, 1), _redis_db(redis_url, 2)
    # A queue of this worker's own: parallel test processes share the broker,
    # and each one's worker records into that process's own store database.
    queue = "steptrace-tests-" + uuid.uuid4().hex[:12]
    env = os.environ | {
        "STEPTRACE_CELERY_BROKER": broker,
        "STEPTRACE_CELERY_BACKEND": backend,
        "STEPTRACE_STORE": store_url,
        "PYTHONPATH": str(REPO),
    }
    log = tempfile.NamedTemporaryFile(prefix="steptrace-celery-", suffix=".log")  # noqa: SIM115
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "--app",
            "tests.distributed._celery_app",
            "worker",
            "--pool=prefork",
            "--concurrency=2",
            "--loglevel=warning",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--hostname={queue}@%h",
            f"--queues={queue}",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    app = _celery_app.app
    app.conf.update(broker_url=broker, result_backend=backend, task_default_queue=queue)
    try:
        try:
            assert _celery_app.ping.delay().get(timeout=60) == "pong"
        except Exception:
            log.seek(0)
            raise AssertionError(
                "the Celery worker did not answer:\n" + log.read().decode(errors="replace")
            ) from None
        yield app
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: the pool's children end too
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        app.close()
        log.seek(0)
        shutdown_log = log.read().decode(errors="replace")
        log.close()
        assert "Traceback" not in shutdown_log, shutdown_log


def test_celery_tasks_continue_one_run_in_one_store_within_one_shared_budget(
    celery_app: Celery, pool: SharedPool, key: str, recording: StoreWriter, store_url: str
) -> None:
    from ._celery_app import summarize_task

    def dispatch(carrier: dict[str, Any], docs: list[str]) -> list[dict[str, Any]]:
        sent = [summarize_task.delay(carrier, doc) for doc in docs]
        return [result.get(timeout=60) for result in sent]

    run, budget, results = fan_out_run(dispatch, pool, key)
    check_one_faithful_run(store_url, run, budget, results, os.getpid())
