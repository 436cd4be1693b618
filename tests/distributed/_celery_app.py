"""The Celery app the tests' worker runs (``celery -A tests.distributed._celery_app
worker``), written as the README tells users to: each pool process starts
recording at ``worker_process_init`` and stops at ``worker_process_shutdown``;
the task continues the carrier's run.

The broker and result backend come from ``$STEPTRACE_CELERY_BROKER`` and
``$STEPTRACE_CELERY_BACKEND`` in the worker; the test process sets them on
``app.conf`` before sending.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from . import _work

app = Celery("steptrace-tests")
app.conf.update(
    broker_url=os.environ.get("STEPTRACE_CELERY_BROKER"),
    result_backend=os.environ.get("STEPTRACE_CELERY_BACKEND"),
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)


@worker_process_init.connect
def start_recording(**_: Any) -> None:
    _work.setup_worker()


@worker_process_shutdown.connect
def stop_recording(**_: Any) -> None:
    _work.stop_worker()


@app.task(name="summarize")
def summarize_task(carrier: dict[str, Any], doc: str) -> dict[str, Any]:
    return _work.summarize_part(carrier, doc)


@app.task(name="ping")
def ping() -> str:
    return "pong"
