"""One run fanned out to Ray tasks, under one shared budget, offline.

The caller starts a local Ray cluster (two CPUs), opens a run with a
``SharedBudget`` held in Redis, and sends each document to a remote task
(``ray_tasks.summarize_task``) with an ``inject()``ed carrier; each task
continues the run with ``extract(carrier)`` and summarizes its document with a
scripted model (no API key, no network). Every Ray worker process records into
the same run store (``worker_process_setup_hook``), so the run read back holds
each task's step under the step that sent it, and the pool's total is exactly
what the workers spent. The budget is too small for every document: the tasks
that find it spent are refused before calling the model (``skipped`` steps).

Needs a Redis server (the budget pool) and ``pip install 'steptrace[ray]'``;
run ``python examples/ray_fanout.py``. ``REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) and ``STEPTRACE_STORE`` (default
``.steptrace/runs.db``, or a ``postgresql://`` URL) say where.
"""

from __future__ import annotations

import os
from pathlib import Path

import ray

import ray_tasks
import steptrace
import steptrace.store
from ray_tasks import Prices, summarize_task
from steptrace import SharedBudget
from steptrace.report import ledger_table
from steptrace.shared import RedisPool

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
STORE = os.environ.get("STEPTRACE_STORE") or str(Path(".steptrace/runs.db").resolve())
DOCUMENTS = [f"Incident report {n}: a queue backed up after a deploy." for n in range(8)]


@steptrace.step
def fan_out(documents: list[str]) -> list[str | None]:
    carrier = steptrace.inject()  # here: under the fan_out span
    summaries: list[str | None] = ray.get([summarize_task.remote(carrier, d) for d in documents])
    return summaries


def main() -> None:
    steptrace.configure(price_source=Prices())
    recording = steptrace.store.record_runs(STORE)
    budget = SharedBudget("ray-example", max_tokens=200, pool=RedisPool(REDIS_URL))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={
            "worker_process_setup_hook": "ray_tasks.start_recording",
            "py_modules": [ray_tasks],  # ship the workers' code to them
            "env_vars": {"STEPTRACE_STORE": STORE},
        },
    )
    try:
        with steptrace.run("nightly-summaries", budget=budget) as run:
            summaries = fan_out(DOCUMENTS)
    finally:
        ray.shutdown()
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
