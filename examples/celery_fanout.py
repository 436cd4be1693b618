"""One run fanned out to Celery workers, under one shared budget, offline.

The caller opens a run with a ``SharedBudget`` held in Redis; a step
``inject()``s a carrier and sends each document to a Celery task; each task
continues the run with ``extract(carrier)`` and summarizes its document with a
scripted model (no API key, no network). Every worker process records into the
same run store, so the run read back holds each task's step under the step
that sent it, and the pool's total is exactly what the workers spent. The
budget is too small for every document: the workers that find it spent are
refused before calling the model, and their steps are recorded as ``skipped``.

Needs a Redis server (broker, result backend and budget pool) and
``pip install 'steptrace[celery]'``; run ``python examples/celery_fanout.py``.
``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) and ``STEPTRACE_STORE``
(default ``.steptrace/runs.db``, or a ``postgresql://`` URL) say where. The
script starts its own worker (``celery -A celery_fanout worker``) and stops it
at the end; in production you run the workers yourself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

import steptrace
import steptrace.store
from steptrace import SharedBudget
from steptrace.llm import ScriptedProvider, llm_call
from steptrace.report import ledger_table
from steptrace.shared import RedisPool

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
STORE = os.environ.get("STEPTRACE_STORE") or str(Path(".steptrace/runs.db").resolve())
DOCUMENTS = [f"Incident report {n}: a queue backed up after a deploy." for n in range(8)]

app = Celery("celery_fanout", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


class Prices:
    """Illustrative prices: $0.15 / $0.60 per million tokens in / out."""

    def cost_usd(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float:
        return (input_tokens * 0.15 + output_tokens * 0.60) / 1_000_000


model = ScriptedProvider(lambda request: "Summary: the deploy doubled the consumers' latency.")
writer: steptrace.store.StoreWriter | None = None


@worker_process_init.connect
def start_recording(**_: Any) -> None:
    """In each worker process (after the fork): prices, and one store for all."""
    global writer
    steptrace.configure(price_source=Prices())
    writer = steptrace.store.record_runs(STORE)


@worker_process_shutdown.connect
def stop_recording(**_: Any) -> None:
    # Pool processes leave without running atexit: write what is left now.
    if writer is not None:
        writer.stop()


@steptrace.step(model="gpt-4o-mini", error_boundary="continue")
def summarize(document: str) -> str | None:
    return llm_call(f"Summarize: {document}", max_tokens=100, provider=model).text


@app.task
def summarize_task(carrier: dict[str, Any], document: str) -> str | None:
    with steptrace.extract(carrier):  # the same run, the same shared budget
        return summarize(document)


@steptrace.step
def fan_out(documents: list[str]) -> list[str | None]:
    carrier = steptrace.inject()  # here: under the fan_out span
    sent = [summarize_task.delay(carrier, document) for document in documents]
    return [result.get(timeout=60) for result in sent]  # the run ends after its work


def start_worker() -> subprocess.Popen[bytes]:
    here = Path(__file__).resolve().parent
    command = [sys.executable, "-m", "celery", "--quiet", "--app", "celery_fanout", "worker"]
    options = ["--pool=prefork", "--concurrency=2", "--loglevel=warning", "--without-mingle"]
    env = os.environ | {"PYTHONPATH": str(here), "STEPTRACE_STORE": STORE}
    return subprocess.Popen([*command, *options], env=env)


def main() -> None:
    steptrace.configure(price_source=Prices())
    recording = steptrace.store.record_runs(STORE)
    budget = SharedBudget("celery-example", max_tokens=200, pool=RedisPool(REDIS_URL))
    worker = start_worker()
    try:
        with steptrace.run("nightly-summaries", budget=budget) as run:
            summaries = fan_out(DOCUMENTS)
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: running tasks finish
        worker.wait(60)
        recording.stop()

    store = steptrace.store.open_store(STORE)
    try:
        stored = store.get_run(run.id)
    finally:
        store.close()
    assert stored is not None
    print(ledger_table(stored))
    fan_out_span = next(span for span in stored.spans if span.name == "fan_out")
    ledger_tokens = sum(step.total_tokens for step in stored.completed_steps)
    print(
        f"\n{sum(s is not None for s in summaries)} of {len(DOCUMENTS)} documents summarized; "
        f"{len(stored.children(fan_out_span.span_id))} worker parts stored under fan_out\n"
        f"shared pool: {budget.totals(run.id).tokens} tokens of {budget.max_tokens}, "
        f"ledger: {ledger_tokens} tokens\n"
        f"its tree: steptrace show {run.id}  (with STEPTRACE_STORE as here)"
    )


if __name__ == "__main__":
    main()
