"""The parent side of every engine's test: one run fans documents out to
workers under one shared budget, and the checks that the stored run and the
pool both tell the truth about it.

The budget is tight on purpose: each call reserves its worst case (7 prompt
tokens + 50 output) and spends 27, so of six documents at most four fit under
120 tokens and at least two are refused, whatever the interleaving. The
refused steps (``error_boundary="continue"``) are recorded as ``skipped``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import steptrace
from steptrace import SharedBudget
from steptrace._shared import SharedPool
from steptrace.store import open_store

from ._work import REPLY_TOKENS

DOCS = [f"doc-{i}" for i in range(6)]
LIMIT_TOKENS = 120
CALL_TOKENS = 7 + REPLY_TOKENS
"""What one summary spends: 3 + ceil(len("Summarize: doc-N") / 4) in, 20 out."""

Dispatch = Callable[[dict[str, Any], list[str]], list[dict[str, Any]]]


def fan_out_run(
    dispatch: Dispatch, pool: SharedPool, key: str
) -> tuple[steptrace.Run, SharedBudget, list[dict[str, Any]]]:
    """Open a run under a shared budget; a ``fan_out`` step injects and hands
    every document to ``dispatch(carrier, docs)``, which returns the workers'
    reports."""
    budget = SharedBudget(key, max_tokens=LIMIT_TOKENS, pool=pool)

    @steptrace.step(name="fan_out")
    def fan_out(docs: list[str]) -> list[dict[str, Any]]:
        return dispatch(steptrace.inject(), docs)

    with steptrace.run("fan-out", budget=budget) as run:
        results = fan_out(DOCS)
    return run, budget, results


def check_one_faithful_run(
    store_url: str,
    run: steptrace.Run,
    budget: SharedBudget,
    results: list[dict[str, Any]],
    parent_pid: int,
) -> None:
    """The stored run holds every worker's part under the ``fan_out`` span, and
    the pool's totals are exactly what the workers' ledgers add up to."""
    assert sorted(r["doc"] for r in results) == DOCS
    assert {r["run_id"] for r in results} == {run.id}
    pids = {r["pid"] for r in results}
    assert parent_pid not in pids
    assert len(pids) >= 2, f"one worker process did all the work: {pids}"

    fan_out_span = next(s for s in run.spans if s.name == "fan_out")
    assert {r["root_parent_id"] for r in results} == {fan_out_span.span_id}

    expected_roots = sorted(r["root_span_id"] for r in results)
    # Each worker writes its part in the background when its extract block
    # ends (waiting at most run_end_timeout there): under load the last part
    # may land a moment after the task's result, so read until all are in.
    deadline = time.monotonic() + 30
    while True:
        store = open_store(store_url)
        try:
            stored = store.get_run(run.id)
        finally:
            store.close()
        assert stored is not None
        worker_roots = stored.children(fan_out_span.span_id)
        if sorted(s.span_id for s in worker_roots) == expected_roots:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (stored.name, stored.status) == ("fan-out", "completed")
    # Each worker's part hangs under the span that injected, with its step.
    assert sorted(s.span_id for s in worker_roots) == sorted(r["root_span_id"] for r in results)
    for root in worker_roots:
        assert [s.name for s in stored.children(root.span_id)] == ["summarize"]
    assert [s.span_id for s in stored.children(None)] == [run.root.span_id]

    # Every worker's step is in the ledger: completed where the call fitted,
    # skipped where the shared budget refused it before sending.
    summaries = [step for step in stored.completed_steps if step.name == "summarize"]
    assert len(summaries) == len(DOCS)
    done = [r for r in results if r["summary"] is not None]
    assert sorted(step.status for step in summaries) == sorted(
        "completed" if r["summary"] is not None else "skipped" for r in results
    )
    assert 2 <= len(done) <= LIMIT_TOKENS // CALL_TOKENS < len(DOCS)
    assert all(r["tokens"] == (CALL_TOKENS if r["summary"] else 0) for r in results)

    # The shared limit held, and the pool counted exactly what was spent:
    # its totals equal the sum of the workers' own ledgers, and the store's.
    totals = budget.totals(run.id)
    assert (totals.reserved_tokens, totals.reserved_pico) == (0, 0)
    assert totals.tokens <= LIMIT_TOKENS
    assert totals.tokens == sum(r["tokens"] for r in results) == len(done) * CALL_TOKENS
    assert totals.tokens == sum(s.input_tokens + s.output_tokens for s in summaries)
    assert totals.pico == sum(r["pico"] for r in results)
    assert totals.pico == sum(round(s.cost_usd * 10**12) for s in summaries)
    assert len(stored.llm_calls) == len(done) == sum(r["calls"] for r in results)
    assert [type(event) for event in stored.events] == [steptrace.LlmCall] * len(done)
    assert stored.summary["llm_calls"] == len(done)
