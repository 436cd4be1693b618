"""Long-lived processes keep bounded records (issue 10 case 4): a default run
keeps at most twice its retention of each record, counts what it dropped,
keeps its ledger totals and step counts exact, and never drops a record a
store writer has not read."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import steptrace
from steptrace._run import DEFAULT_RETAIN
from steptrace.store import SQLiteStore, StoreWriter


@steptrace.step
def handle(n: int) -> None:
    steptrace.record_llm_usage("m", 1, 1, cost_usd=0.0)
    if n % 7 == 0:
        raise ValueError("bad request")


def _serve(n: int) -> None:
    try:
        handle(n)
    except ValueError:
        pass


def test_a_pool_thread_default_run_stays_bounded_and_exact() -> None:
    requests = 3 * DEFAULT_RETAIN
    with ThreadPoolExecutor(1) as pool:  # one worker thread: one default run
        list(pool.map(_serve, range(requests)))
        run = pool.submit(steptrace.current_run).result()
    assert run.is_default
    assert len(run.spans) <= 2 * DEFAULT_RETAIN
    assert len(run.ended_steps) <= 2 * DEFAULT_RETAIN + 1  # trimmed as the next step opens
    assert run.dropped["steps"] + len(run.ended_steps) == requests
    assert run.dropped["steps"] > 0
    summary = run.summary()
    failed = len(range(0, requests, 7))
    assert summary["steps"] == {
        "completed": requests - failed,
        "failed": failed,
        "skipped": 0,
        "escalated": 0,
    }
    assert summary["llm_calls"] == requests  # the ledger counts every call
    assert summary["retention"]["dropped"]["steps"] == run.dropped["steps"]


def test_an_explicit_run_keeps_everything_unless_asked() -> None:
    with steptrace.run("all") as kept:
        for n in range(1, 300):
            handle(n * 7 + 1)
    assert len(kept.completed_steps) == 299
    assert "retention" not in kept.summary()
    with steptrace.run("bounded", retain=50) as bounded:
        for n in range(1, 300):
            handle(n * 7 + 1)
            steptrace.emit_event(
                steptrace.LlmCall(
                    call_id=str(n),
                    model="m",
                    input_tokens=1,
                    output_tokens=1,
                    cache_tokens=0,
                    duration_ms=0,
                    iteration=0,
                )
            )
    assert len(bounded.completed_steps) <= 100
    assert len(bounded.events) <= 100
    assert bounded.usage().llm_calls == 299
    with pytest.raises(ValueError, match="retain must be a positive int"):
        steptrace.run("x", retain=0)


def test_retention_never_drops_what_the_store_has_not_read(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    # A writer that never wakes by itself within the test: only flushes move it.
    writer = StoreWriter(SQLiteStore(path), interval=60)
    steptrace.add_span_processor(writer)
    try:
        with steptrace.run("service", retain=100) as run:
            for n in range(1, 2000):
                handle(n * 7 + 1)
            held = len(run.ended_steps)
        assert writer.flush(30)
    finally:
        writer.stop()
    # The writer never woke on its own: the run waited for it each time it
    # pinned four times the retention, and dropped only what it had read.
    assert held <= 4 * 100 + 1
    assert run.dropped["steps"] + held == 1999
    with SQLiteStore(path) as store:
        stored = store.get_run(run.id)
    assert stored is not None
    assert len(stored.completed_steps) == 1999
