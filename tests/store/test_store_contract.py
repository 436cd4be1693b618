"""One suite, every backend: the ``RunStore`` contract on SQLite and PostgreSQL.

Each test runs twice, on a fresh SQLite file and on a fresh PostgreSQL
database (``CREATE DATABASE`` on the session's real server, dropped after),
so both backends must give the same answers to the same calls: runs recorded
through a ``StoreWriter`` read back whole, filters and paging agree with a
plain Python model of them (hypothesis draws the rows and the queries), and
``write``, ``mark_interrupted`` and ``close`` keep their promises.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steptrace
from steptrace import LlmCall, PhaseChange, ToolRejected, llm
from steptrace.llm._config import reset_configuration
from steptrace.store import (
    BatchRejected,
    EventRow,
    LlmCallRow,
    PostgresStore,
    RunRow,
    RunStore,
    SpanRow,
    SQLiteStore,
    StepRow,
    StoreWriter,
    TranscriptRow,
    WriteBatch,
)
from steptrace.store._liveness import this_host
from steptrace.store._protocol import AGGREGATE_KEYS, RUN_STATUSES, Aggregate, AggregateKey
from steptrace.testing import ScriptedProvider

from .._services import fresh_database

BACKENDS = ("sqlite", "postgres")

# -- fresh stores of each kind -------------------------------------------------------


class Backend:
    """Opens stores of one kind: ``empty()`` on a new database, ``reopen()``
    on the last one again (another store object, as a new process would)."""

    def __init__(self, kind: str, tmp_path: Path, server_url: str | None) -> None:
        self.kind = kind
        self._tmp_path = tmp_path
        self._server_url = server_url
        self._location = ""
        self._opened: list[RunStore] = []

    def open(self, location: str) -> RunStore:
        store: RunStore = (
            SQLiteStore(location) if self.kind == "sqlite" else PostgresStore(location)
        )
        self._opened.append(store)
        return store

    @contextlib.contextmanager
    def empty(self) -> Iterator[RunStore]:
        with contextlib.ExitStack() as cleanup:
            if self.kind == "sqlite":
                self._location = str(self._tmp_path / f"runs-{uuid.uuid4().hex[:8]}.db")
            else:
                assert self._server_url is not None
                self._location = cleanup.enter_context(fresh_database(self._server_url))
            cleanup.callback(self.close_all)
            yield self.open(self._location)

    def reopen(self) -> RunStore:
        return self.open(self._location)

    def close_all(self) -> None:
        for store in self._opened:
            store.close()
        self._opened.clear()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    server = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return Backend(request.param, tmp_path, server)


@pytest.fixture
def store(backend: Backend) -> Iterator[RunStore]:
    with backend.empty() as opened:
        yield opened


# Hypothesis runs many examples in one test: each opens its own empty store.
examples = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- runs recorded through the writer ---------------------------------------------------


@pytest.fixture
def scripted() -> Iterator[ScriptedProvider]:
    provider = ScriptedProvider(lambda request: f"answer to {request.messages[-1].content}")
    reset_configuration()
    llm.configure(provider=provider, default_model="m-small")
    yield provider
    reset_configuration()


@contextlib.contextmanager
def recording(store: RunStore) -> Iterator[StoreWriter]:
    writer = StoreWriter(store)
    steptrace.add_span_processor(writer)
    try:
        yield writer
    finally:
        steptrace.remove_span_processor(writer)
        writer.close()


@steptrace.step(model="m-small")
def ask(question: str) -> str:
    return llm.llm_call(question).text


@steptrace.step(model="m-large", budget={"max_tokens": 50}, error_boundary="continue")
def overspend() -> str:
    steptrace.record_llm_usage("m-large", 40, 20, cost_usd=0.25)
    return "never"


@steptrace.persona("researcher")
def research() -> None:
    ask("what is up?")
    with steptrace.span("lookup"):
        steptrace.emit_event(PhaseChange(from_phase="plan", to_phase="act", iteration=1))
        steptrace.emit_event(ToolRejected(tool_name="rm", reason="not allowed", iteration=1))
    overspend()


@steptrace.persona("editor")
def edit() -> None:
    steptrace.record_llm_usage("m-small", 5, 5, cost_usd=0.125)
    steptrace.emit_event(
        LlmCall(
            call_id="c1",
            model="m-small",
            input_tokens=5,
            output_tokens=5,
            cache_tokens=0,
            duration_ms=3,
            iteration=2,
        )
    )
    ask("and now?")


def test_a_store_is_a_run_store(store: RunStore) -> None:
    assert isinstance(store, RunStore)


def test_an_empty_store_answers_every_read(store: RunStore) -> None:
    assert store.list_runs() == []
    assert store.count_runs() == 0
    assert store.run_ids() == []
    assert store.get_run("nope") is None
    assert store.events("nope") == []
    assert store.event_counts("nope") == {}
    assert store.transcripts("nope") == []
    for by in AGGREGATE_KEYS:
        assert store.aggregate(by) == []
    assert store.mark_interrupted() == []


def test_a_recorded_run_reads_back_whole(store: RunStore, scripted: ScriptedProvider) -> None:
    with (
        recording(store) as writer,
        steptrace.run("nightly", budget={"max_tokens": 10_000}, metadata={"team": "a"}) as run,
    ):
        research()
        edit()
    assert (writer.failures, writer.dropped) == (0, 0)
    stored = store.get_run(run.id)
    assert stored is not None
    assert (stored.id, stored.name, stored.status) == (run.id, "nightly", "completed")
    assert stored.run.metadata == {"team": "a"}
    assert run.budget is not None
    assert stored.run.budget == run.budget.to_dict()
    assert stored.run.started_at == run.started_at
    assert stored.run.ended_at == run.ended_at
    # Typed events, where they were emitted, and the ledger, as the live run has them.
    assert stored.events == run.events
    assert stored.event_span_ids == run.event_span_ids
    assert stored.completed_steps == run.completed_steps
    assert [s.status for s in stored.completed_steps] == [
        "completed",
        "skipped",
        "completed",
    ]
    assert stored.llm_trace == run.llm_trace
    assert [(c.model, c.step, c.persona) for c in stored.llm_calls] == [
        ("m-small", "ask", "researcher"),
        ("m-large", "overspend", "researcher"),
        ("m-small", None, "editor"),
        ("m-small", "ask", "editor"),
    ]
    expected = run.summary()
    summary = dict(stored.summary)
    assert summary.pop("duration_ms") == pytest.approx(expected.pop("duration_ms"), abs=0.01)
    assert summary == expected
    # The span tree.
    assert {s.span_id: (s.parent_id, s.name, s.kind, s.status) for s in stored.spans} == {
        s.span_id: (s.parent_id, s.name, s.kind.value, s.status) for s in run.spans
    }
    assert [s.metadata for s in stored.spans] == [s.to_dict()["metadata"] for s in run.spans]
    (root,) = stored.children(None)
    assert root.kind == "run"
    assert [s.name for s in stored.children(root.span_id)] == ["researcher", "editor"]
    # The header's totals, as list_runs gives them.
    (listed,) = store.list_runs()
    usage = run.usage()
    assert (listed.llm_calls, listed.input_tokens, listed.output_tokens) == (
        usage.llm_calls,
        usage.input_tokens,
        usage.output_tokens,
    )
    assert listed.cost_usd == pytest.approx(usage.cost_usd)
    assert store.event_counts(run.id) == dict(Counter(e.type for e in run.events))


def test_transcripts_by_span(store: RunStore, scripted: ScriptedProvider) -> None:
    with recording(store), steptrace.run("chatty") as run:
        research()
        edit()
    chat_spans = sorted(s.span_id for s in run.spans if s.kind == steptrace.SpanKind.LLM_CALL)
    transcripts = store.transcripts(run.id)
    assert [t.span_id for t in transcripts] == chat_spans
    first, second = transcripts
    assert first.request is not None
    assert first.request["messages"][-1]["content"] == "what is up?"
    assert first.response is not None
    assert first.response["text"] == "answer to what is up?"
    assert store.transcripts(run.id, [second.span_id, 12345]) == [second]
    assert store.transcripts(run.id, []) == []
    assert store.transcripts("another run") == []


def test_a_running_and_a_failed_run(store: RunStore) -> None:
    with recording(store) as writer:
        broken = steptrace.run("broken")

        def crash() -> None:
            with broken:
                edit_without_llm()
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            crash()
        live = steptrace.run("live").__enter__()
        try:
            edit_without_llm()
            assert writer.flush(5)
            running = store.get_run(live.id)
            assert running is not None
            assert running.status == "running"
            assert running.run.ended_at is None
            assert running.summary["duration_ms"] is None
            assert running.run.pid == os.getpid()
            assert running.run.host == this_host()
            assert len(running.completed_steps) == 1
        finally:
            live.__exit__(None, None, None)
    failed = store.get_run(broken.id)
    assert failed is not None
    assert (failed.status, failed.run.error) == ("failed", "RuntimeError: boom")
    assert store.count_runs(status="failed") == 1
    assert store.count_runs(status="completed") == 1


@steptrace.step(model="m-small")
def note() -> None:
    steptrace.record_llm_usage("m-small", 1, 1, cost_usd=0.5)


def edit_without_llm() -> None:
    note()


# -- events: paging and types -----------------------------------------------------------

EVENT_KINDS = ("phase_change", "tool_rejected", "llm_call")


def _event(kind: str, number: int) -> Any:
    if kind == "phase_change":
        return PhaseChange(from_phase="a", to_phase="b", iteration=number)
    if kind == "tool_rejected":
        return ToolRejected(tool_name="t", reason="no", iteration=number)
    return LlmCall(
        call_id=f"c{number}",
        model="m",
        input_tokens=1,
        output_tokens=1,
        cache_tokens=0,
        duration_ms=1,
        iteration=number,
    )


@given(
    kinds=st.lists(st.sampled_from(EVENT_KINDS), max_size=40),
    types=st.none() | st.lists(st.sampled_from((*EVENT_KINDS, "schema_retry")), unique=True),
    page=st.integers(1, 15),
)
@examples
def test_events_page_by_seq_and_filter_by_type(
    backend: Backend, kinds: list[str], types: list[str] | None, page: int
) -> None:
    with backend.empty() as store:
        with recording(store), steptrace.run("events") as run:
            for number, kind in enumerate(kinds):
                steptrace.emit_event(_event(kind, number))
        wanted = [
            (seq, span_id, event.to_dict())
            for seq, (event, span_id) in enumerate(zip(run.events, run.event_span_ids, strict=True))
            if types is None or event.type in types
        ]
        got: list[EventRow] = []
        after = -1
        while True:
            rows = store.events(run.id, types=types, after_seq=after, limit=page)
            assert len(rows) <= page
            got.extend(rows)
            if len(rows) < page:
                break
            after = rows[-1].seq
        assert [(row.seq, row.span_id, row.data) for row in got] == wanted
        assert {row.run_id for row in got} <= {run.id}
        assert store.event_counts(run.id) == dict(Counter(kinds))
        assert store.events("other", types=types) == []


# -- list_runs and count_runs against a model -------------------------------------------

NAMES = ("alpha", "beta")
PERSONAS = ("analyst", "writer")

run_specs = st.fixed_dictionaries(
    {
        "id": st.text("abcAB-_%", min_size=1, max_size=4),
        "name": st.sampled_from(NAMES),
        "status": st.sampled_from(RUN_STATUSES),
        # Few distinct start times: ties are ordered by id, newest first.
        "started_at": st.integers(0, 4).map(lambda n: 1_700_000_000.0 + n * 0.5),
        "personas": st.sets(st.sampled_from(PERSONAS)),
        # Steps named like personas must not count as personas.
        "steps": st.sets(st.sampled_from(PERSONAS)),
    }
)
bounds = st.none() | st.integers(-1, 5).map(lambda n: 1_700_000_000.0 + n * 0.5)


def _write_runs(store: RunStore, specs: Sequence[dict[str, Any]]) -> None:
    batch = WriteBatch()
    for spec in specs:
        batch.runs.append(
            RunRow(
                id=spec["id"],
                name=spec["name"],
                status=spec["status"],
                started_at=spec["started_at"],
            )
        )
        labelled = [("persona", p) for p in sorted(spec["personas"])]
        labelled += [("step", s) for s in sorted(spec["steps"])]
        for number, (kind, label) in enumerate(labelled, start=1):
            batch.spans.append(
                SpanRow(
                    run_id=spec["id"],
                    span_id=number,
                    parent_id=None,
                    name=label,
                    kind=kind,
                    start_ns=number,
                    end_ns=number + 1,
                    status="ok",
                    error=None,
                )
            )
    store.write(batch)


@given(
    specs=st.lists(run_specs, max_size=12, unique_by=lambda spec: spec["id"]),
    name=st.none() | st.sampled_from((*NAMES, "gamma")),
    status=st.none() | st.sampled_from(RUN_STATUSES),
    persona=st.none() | st.sampled_from(PERSONAS),
    after=bounds,
    before=bounds,
    limit=st.integers(1, 6),
    offset=st.integers(0, 6),
)
@examples
def test_list_runs_filters_and_pages_like_the_model(
    backend: Backend,
    specs: list[dict[str, Any]],
    name: str | None,
    status: str | None,
    persona: str | None,
    after: float | None,
    before: float | None,
    limit: int,
    offset: int,
) -> None:
    matching = [
        spec
        for spec in specs
        if (name is None or spec["name"] == name)
        and (status is None or spec["status"] == status)
        and (persona is None or persona in spec["personas"])
        and (after is None or spec["started_at"] >= after)
        and (before is None or spec["started_at"] < before)
    ]
    newest_first = [
        spec["id"]
        for spec in sorted(matching, key=lambda s: (s["started_at"], s["id"]), reverse=True)
    ]
    filters: dict[str, Any] = {
        "name": name,
        "status": status,
        "persona": persona,
        "started_after": after,
        "started_before": before,
    }
    with backend.empty() as store:
        _write_runs(store, specs)
        page = store.list_runs(**filters, limit=limit, offset=offset)
        assert [row.id for row in page] == newest_first[offset : offset + limit]
        assert store.count_runs(**filters) == len(matching)
        # Paging on until a short page gives every match once, in order.
        everything: list[str] = []
        while True:
            rows = store.list_runs(**filters, limit=limit, offset=len(everything))
            everything.extend(row.id for row in rows)
            if len(rows) < limit:
                break
        assert everything == newest_first


def test_list_runs_returns_whole_rows(store: RunStore) -> None:
    row = RunRow(
        id="r1",
        name="full",
        status="completed",
        started_at=1_700_000_000.25,
        ended_at=1_700_000_003.5,
        error=None,
        metadata={"team": "a", "nested": {"n": [1, 2.5, None, "x"]}, "ü": "✓"},
        budget={"max_usd": 1.5, "max_tokens": None},
        input_tokens=2**40,
        output_tokens=7,
        cost_usd=0.125,
        llm_calls=3,
        pid=1234,
        host="somewhere",
        heartbeat_at=1_700_000_003.5,
    )
    store.write(WriteBatch(runs=[row]))
    assert store.list_runs() == [row]
    assert store.list_runs()[0].duration_s == 3.25


# -- run_ids: a literal prefix ----------------------------------------------------------


@given(
    ids=st.lists(st.text("aA%_\\-1é", min_size=1, max_size=5), unique=True, max_size=10),
    prefix=st.text("aA%_\\-1é", max_size=3),
    limit=st.integers(1, 12),
)
@examples
def test_run_ids_match_a_literal_prefix(
    backend: Backend, ids: list[str], prefix: str, limit: int
) -> None:
    # Later in the list = started later = listed first.
    expected = [run_id for run_id in reversed(ids) if run_id.startswith(prefix)][:limit]
    with backend.empty() as store:
        store.write(
            WriteBatch(
                runs=[
                    RunRow(id=run_id, name="r", status="completed", started_at=1e9 + n)
                    for n, run_id in enumerate(ids)
                ]
            )
        )
        assert store.run_ids(prefix, limit=limit) == expected


def test_run_ids_wildcards_are_literal(store: RunStore) -> None:
    ids = ["a%b-1", "a_b-2", "axb-3", "a\\b-4", "A%b-5"]
    store.write(
        WriteBatch(
            runs=[
                RunRow(id=run_id, name="r", status="completed", started_at=1e9 + n)
                for n, run_id in enumerate(ids)
            ]
        )
    )
    assert store.run_ids("a%") == ["a%b-1"]
    assert store.run_ids("a_") == ["a_b-2"]
    assert store.run_ids("a\\") == ["a\\b-4"]
    assert store.run_ids("A") == ["A%b-5"]
    assert store.run_ids() == ids[::-1]
    assert store.run_ids(limit=2) == ["A%b-5", "a\\b-4"]


# -- aggregates against a model ---------------------------------------------------------

DAY0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

call_specs = st.fixed_dictionaries(
    {
        "run_id": st.sampled_from(("r1", "r2")),
        "model": st.sampled_from(("m-a", "m-b", "m-c")),
        "persona": st.sampled_from((None, "analyst", "writer")),
        "step": st.sampled_from((None, "plan", "act")),
        "input_tokens": st.integers(0, 1000),
        "output_tokens": st.integers(0, 1000),
        # Eighths add up exactly in binary floating point, in any order; few
        # values, so that groups often tie on cost and calls.
        "cost_usd": st.sampled_from((None, 0.0, 0.125, 0.25)),
        # Spread over three UTC days, including the seconds around midnight.
        "at": st.sampled_from(
            (0.0, 0.5, 3600.0, 86_399.75, 86_400.0, 90_000.0, 2 * 86_400 + 1)
        ).map(lambda offset: DAY0 + offset),
    }
)
times = st.none() | st.sampled_from((0.0, 0.5, 86_400.0, 2 * 86_400.0)).map(lambda t: DAY0 + t)


def _expected_aggregates(calls: Sequence[dict[str, Any]], by: AggregateKey) -> list[Aggregate]:
    groups: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for call in calls:
        key = time.strftime("%Y-%m-%d", time.gmtime(call["at"])) if by == "day" else call[by]
        groups[key].append(call)
    totals = [
        Aggregate(
            key,
            len(group),
            sum(c["input_tokens"] for c in group),
            sum(c["output_tokens"] for c in group),
            sum(c["cost_usd"] or 0.0 for c in group),
            sum(c["cost_usd"] is None for c in group),
        )
        for key, group in groups.items()
    ]
    if by == "day":
        return sorted(totals, key=lambda a: str(a.key))
    # Most expensive first, then most calls, then by key with "none" first.
    return sorted(totals, key=lambda a: (-a.cost_usd, -a.llm_calls, a.key is not None, a.key or ""))


@given(
    calls=st.lists(call_specs, max_size=25),
    by=st.sampled_from(AGGREGATE_KEYS),
    run_id=st.none() | st.sampled_from(("r1", "r2", "r3")),
    since=times,
    until=times,
)
@examples
def test_aggregates_match_the_model(
    backend: Backend,
    calls: list[dict[str, Any]],
    by: AggregateKey,
    run_id: str | None,
    since: float | None,
    until: float | None,
) -> None:
    selected = [
        call
        for call in calls
        if (run_id is None or call["run_id"] == run_id)
        and (since is None or call["at"] >= since)
        and (until is None or call["at"] < until)
    ]
    seqs: Counter[str] = Counter()
    rows = []
    for call in calls:
        rows.append(
            LlmCallRow(
                seq=seqs[call["run_id"]], span_id=None, cache_tokens=0, duration_ms=1, **call
            )
        )
        seqs[call["run_id"]] += 1
    with backend.empty() as store:
        store.write(WriteBatch(llm_calls=rows))
        got = store.aggregate(by, run_id=run_id, since=since, until=until)
    assert got == _expected_aggregates(selected, by)
    assert all(type(a.llm_calls) is int and type(a.cost_usd) is float for a in got)


def test_aggregate_ties_put_calls_outside_any_persona_first(store: RunStore) -> None:
    rows = [
        LlmCallRow(
            run_id="r1",
            seq=seq,
            span_id=None,
            step=None,
            persona=persona,
            model="m",
            input_tokens=1,
            output_tokens=1,
            cache_tokens=0,
            cost_usd=0.125,
            duration_ms=1,
            at=DAY0,
        )
        for seq, persona in enumerate(["writer", None, "analyst"])
    ]
    store.write(WriteBatch(llm_calls=rows))
    assert [a.key for a in store.aggregate("persona")] == [None, "analyst", "writer"]


def test_aggregate_rejects_an_unknown_key(store: RunStore) -> None:
    with pytest.raises(ValueError, match="by must be one of model, persona, step, day"):
        store.aggregate("hour")  # type: ignore[arg-type]


def test_aggregates_of_a_recorded_run(store: RunStore, scripted: ScriptedProvider) -> None:
    with recording(store), steptrace.run("costly") as run:
        research()
        edit()
    with recording(store), steptrace.run("other"):
        note()
    by_persona = {a.key: a for a in store.aggregate("persona", run_id=run.id)}
    assert set(by_persona) == {"researcher", "editor"}
    assert by_persona["researcher"].llm_calls == 2
    assert by_persona["editor"].cost_usd == pytest.approx(0.125)
    assert [a.key for a in store.aggregate("model")] == ["m-small", "m-large"]
    by_step = {a.key: a.llm_calls for a in store.aggregate("step")}
    assert by_step == {"ask": 2, "overspend": 1, None: 1, "note": 1}
    today = time.strftime("%Y-%m-%d", time.gmtime(run.started_at))
    assert [(a.key, a.llm_calls) for a in store.aggregate("day")] == [(today, 5)]
    assert store.aggregate("day", since=time.time() + 60) == []


# -- writing: replacement, heartbeats, all or nothing -----------------------------------


def _run(run_id: str, status: str = "running", **fields: Any) -> RunRow:
    return RunRow(id=run_id, name="w", status=status, started_at=time.time(), **fields)


def test_a_row_whose_key_exists_is_replaced(store: RunStore) -> None:
    span = SpanRow(
        run_id="r1",
        span_id=1,
        parent_id=None,
        name="root",
        kind="run",
        start_ns=1,
        end_ns=None,
        status="ok",
        error=None,
    )
    phase = PhaseChange(from_phase="a", to_phase="b", iteration=1).to_dict()
    store.write(
        WriteBatch(
            runs=[_run("r1")],
            spans=[span],
            events=[EventRow(run_id="r1", seq=0, span_id=1, data=phase)],
            transcripts=[TranscriptRow(run_id="r1", span_id=1, request={"a": 1}, response=None)],
        )
    )
    rejected = ToolRejected(tool_name="t", reason="no", iteration=2).to_dict()
    final = _run("r1", "completed", ended_at=time.time(), llm_calls=2)
    store.write(
        WriteBatch(
            runs=[final],
            spans=[dataclasses.replace(span, end_ns=9, status="error", error="E")],
            events=[EventRow(run_id="r1", seq=0, span_id=None, data=rejected)],
            transcripts=[TranscriptRow(run_id="r1", span_id=1, request=None, response={"b": 2})],
        )
    )
    stored = store.get_run("r1")
    assert stored is not None
    assert stored.run == final
    assert [(s.end_ns, s.status, s.error) for s in stored.spans] == [(9, "error", "E")]
    assert store.events("r1") == [EventRow(run_id="r1", seq=0, span_id=None, data=rejected)]
    assert store.event_counts("r1") == {"tool_rejected": 1}
    assert store.transcripts("r1") == [
        TranscriptRow(run_id="r1", span_id=1, request=None, response={"b": 2})
    ]
    assert store.count_runs() == 1


def test_heartbeats_touch_only_running_runs(store: RunStore) -> None:
    store.write(WriteBatch(runs=[_run("live", heartbeat_at=1.0), _run("done", "completed")]))
    store.write(WriteBatch(heartbeats=[("live", 1e9), ("done", 1e9), ("unknown", 1e9)]))
    rows = {row.id: row for row in store.list_runs()}
    assert rows["live"].heartbeat_at == 1e9
    assert rows["done"].heartbeat_at is None
    assert set(rows) == {"live", "done"}


def test_a_batch_failing_half_way_writes_nothing(store: RunStore) -> None:
    phase = PhaseChange(from_phase="a", to_phase="b", iteration=1).to_dict()
    store.write(
        WriteBatch(
            runs=[_run("kept")], events=[EventRow(run_id="kept", seq=0, span_id=None, data=phase)]
        )
    )
    before = store.get_run("kept")
    # Every table but the last gets valid rows; the LLM call lacks its model.
    bad_call = LlmCallRow(
        run_id="kept",
        seq=0,
        span_id=None,
        step=None,
        persona=None,
        model=None,  # type: ignore[arg-type]
        input_tokens=1,
        output_tokens=1,
        cache_tokens=0,
        cost_usd=None,
        duration_ms=1,
        at=time.time(),
    )
    half = WriteBatch(
        runs=[_run("kept", "completed"), _run("new")],
        events=[EventRow(run_id="kept", seq=n, span_id=None, data=phase) for n in range(1, 5)],
        steps=[StepRow(run_id="kept", seq=0, data={"name": "s"})],
        llm_calls=[bad_call],
        heartbeats=[("kept", 5.0)],
    )
    with pytest.raises(BatchRejected) as refused:  # the data's fault, said so
        store.write(half)
    assert isinstance(refused.value.__cause__, sqlite3.IntegrityError | psycopg.IntegrityError)
    assert store.get_run("kept") == before
    assert store.run_ids() == ["kept"]
    assert len(store.events("kept")) == 1
    assert store.aggregate("model") == []
    # The store goes on working after the failure.
    store.write(WriteBatch(runs=[_run("after")]))
    assert store.count_runs() == 2


def test_threads_share_one_store(store: RunStore) -> None:
    phase = PhaseChange(from_phase="a", to_phase="b", iteration=1).to_dict()
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(number: int) -> None:
        try:
            start.wait(10)
            run_id = f"t{number}"
            store.write(WriteBatch(runs=[_run(run_id)]))
            for batch in range(10):
                store.write(
                    WriteBatch(
                        events=[
                            EventRow(run_id=run_id, seq=batch * 10 + n, span_id=None, data=phase)
                            for n in range(10)
                        ],
                        heartbeats=[(run_id, time.time())],
                    )
                )
                store.list_runs()
                assert store.get_run(run_id) is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert store.count_runs() == 4
    for number in range(4):
        assert store.event_counts(f"t{number}") == {"phase_change": 100}


# -- runs whose process died ------------------------------------------------------------


def _dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_mark_interrupted_picks_dead_and_silent_writers(store: RunStore) -> None:
    now = time.time()
    here = this_host()
    dead = _dead_pid()

    def row(
        run_id: str, age: float, pid: int | None, host: str | None, beat: float | None
    ) -> RunRow:
        """A running run started ``age`` s ago, last heard of ``beat`` s ago."""
        heartbeat = None if beat is None else now - beat
        return RunRow(
            id=run_id,
            name="r",
            status="running",
            started_at=now - age,
            pid=pid,
            host=host,
            heartbeat_at=heartbeat,
        )

    elsewhere = "elsewhere.invalid"
    rows = [
        row("dead-here", 10, dead, here, 1),
        row("silent-elsewhere", 7200, dead, elsewhere, 3600),
        row("never-beat-elsewhere", 3600, None, None, None),
        # Untouched: a live process here (even with an old heartbeat), a fresh
        # heartbeat elsewhere, and a dead process's run that had ended.
        row("live-here", 7200, os.getpid(), here, 3600),
        row("fresh-elsewhere", 7200, dead, elsewhere, 5),
        dataclasses.replace(
            row("ended", 7200, dead, here, 7000), status="completed", ended_at=now - 7000
        ),
    ]
    store.write(WriteBatch(runs=rows))
    marked = store.mark_interrupted(stale_after=60)
    assert sorted(marked) == ["dead-here", "never-beat-elsewhere", "silent-elsewhere"]
    after = {row.id: row for row in store.list_runs()}
    assert {run_id for run_id, row in after.items() if row.status == "interrupted"} == set(marked)
    # An interrupted run ends when its writer was last heard of.
    assert after["dead-here"].ended_at == now - 1
    assert after["silent-elsewhere"].ended_at == now - 3600
    assert after["never-beat-elsewhere"].ended_at == now - 3600
    assert after["live-here"].status == "running"
    assert after["fresh-elsewhere"].status == "running"
    assert after["ended"].status == "completed"
    assert store.mark_interrupted(stale_after=60) == []
    assert store.count_runs(status="interrupted") == 3


def test_opening_a_store_marks_dead_runs(backend: Backend, store: RunStore) -> None:
    store.write(
        WriteBatch(
            runs=[
                _run("orphan", pid=_dead_pid(), host=this_host(), heartbeat_at=time.time()),
                _run("mine", pid=os.getpid(), host=this_host(), heartbeat_at=time.time()),
            ]
        )
    )
    reopened = backend.reopen()
    statuses = {row.id: row.status for row in reopened.list_runs()}
    assert statuses == {"orphan": "interrupted", "mine": "running"}


# -- closing ----------------------------------------------------------------------------


def test_a_closed_store_refuses_calls(backend: Backend, store: RunStore) -> None:
    store.write(WriteBatch(runs=[_run("r1")]))
    store.close()
    store.close()  # idempotent
    calls: list[Callable[[], object]] = [
        store.list_runs,
        lambda: store.get_run("r1"),
        lambda: store.write(WriteBatch(runs=[_run("r2")])),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="closed"):
            call()
    assert backend.reopen().run_ids() == ["r1"]


# -- child runs and replays -------------------------------------------------------------


def _family() -> list[RunRow]:
    """Two executions: ``job`` with two children (one with a child of its own),
    and ``solo``; plus a replay of ``job``, with a child."""
    return [
        RunRow(id="job", name="job", status="completed", started_at=1e9, cost_usd=3.0),
        RunRow(
            id="job.a",
            name="agent",
            status="failed",
            started_at=1e9 + 1,
            cost_usd=1.0,
            parent_run_id="job",
            parent_span_id=7,
        ),
        RunRow(
            id="job.b",
            name="library",
            status="completed",
            started_at=1e9 + 2,
            cost_usd=2.0,
            parent_run_id="job",
        ),
        RunRow(
            id="job.b.x",
            name="inner",
            status="completed",
            started_at=1e9 + 3,
            cost_usd=0.5,
            parent_run_id="job.b",
        ),
        RunRow(id="solo", name="agent", status="completed", started_at=1e9 + 4, cost_usd=0.25),
        RunRow(
            id="again",
            name="job",
            status="completed",
            started_at=1e9 + 5,
            cost_usd=3.0,
            metadata={"replay_of": "job"},
        ),
        RunRow(
            id="again.a",
            name="agent",
            status="completed",
            started_at=1e9 + 6,
            cost_usd=3.0,
            parent_run_id="again",
            metadata={"replay_of": "job"},
        ),
    ]


def test_child_runs_list_under_their_parent(store: RunStore) -> None:
    persona = SpanRow(
        run_id="job.b",
        span_id=1,
        parent_id=None,
        name="analyst",
        kind="persona",
        start_ns=1,
        end_ns=2,
        status="ok",
        error=None,
    )
    store.write(WriteBatch(runs=_family(), spans=[persona]))
    assert [r.id for r in store.list_runs(top_level=True, persona="analyst")] == ["job"]
    assert [r.id for r in store.list_runs(persona="analyst")] == ["job.b"]
    assert [r.id for r in store.list_runs(top_level=True)] == ["again", "solo", "job"]
    assert store.count_runs(top_level=True) == 3
    assert [r.id for r in store.list_runs(parent_run_id="job")] == ["job.b", "job.a"]
    assert store.count_runs(parent_run_id="job") == 2
    assert store.list_runs(parent_run_id="solo") == []
    # An execution is listed when its top run or one of its children matches.
    assert [r.id for r in store.list_runs(top_level=True, status="failed")] == ["job"]
    assert [r.id for r in store.list_runs(top_level=True, name="agent")] == [
        "again",
        "solo",
        "job",
    ]
    assert [r.id for r in store.list_runs(top_level=True, name="library")] == ["job"]
    assert store.count_runs(top_level=True, name="library") == 1
    job = store.get_run("job")
    assert job is not None
    assert job.child_run_ids == ["job.a", "job.b"]
    child = store.get_run("job.a")
    assert child is not None
    assert (child.run.parent_run_id, child.run.parent_span_id) == ("job", 7)
    assert child.child_run_ids == []
    assert not child.run.is_top_level
    assert store.list_runs(name="inner")[0].parent_run_id == "job.b"


def test_replays_are_marked_and_spend_nothing(store: RunStore) -> None:
    store.write(WriteBatch(runs=_family()))
    rows = {r.id: r for r in store.list_runs()}
    assert {run_id for run_id, r in rows.items() if r.replay_of} == {"again", "again.a"}
    assert rows["again"].replay_of == "job"
    calls = [
        LlmCallRow(
            run_id=run_id,
            seq=0,
            span_id=None,
            step=None,
            persona=None,
            model="m",
            input_tokens=1,
            output_tokens=1,
            cache_tokens=0,
            cost_usd=0.5,
            duration_ms=1,
            at=DAY0,
        )
        for run_id in ("job.a", "again.a")
    ]
    store.write(WriteBatch(llm_calls=calls))
    # Spend counts each call once, in the run that made it, and no replay.
    assert store.aggregate("model") == [Aggregate("m", 1, 1, 1, 0.5)]
    assert store.aggregate("model", run_id="again.a") == [Aggregate("m", 1, 1, 1, 0.5)]


def test_a_child_run_is_recorded_with_its_parent(store: RunStore) -> None:
    # A run opened inside another is its child (items enter left to right).
    with (
        recording(store) as writer,
        steptrace.run("parent") as parent,
        steptrace.run("child") as child,
    ):
        note()
    assert (writer.failures, writer.dropped) == (0, 0)
    stored = store.get_run(child.id)
    assert stored is not None
    assert (stored.run.parent_run_id, stored.run.parent_span_id) == (
        parent.id,
        parent.root.span_id,
    )
    top = store.get_run(parent.id)
    assert top is not None
    assert top.child_run_ids == [child.id]
    assert [r.id for r in store.list_runs(top_level=True)] == [parent.id]


def test_a_header_written_again_keeps_the_write_errors(store: RunStore) -> None:
    store.write(WriteBatch(runs=[_run("r1")]))
    store.write(WriteBatch(write_errors=[("r1", 2, "span 3: refused")]))
    store.write(WriteBatch(runs=[_run("r1", "completed", ended_at=time.time())]))
    store.write(WriteBatch(write_errors=[("r1", 1, "event 4: refused")]))
    (row,) = store.list_runs()
    assert (row.status, row.write_errors, row.write_error) == ("completed", 3, "event 4: refused")
