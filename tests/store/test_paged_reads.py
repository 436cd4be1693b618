"""``steptrace.store``'s paged reads give one answer whoever answers them: the
SQL of a SQLite file, the SQL of a PostgreSQL database, and ``LoadedReads``
(``get_run`` and the ``RunStore`` protocol alone, what any other store gets).

Each example is a generated run (a span tree of every kind, in any start
order with ties, events of every type in and outside agent loops, a ledger,
transcripts, a status, sometimes a parent or a replay) written into both
stores; then every question ``PagedReads`` answers is asked of all three
readers, pages at generated offsets included."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steptrace import CompletedStep
from steptrace.store import (
    SORT_KEYS,
    EventRow,
    LoadedReads,
    PagedReads,
    PostgresStore,
    RunFilters,
    RunRow,
    RunStore,
    SpanRow,
    SQLiteStore,
    StepRow,
    TranscriptRow,
    WriteBatch,
    paged_reads,
)

from .._services import fresh_database

_ids = itertools.count(1)
_TEXT = st.text(alphabet="abcXYZ _%\\<é", min_size=0, max_size=6)
_COUNT = st.integers(0, 50)
_KINDS = ("persona", "step", "llm_call", "tool", "custom")
_EVENT_TYPES = (
    "llm_call",
    "tool_execution",
    "tool_rejected",
    "loop_intervention",
    "context_compaction",
    "phase_change",
    "loop_complete",
    "schema_retry",
)


@pytest.fixture(scope="module")
def readers(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, PagedReads]]:
    """The three readers over two stores that always hold the same rows."""
    sqlite = SQLiteStore(tmp_path_factory.mktemp("paged") / "runs.db")
    server = request.getfixturevalue("postgres_url")
    with fresh_database(server) as url, PostgresStore(url) as postgres:
        found = {
            "sqlite": paged_reads(sqlite),
            "postgres": paged_reads(postgres),
            "loaded": LoadedReads(sqlite),
        }
        assert type(found["sqlite"]).__name__ == "SQLitePagedReads"
        assert type(found["postgres"]).__name__ == "PostgresPagedReads"
        yield found
        for reader in found.values():
            reader.close()
    sqlite.close()


def _event(kind: str, draw: Any) -> dict[str, Any]:
    iteration = draw(st.sampled_from([0, 1, 2]))
    if kind == "llm_call":
        return {
            "type": kind,
            "call_id": draw(_TEXT),
            "model": draw(st.sampled_from(["m1", "m2"])),
            "input_tokens": draw(_COUNT),
            "output_tokens": draw(_COUNT),
            "cache_tokens": 0,
            "duration_ms": draw(_COUNT),
            "iteration": iteration,
        }
    if kind == "tool_execution":
        return {
            "type": kind,
            "tool_name": draw(st.sampled_from(["search", "fetch", "write"])),
            "tool_use_id": draw(_TEXT),
            "duration_ms": draw(_COUNT),
            "status": "ok",
            "classification": "read_only",
            "iteration": iteration,
        }
    if kind == "tool_rejected":
        return {"type": kind, "tool_name": draw(_TEXT), "reason": draw(_TEXT), "iteration": 1}
    if kind == "loop_intervention":
        return {"type": kind, "tool_name": "t", "kind": "warn", "count": 2, "iteration": 1}
    if kind == "context_compaction":
        return {"type": kind, "archived_messages": 3, "new_summary_len": 9, "iteration": 1}
    if kind == "phase_change":
        return {"type": kind, "from_phase": draw(_TEXT), "to_phase": "b", "iteration": 1}
    if kind == "loop_complete":
        return {
            "type": kind,
            "status": draw(st.sampled_from(["done", "stopped"])),
            "iterations": draw(_COUNT),
            "total_duration_ms": draw(_COUNT),
            "tools_used": ["search"],
            "successful_tools": [],
        }
    return {"type": kind, "attempt": 1, "errors": [draw(_TEXT)], "nudge_used": False}


@st.composite
def runs(draw: Any) -> WriteBatch:
    """One generated run, its rows as the writer would give them."""
    run_id = f"gen-{next(_ids):05d}"
    start = 1_800_000_000.0 + draw(st.integers(0, 100))
    ns = int(start * 1e9)
    span_ids = draw(
        st.lists(st.integers(1, 10**12), min_size=1, max_size=40, unique=True).map(sorted)
    )
    spans = [
        SpanRow(
            run_id=run_id,
            span_id=span_ids[0],
            parent_id=None,
            name=run_id,
            kind="run",
            start_ns=ns,
            end_ns=ns + 10**9,
            status="ok",
            error=None,
        )
    ]
    for span_id in span_ids[1:]:
        kind = draw(st.sampled_from(_KINDS))
        parent = draw(st.sampled_from(spans))
        meta: dict[str, Any] = {"note": draw(_TEXT)}
        if kind == "llm_call":
            meta = {"gen_ai.response.model": "m1", "gen_ai.usage.input_tokens": 3}
        spans.append(
            SpanRow(
                run_id=run_id,
                span_id=span_id,
                parent_id=parent.span_id,
                name=draw(_TEXT) if kind != "persona" else draw(st.sampled_from(["ann", "bob"])),
                kind=kind,
                # Ties in start time are ordered by span id.
                start_ns=parent.start_ns + draw(st.integers(0, 3)),
                end_ns=None if draw(st.booleans()) else parent.start_ns + 10,
                status=draw(st.sampled_from(["ok", "error"])),
                error=draw(st.none() | _TEXT),
                metadata=meta,
                context={"max_tokens": 10} if kind == "step" else {},
            )
        )
    kinds = draw(st.lists(st.sampled_from(_EVENT_TYPES), max_size=60))
    events = [
        EventRow(
            run_id=run_id,
            seq=seq,
            span_id=draw(st.none() | st.sampled_from(span_ids)),
            data=_event(kind, draw),
        )
        for seq, kind in zip(
            draw(
                st.lists(
                    st.integers(0, 10**6), min_size=len(kinds), max_size=len(kinds), unique=True
                ).map(sorted)
            ),
            kinds,
            strict=True,
        )
    ]
    calls = [s for s in spans if s.kind == "llm_call"]
    transcripts = [
        TranscriptRow(
            run_id=run_id,
            span_id=s.span_id,
            request={"messages": [{"role": "user", "content": draw(_TEXT)}]},
            response=draw(st.none() | st.builds(lambda t: {"text": t}, _TEXT)),
        )
        for s in calls
        if draw(st.booleans())
    ]
    steps = [
        StepRow(
            run_id=run_id,
            seq=i,
            data=CompletedStep(
                name=s.name,
                function="f",
                model=None,
                input_tokens=draw(_COUNT),
                output_tokens=1,
                cost_usd=0.5,
                llm_calls=1,
                status=draw(st.sampled_from(["completed", "failed", "skipped", "escalated"])),
                error=None,
                span_id=s.span_id,
            ).to_dict(),
        )
        for i, s in enumerate(x for x in spans if x.kind == "step")
    ]
    status = draw(st.sampled_from(["completed", "failed", "running", "over_budget"]))
    family = draw(st.sampled_from(["alone", "child", "replay"]))
    header = RunRow(
        id=run_id,
        name=draw(st.sampled_from(["alpha", "beta", "gamma"])),
        status=status,
        started_at=start,
        ended_at=None if status == "running" else start + draw(st.integers(0, 20)),
        error=draw(st.none() | _TEXT),
        input_tokens=draw(_COUNT),
        output_tokens=draw(_COUNT),
        cost_usd=draw(st.integers(0, 100)) / 8,
        llm_calls=len(calls),
        metadata={"replay_of": "gen-00001"} if family == "replay" else {},
        parent_run_id="gen-00001" if family == "child" and run_id != "gen-00001" else None,
    )
    return WriteBatch(
        runs=[header],
        spans=spans,
        events=events,
        steps=steps,
        transcripts=transcripts,
    )


def _same(readers: dict[str, PagedReads], method: str, *args: Any, **kw: Any) -> Any:
    answers = {name: getattr(r, method)(*args, **kw) for name, r in readers.items()}
    expected = answers.pop("loaded")
    for name, answer in answers.items():
        assert answer == expected, (method, args, kw, name)
    return expected


def _write(readers: dict[str, PagedReads], batch: WriteBatch) -> None:
    stores: list[RunStore] = [readers["sqlite"].store, readers["postgres"].store]
    for store in stores:
        store.write(batch)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=runs(), data=st.data())
def test_every_paged_read_answers_the_same_on_every_backend(
    readers: dict[str, PagedReads], batch: WriteBatch, data: st.DataObject
) -> None:
    _write(readers, batch)
    run_id = batch.runs[0].id
    for question in ("header", "live_header", "structure", "span_count", "ledger"):
        _same(readers, question, run_id)
    _same(readers, "event_counts", run_id)
    _same(readers, "agent_summary", run_id)
    _same(readers, "child_runs", run_id)
    _same(readers, "personas", [run_id, "gen-00001", "nope"])
    for span in batch.spans:
        _same(readers, "span", run_id, span.span_id)
        offset, limit = data.draw(st.integers(0, 5)), data.draw(st.integers(1, 10))
        _same(readers, "children", run_id, span.span_id, offset, limit)
        _same(readers, "children", run_id, span.span_id, offset, limit, leaves_only=True)
        _same(readers, "transcript", run_id, span.span_id)
    _same(readers, "llm_spans", run_id, data.draw(st.integers(0, 5)), data.draw(st.integers(1, 9)))
    for _ in range(3):
        types = data.draw(st.none() | st.lists(st.sampled_from(_EVENT_TYPES), max_size=3))
        offset, limit = data.draw(st.integers(0, 70)), data.draw(st.integers(1, 30))
        page = _same(readers, "events_page", run_id, types, offset, limit)
        after = data.draw(st.sampled_from([-1, *(e.seq for e in page)]))
        _same(readers, "events_after", run_id, types, after, limit)
    for event in batch.events[:10]:
        _same(readers, "event_at", run_id, event.seq)
    _same(readers, "event_at", run_id, 10**7)
    needle = data.draw(st.sampled_from(["a", "X", "%", "_", "\\", "é", "zz", run_id[-3:]]))
    _same(readers, "search", run_id, needle, data.draw(st.integers(1, 20)))
    # Over every run written so far.
    filters = RunFilters(
        name=data.draw(st.none() | st.sampled_from(["alpha", "beta"])),
        status=data.draw(st.none() | st.sampled_from(["completed", "running"])),
        persona=data.draw(st.none() | st.sampled_from(["ann", "bob"])),
    )
    _same(readers, "totals", filters)
    _same(readers, "facets")
    _same(readers, "aggregate", "model")
    sort = data.draw(st.sampled_from(SORT_KEYS))
    _same(readers, "runs_page", filters, sort, data.draw(st.booleans()), 7, 0)


def test_the_readers_chosen_and_closed(tmp_path: Path) -> None:
    # A store in memory, or opened read-only, is read through LoadedReads: the
    # SQL reader opens connections of its own to the file.
    with SQLiteStore(":memory:") as memory:
        assert type(paged_reads(memory)) is LoadedReads
    path = tmp_path / "runs.db"
    SQLiteStore(path).close()
    with SQLiteStore(path, read_only=True) as read_only:
        assert type(paged_reads(read_only)) is LoadedReads
    with SQLiteStore(path) as store:
        reader = paged_reads(store)
        assert reader.store is store
        assert isinstance(reader, PagedReads)
        assert reader.header("missing") is None
        reader.close()
    assert dataclasses.is_dataclass(RunFilters())
