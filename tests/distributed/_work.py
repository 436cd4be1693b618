"""What a worker of any engine runs: one document summarized inside the run
that sent it.

The engines (Celery, Ray, ``multiprocessing``) import this module in their own
worker processes. ``setup_worker`` runs once per process, as the README tells
users to do: flat prices (one microdollar a token, so costs are exact) and a
``StoreWriter`` into ``$STEPTRACE_STORE``; ``stop_worker`` as the process
leaves. ``summarize_part`` is the task body: ``with steptrace.extract(carrier):``
around an ordinary ``@step`` making one ``llm_call`` to a scripted model; it
returns this part's own ledger for the test to add up.
"""

from __future__ import annotations

import os
import time
from typing import Any

import steptrace
from steptrace.llm import ScriptedProvider, llm_call
from steptrace.store import StoreWriter, record_runs
from steptrace.testing import FakePrices

MODEL = "flat"
REPLY = "A short summary: " + "x" * 63
"""80 characters: 20 output tokens."""
REPLY_TOKENS = 20
MAX_OUTPUT_TOKENS = 50


def _answer(request: object) -> str:
    time.sleep(0.1)  # a model takes a moment: the other worker picks up the next task
    return REPLY


_model = ScriptedProvider(_answer)
_writer: StoreWriter | None = None


def setup_worker() -> None:
    """Once per worker process: exact prices, and record runs into the store."""
    global _writer
    steptrace.configure(price_source=FakePrices())
    if _writer is None:
        _writer = record_runs()  # $STEPTRACE_STORE: the one PostgreSQL store


def setup_worker_with(ready: Any) -> None:
    """``setup_worker``, then wait for the pool's other processes (a
    ``Barrier``), so the first to boot does not take every task."""
    setup_worker()
    ready.wait(60)


def stop_worker() -> None:
    """When a worker process leaves: write what is left (Celery's pool
    processes exit without running ``atexit``)."""
    global _writer
    if _writer is not None:
        _writer.stop()
        _writer = None


@steptrace.step(name="summarize", error_boundary="continue")
def summarize(doc: str) -> str | None:
    return llm_call(
        f"Summarize: {doc}", model=MODEL, max_tokens=MAX_OUTPUT_TOKENS, provider=_model
    ).text


def summarize_part(carrier: dict[str, Any], doc: str) -> dict[str, Any]:
    """Continue the carrier's run here, summarize ``doc``, report this part."""
    with steptrace.extract(carrier) as part:
        summary = summarize(doc)  # None when the shared budget refused the call
    usage = part.usage()
    return {
        "doc": doc,
        "pid": os.getpid(),
        "run_id": part.id,
        "root_span_id": part.root.span_id,
        "root_parent_id": part.root.parent_id,
        "summary": summary,
        "tokens": usage.total_tokens,
        "pico": round(usage.cost_usd * 10**12),
        "calls": usage.llm_calls,
    }
