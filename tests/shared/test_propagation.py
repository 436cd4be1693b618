"""inject/extract: the carrier's shape and validation, continuing a run in
this process, and across real worker processes writing one SQLite store."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest

import steptrace
from steptrace import SharedBudget
from steptrace._shared import SharedPool
from steptrace.export import otlp_span_id, otlp_trace_id
from steptrace.store import open_store, record_runs
from steptrace.testing import FakePrices

from . import _workers


def test_the_carrier_is_small_json_and_names_the_current_span(pool: SharedPool, key: str) -> None:
    budget = SharedBudget(key, max_usd=2.0, window="day", pool=pool)
    with steptrace.run("parent", budget=budget) as run, steptrace.span("fan-out") as fan_out:
        carrier = steptrace.inject()
    assert json.loads(json.dumps(carrier)) == carrier
    assert carrier["steptrace"] == 1
    assert (carrier["run_id"], carrier["run_name"]) == (run.id, "parent")
    assert carrier["span_id"] == fan_out.span_id
    assert carrier["shared_budgets"] == [budget.to_carrier()]
    # The trace and parent ids are those the OpenTelemetry files use.
    assert carrier["traceparent"] == (
        f"00-{otlp_trace_id(run.id)}-{otlp_span_id(run.id, fan_out.span_id)}-01"
    )


def good_carrier() -> dict[str, Any]:
    with steptrace.run("parent"):
        return steptrace.inject()


@pytest.mark.parametrize(
    "field", ["steptrace", "run_id", "run_name", "span_id", "traceparent", "shared_budgets"]
)
def test_a_carrier_missing_a_field_is_refused_naming_it(field: str) -> None:
    carrier = good_carrier()
    del carrier[field]
    with pytest.raises(ValueError, match=f"carrier is missing field '{field}'"):
        steptrace.extract(carrier)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"span_id": "12"}, TypeError, "field 'span_id' must be int"),
        ({"span_id": True}, TypeError, "field 'span_id' must be int"),
        ({"span_id": 0}, ValueError, "field 'span_id' must be a positive id"),
        ({"run_id": ""}, ValueError, "field 'run_id' must be a non-empty string"),
        ({"traceparent": "00-abc-def-01"}, ValueError, "field 'traceparent' must be a W3C"),
        ({"steptrace": 2}, ValueError, "carrier version 2 is not supported"),
        ({"shared_budgets": {}}, TypeError, "field 'shared_budgets' must be list"),
        ({"shared_budgets": [{"key": "k"}]}, ValueError, r"shared_budgets\[0\]'.*'window'"),
    ],
)
def test_a_malformed_carrier_is_refused_naming_the_field(
    change: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        steptrace.extract(good_carrier() | change)
    with pytest.raises(TypeError, match="carrier must be a dict"):
        steptrace.extract("{}")  # type: ignore[arg-type]


def test_extract_continues_the_run_and_its_shared_budgets(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    budget = SharedBudget(key, max_tokens=1000, pool=pool)
    seen: dict[str, Any] = {}

    def worker(carrier: dict[str, Any]) -> None:
        # Another thread stands in for another process here: nothing is shared
        # but the carrier (the pool is rebuilt from its URL).
        with steptrace.extract(json.loads(json.dumps(carrier))) as continued:
            steptrace.record_llm_usage("m", 300, 0)
            try:
                steptrace.check_budget("m", 300, 200)
            except steptrace.BudgetExhausted as exc:
                seen["error"] = exc
        seen["run"] = continued

    with steptrace.run("parent", budget=budget) as run:
        steptrace.record_llm_usage("m", 400, 0)
        thread = threading.Thread(target=worker, args=(steptrace.inject(),))
        thread.start()
        thread.join()
        continued = seen["run"]
        assert (continued.id, continued.name, continued.is_continuation) == (run.id, "parent", True)
        assert continued.root.parent_id == run.root.span_id
        assert continued.status == "completed"
        assert run.status == "running"  # the continuation ended, the run did not
        assert continued.shared_budgets == (budget,)
        assert budget.totals().tokens == 700
    assert seen["error"].scope_name == key  # 700 used + 500 worst case > 1000
    assert not run.is_continuation


def test_workers_in_other_processes_continue_the_run_in_one_store(
    tmp_path: Path, pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    store_path = str(tmp_path / "runs.db")
    budget = SharedBudget(key, max_tokens=10_000, pool=pool)
    writer = record_runs(store_path)
    context = multiprocessing.get_context("spawn")
    try:

        @steptrace.step(name="dispatch")
        def dispatch() -> list[dict[str, Any]]:
            carrier = steptrace.inject()
            with context.Pool(2) as workers:
                return workers.starmap(
                    _workers.continue_run, [(carrier, store_path, 100), (carrier, store_path, 200)]
                )

        with steptrace.run("fan-out", budget=budget) as run:
            steptrace.record_llm_usage("m", 50, 0)
            results = dispatch()
            # The workers have ended their parts; the run goes on, and says so.
            assert writer.flush()
            store = open_store(store_path)
            try:
                during = store.get_run(run.id)
            finally:
                store.close()
            assert during is not None
            assert during.status == "running"
    finally:
        writer.stop()
    dispatch_span = next(s for s in run.spans if s.name == "dispatch")
    assert {r["run_id"] for r in results} == {run.id}
    assert all(r["is_continuation"] for r in results)
    assert [r["root_parent_id"] for r in results] == [dispatch_span.span_id] * 2
    # The workers drew from the parent's shared budget.
    assert budget.totals(run.id).tokens == 50 + 100 + 200

    store = open_store(store_path)
    try:
        stored = store.get_run(run.id)
    finally:
        store.close()
    assert stored is not None
    # The run's header is the parent's: the workers did not overwrite it.
    assert (stored.name, stored.status) == ("fan-out", "completed")
    assert stored.run.input_tokens == 50
    # ... and the summary totals every part's calls, from the call log.
    assert (stored.summary["llm_calls"], stored.summary["input_tokens"]) == (3, 350)
    # The workers' spans hang under the parent's span that injected.
    worker_roots = stored.children(dispatch_span.span_id)
    assert sorted(s.span_id for s in worker_roots) == sorted(r["root_span_id"] for r in results)
    for root in worker_roots:
        assert [s.name for s in stored.children(root.span_id)] == ["worker_step"]
    assert [s.span_id for s in stored.children(None)] == [run.root.span_id]
    # Every part's rows are kept: nothing numbered alike overwrote anything.
    assert sorted(row.input_tokens for row in stored.llm_calls) == [50, 100, 200]
    assert sorted(step.name for step in stored.completed_steps) == [
        "dispatch",
        "worker_step",
        "worker_step",
    ]
    assert len(stored.events) == 2


def test_a_continuation_can_fan_out_again() -> None:
    with steptrace.run("parent") as run:
        first = steptrace.inject()
    with steptrace.extract(first) as middle:
        with steptrace.span("middle work") as work:
            second = steptrace.inject()
        assert second["run_id"] == run.id
        assert second["span_id"] == work.span_id
    with steptrace.extract(second) as leaf:
        pass
    assert (middle.id, leaf.id) == (run.id, run.id)
    assert middle.root.parent_id == run.root.span_id
    assert work.parent_id == middle.root.span_id
    assert leaf.root.parent_id == work.span_id


def test_extract_works_in_async_code() -> None:
    with steptrace.run("parent") as run:
        carrier = steptrace.inject()

    async def worker() -> steptrace.Run:
        async with steptrace.extract(carrier) as continued:
            assert steptrace.current_run() is continued
        return continued

    continued = asyncio.run(worker())
    assert continued.id == run.id
    assert continued.status == "completed"
