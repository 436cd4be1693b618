"""One bad value never costs another row: a batch the store refuses is written
run by run, then in halves within the run at fault, so every good row lands and
each row that cannot be written is counted on its own run (``write_errors``,
``write_error``); a run whose header cannot be written is stored with the
values it can hold, never left ``running``. Both backends, real runs and drawn
batches."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steptrace
from steptrace.store import (
    EventRow,
    LlmCallRow,
    RunRow,
    RunStore,
    SpanRow,
    SQLiteStore,
    StepRow,
    StoreWriter,
    WriteBatch,
)
from steptrace.store._isolation import Rejection, write_isolated
from steptrace.store._queries import dumps

from .test_store_contract import Backend

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    server = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return Backend(request.param, tmp_path, server)


@pytest.fixture
def store(backend: Backend) -> Iterator[RunStore]:
    with backend.empty() as opened:
        yield opened


class Unprintable:
    """A value whose str() raises: JSON (with ``default=str``) cannot encode it."""

    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def circular() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


# -- real runs through the writer ---------------------------------------------------------


@contextlib.contextmanager
def writing(store: RunStore) -> Iterator[StoreWriter]:
    # A long interval: everything waits for the run ends' flushes, so the rows of
    # every open run share batches with the poisoned ones.
    writer = StoreWriter(store, interval=3600)
    steptrace.add_span_processor(writer)
    try:
        yield writer
    finally:
        steptrace.remove_span_processor(writer)
        writer.close()


@steptrace.step(model="m")
def work(number: int) -> None:
    steptrace.record_llm_usage("m", 10 + number, 5, cost_usd=0.001)


def test_a_poisoned_run_costs_no_other_run_a_row(
    store: RunStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case: a concurrent, unrelated run lost nothing; the poisoned
    run keeps its good rows, ends ``completed`` and shows its write errors."""
    contexts = [contextvars.copy_context() for _ in range(3)]
    runs: list[steptrace.Run] = []
    with writing(store) as writer, caplog.at_level(logging.WARNING, "steptrace.store"):
        for number, context in enumerate(contexts):
            # The middle run's header cannot be encoded, nor can one of its spans.
            metadata = {"bad": circular()} if number == 1 else {"n": number}
            run = context.run(steptrace.run, f"run-{number}", metadata=metadata)
            context.run(run.__enter__)
            runs.append(run)
        for number, context in enumerate(contexts):
            for step in range(4):
                context.run(work, step)
            if number == 1:
                context.run(_poisoned_spans)
        for run, context in zip(runs, contexts, strict=True):
            context.run(run.__exit__, None, None, None)
        assert writer.flush(5)
    good = [store.get_run(run.id) for run in (runs[0], runs[2])]
    for stored, run in zip(good, (runs[0], runs[2]), strict=True):
        assert stored is not None
        assert stored.status == "completed"
        assert stored.completed_steps == run.completed_steps
        assert stored.llm_trace == run.llm_trace
        assert {s.span_id for s in stored.spans} == {s.span_id for s in run.spans}
        assert (stored.run.write_errors, stored.run.write_error) == (0, None)
    poisoned = store.get_run(runs[1].id)
    assert poisoned is not None
    assert poisoned.status == "completed"
    assert poisoned.run.ended_at == runs[1].ended_at
    assert poisoned.completed_steps == runs[1].completed_steps
    assert poisoned.llm_trace == runs[1].llm_trace
    assert poisoned.run.input_tokens == runs[1].usage().input_tokens
    # The two poisoned spans, and the root span, whose context holds the run's metadata.
    bad_spans = {s.span_id for s in runs[1].spans if s.name.startswith("poison")}
    bad_spans.add(runs[1].root.span_id)
    assert {s.span_id for s in poisoned.spans} == {s.span_id for s in runs[1].spans} - bad_spans
    # The header twice (its start and its end), and the three spans.
    assert poisoned.run.write_errors == 5
    assert poisoned.run.write_error is not None
    assert "Circular reference detected" in poisoned.run.write_error
    assert "metadata" in str(poisoned.run.metadata)
    assert any(runs[1].id in record.getMessage() for record in caplog.records)
    assert writer.failures == 5


def _poisoned_spans() -> None:
    with steptrace.span("poison-unprintable", value=Unprintable()):
        pass
    with steptrace.span("poison-circular", value=circular()):
        pass


# -- drawn batches: good runs, poisoned rows ------------------------------------------------

POISONS = ("overflow", "circular", "unprintable", "surrogate")


def _poison(kind: str) -> Any:
    return {"overflow": 2**63, "surrogate": "bad \udc80 text"}.get(kind) or (
        circular() if kind == "circular" else Unprintable()
    )


TABLES = ("runs", "spans", "events", "steps", "llm_calls")

row_specs = st.fixed_dictionaries(
    {
        "run": st.integers(0, 4),
        "table": st.sampled_from(TABLES[1:]),
        "poison": st.none() | st.sampled_from(POISONS),
    }
)


def _row(table: str, run_id: str, number: int, poison: str | None) -> Any:
    bad: Any = None if poison is None else _poison(poison)
    if table == "spans":
        name = bad if poison == "surrogate" else f"span-{number}"
        meta = {"v": bad} if poison in ("circular", "unprintable") else {}
        return SpanRow(
            run_id=run_id,
            span_id=number,
            parent_id=2**63 if poison == "overflow" else None,
            name=name,
            kind="custom",
            start_ns=number,
            end_ns=number + 1,
            status="ok",
            error=None,
            metadata=meta,
        )
    if table == "events":
        data: dict[str, Any] = {"type": "phase_change", "n": number}
        if poison is not None:
            data["v"] = bad
        return EventRow(
            run_id=run_id,
            seq=2**63 if poison == "overflow" else number,
            span_id=None,
            data=data,
        )
    if table == "steps":
        return StepRow(
            run_id=run_id,
            seq=2**63 if poison == "overflow" else number,
            data={"n": number} if poison is None else {"n": number, "v": bad},
        )
    return LlmCallRow(
        run_id=run_id,
        seq=number,
        span_id=None,
        step=None,
        persona=None,
        model=bad if poison == "surrogate" else "m",
        input_tokens=2**63 if poison == "overflow" else number,
        output_tokens=1,
        cache_tokens=0,
        cost_usd=0.5,
        duration_ms=1,
        at=1e9,
    )


def _is_poisoned(table: str, poison: str | None, store: RunStore) -> bool:
    if poison is None:
        return False
    if poison == "surrogate":  # JSON escapes it: only a SQLite text column refuses it
        return isinstance(store, SQLiteStore) and table in ("spans", "llm_calls", "runs")
    # An LLM call row holds no JSON: only numbers and text can poison it.
    return not (table == "llm_calls" and poison in ("circular", "unprintable"))


@given(
    rows=st.lists(row_specs, max_size=30),
    headers=st.lists(st.none() | st.sampled_from(POISONS), min_size=5, max_size=5),
    batch_size=st.integers(1, 40),
)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_good_row_lands_and_every_poisoned_run_is_marked(
    store: RunStore,
    rows: list[dict[str, Any]],
    headers: list[str | None],
    batch_size: int,
) -> None:
    # One store for every example (a new PostgreSQL database each is slow): each
    # example's runs have ids of their own.
    tag = uuid.uuid4().hex[:8]
    items: list[tuple[str, Any]] = []
    expected_errors = dict.fromkeys(range(5), 0)
    for run in range(5):
        poison = headers[run]
        row = RunRow(
            id=f"{tag}r{run}",
            name=f"run-{run}",
            status="completed",
            started_at=1e9 + run,
            ended_at=1e9 + run + 1,
            metadata={"v": _poison(poison)} if poison in ("circular", "unprintable") else {},
            input_tokens=2**63 if poison == "overflow" else run,
            error="bad \udc80" if poison == "surrogate" else None,
        )
        items.append(("runs", row))
        expected_errors[run] += _is_poisoned("runs", poison, store)
    good: dict[str, list[Any]] = {table: [] for table in TABLES[1:]}
    for number, spec in enumerate(rows):
        row = _row(spec["table"], f"{tag}r{spec['run']}", number, spec["poison"])
        items.append((spec["table"], row))
        if _is_poisoned(spec["table"], spec["poison"], store):
            expected_errors[spec["run"]] += 1
        else:
            good[spec["table"]].append(row)
    rejected = 0
    for start in range(0, len(items), batch_size):
        batch = WriteBatch()
        for table, row in items[start : start + batch_size]:
            getattr(batch, table).append(row)
        rejected += len(write_isolated(store, batch))
    assert rejected == sum(expected_errors.values())
    listed = {r.id: r for r in store.list_runs(limit=10_000) if r.id.startswith(tag)}
    assert set(listed) == {f"{tag}r{run}" for run in range(5)}
    for run in range(5):
        head = listed[f"{tag}r{run}"]
        assert head.status == "completed"
        assert head.ended_at == 1e9 + run + 1
        assert head.write_errors == expected_errors[run]
        assert (head.write_error is None) == (expected_errors[run] == 0)
        if headers[run] is None:
            assert head.input_tokens == run
    for run in range(5):
        run_id = f"{tag}r{run}"
        mine = {table: [r for r in rows if r.run_id == run_id] for table, rows in good.items()}
        assert _raw(store, "SELECT span_id, name FROM spans", run_id) == sorted(
            (s.span_id, s.name) for s in mine["spans"]
        )
        assert _raw(store, "SELECT seq, data FROM completed_steps", run_id) == sorted(
            (s.seq, dumps(s.data)) for s in mine["steps"]
        )
        assert _raw(store, "SELECT seq, input_tokens, model FROM llm_calls", run_id) == sorted(
            (c.seq, c.input_tokens, c.model) for c in mine["llm_calls"]
        )
        assert store.events(run_id) == sorted(mine["events"], key=lambda e: e.seq)


def _raw(store: RunStore, select: str, run_id: str) -> list[tuple[Any, ...]]:
    """Rows of one run, in key order (drawn rows are not all whole ledger rows
    or spans, so they are read as stored rather than through ``get_run``)."""
    read = store._read  # type: ignore[attr-defined]
    return [tuple(row) for row in read(f"{select} WHERE run_id = ? ORDER BY 1", (run_id,))]


def test_a_store_that_is_down_is_not_retried_row_by_row(store: RunStore) -> None:
    """Only a refusal of the data is isolated: any other failure (a closed or
    unreachable store) propagates at once, for the writer to count."""
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        write_isolated(
            store, WriteBatch(runs=[RunRow(id="x", name="x", status="running", started_at=1.0)])
        )


def test_non_finite_and_huge_header_values_are_kept_as_far_as_they_fit(store: RunStore) -> None:
    header = RunRow(
        id="h",
        name="nul\x00name",
        status="failed",
        started_at=time.time(),
        ended_at=time.time(),
        error="boom",
        output_tokens=2**64,
        cost_usd=math.inf,
        llm_calls=3,
    )
    assert len(write_isolated(store, WriteBatch(runs=[header]))) == 1
    (row,) = store.list_runs()
    assert (row.status, row.error, row.llm_calls) == ("failed", "boom", 3)
    assert row.output_tokens == 2**63 - 1  # saturated, and said so
    assert row.write_errors == 1
    assert row.write_error is not None
    assert "output_tokens" in row.write_error


def test_a_refusal_is_one_visible_line() -> None:
    hostile = ValueError("bad \x1b]0;title\x07\x1b[2J value\nnext \udc80")
    message = Rejection("r1", "span 3", hostile).message()
    assert message == "span 3: ValueError: bad \\x1b]0;title\\x07\\x1b[2J value\\x0anext \\udc80"
    assert Rejection("r1", "span 3", ValueError("x" * 2000)).message().endswith("x")
    assert len(Rejection("r1", "span 3", ValueError("x" * 2000)).message()) == 500
