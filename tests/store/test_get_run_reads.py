"""``get_run`` reads a run back as the eager decoding of its rows did.

Events and LLM call rows are built when first read and the summary is added
up from the decoded rows (``_stored_events``); these tests hold the result
equal to the eager decoding ``get_run`` did before (``_eager``, kept here as
the reference) on generated runs, in SQLite and PostgreSQL, and show that a
row that cannot be read raises naming the run and the row when read, and
costs no other row anything.
"""

from __future__ import annotations

import contextlib
import copy
import json
import pickle
import re
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steptrace import (
    AgentEvent,
    ContextCompaction,
    LlmCall,
    LoopComplete,
    LoopIntervention,
    PhaseChange,
    SchemaRetry,
    ToolExecution,
    ToolRejected,
    event_from_dict,
    summarize_events,
)
from steptrace._run import CompletedStep
from steptrace.budget import PICO_PER_USD
from steptrace.store import (
    EventRow,
    LlmCallRow,
    PostgresStore,
    RunRow,
    SpanRow,
    SQLiteStore,
    StepRow,
    StoredRun,
    WriteBatch,
)
from steptrace.store._stored_events import agent_summary
from steptrace.store._tables import CALLS, RUNS, SPANS

from .._services import fresh_database

# -- the reference: get_run's eager decoding before events were built on read --------


def _eager(store: SQLiteStore | PostgresStore, run_id: str) -> dict[str, Any]:
    """Every field of ``StoredRun`` as the eager decoding gave it, from the
    same rows, with the dataclasses' own constructors."""

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return store._read(sql, (run_id,))

    def build(cls: type, table: Any, row: tuple[Any, ...]) -> Any:
        values = dict(zip(table.read_columns, row, strict=True))
        for name in table.json:
            if values[name] is not None:
                values[name] = json.loads(values[name])
        return cls(**values)

    (head,) = rows(f"SELECT {RUNS.select()} FROM runs WHERE id = ?")
    run = build(RunRow, RUNS, head)
    events = rows("SELECT span_id, data FROM events WHERE run_id = ? ORDER BY seq")
    typed = [event_from_dict(json.loads(data)) for _, data in events]
    ledger = [
        CompletedStep.from_dict(json.loads(data))
        for (data,) in rows("SELECT data FROM completed_steps WHERE run_id = ? ORDER BY seq")
    ]
    calls = [
        build(LlmCallRow, CALLS, row)
        for row in rows(f"SELECT {CALLS.select()} FROM llm_calls WHERE run_id = ? ORDER BY seq")
    ]
    spans = [
        build(SpanRow, SPANS, row)
        for row in rows(
            f"SELECT {SPANS.select()} FROM spans WHERE run_id = ? ORDER BY start_ns, span_id"
        )
    ]
    children = rows("SELECT id FROM runs WHERE parent_run_id = ? ORDER BY started_at, id")
    return {
        "run": run,
        "spans": spans,
        "events": typed,
        "event_span_ids": [span_id for span_id, _ in events],
        "completed_steps": ledger,
        "llm_calls": calls,
        "summary": _eager_summary(run, typed, ledger, calls),
        "child_run_ids": [child for (child,) in children],
    }


def _eager_summary(
    run: RunRow, events: list[AgentEvent], steps: list[CompletedStep], calls: list[LlmCallRow]
) -> dict[str, Any]:
    statuses = Counter(step.status for step in steps)
    duration = None if run.ended_at is None else round((run.ended_at - run.started_at) * 1000, 3)
    llm_calls, input_tokens, output_tokens = run.llm_calls, run.input_tokens, run.output_tokens
    cost_usd = run.cost_usd
    if len(calls) > run.llm_calls:
        llm_calls = len(calls)
        input_tokens = sum(c.input_tokens for c in calls)
        output_tokens = sum(c.output_tokens for c in calls)
        cost_usd = sum(round((c.cost_usd or 0.0) * PICO_PER_USD) for c in calls) / PICO_PER_USD
    return {
        "run_id": run.id,
        "name": run.name,
        "status": run.status,
        "duration_ms": duration,
        "llm_calls": llm_calls,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": cost_usd,
        "unpriced_calls": sum(1 for c in calls if c.cost_usd is None),
        "steps": {s: statuses.get(s, 0) for s in ("completed", "failed", "skipped", "escalated")},
        "budget": run.budget,
        "agent": summarize_events(events),
    }


_FIELDS = (
    "run",
    "spans",
    "events",
    "event_span_ids",
    "completed_steps",
    "llm_calls",
    "summary",
    "child_run_ids",
)


def assert_as_eager(stored: StoredRun, expected: dict[str, Any]) -> None:
    for name in _FIELDS:
        assert getattr(stored, name) == expected[name], name
    # Equal and of the same types, item for item.
    assert list(map(type, stored.events)) == list(map(type, expected["events"]))
    assert list(map(type, stored.llm_calls)) == [LlmCallRow] * len(expected["llm_calls"])


# -- generated runs ---------------------------------------------------------------------

_count = st.integers(min_value=0, max_value=10**6) | st.sampled_from([0, 1, 2, 2**62])
_iteration = st.sampled_from([0, 0, 1, 2, 3]) | _count
# Text either database keeps in a column (no NUL, no lone surrogate).
_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_names = st.lists(st.sampled_from(["read", "write", "search", ""]), max_size=3).map(tuple)

EVENTS: st.SearchStrategy[AgentEvent] = st.one_of(
    st.builds(
        LlmCall,
        call_id=_text,
        model=_text,
        input_tokens=_count,
        output_tokens=_count,
        cache_tokens=_count,
        duration_ms=_count,
        iteration=_iteration,
        estimated=st.booleans(),
    ),
    st.builds(
        ToolExecution,
        tool_name=st.sampled_from(["read", "write", "search", "ünïcode \x1b[2J"]),
        tool_use_id=_text,
        duration_ms=_count,
        status=st.sampled_from(["ok", "error", "rejected"]),
        classification=_text,
        iteration=_iteration,
    ),
    st.builds(ToolRejected, tool_name=_text, reason=_text, iteration=_iteration),
    st.builds(
        LoopIntervention,
        tool_name=_text,
        kind=st.sampled_from(["warn", "block", "skip"]),
        count=_count,
        iteration=_iteration,
    ),
    st.builds(
        ContextCompaction, archived_messages=_count, new_summary_len=_count, iteration=_iteration
    ),
    st.builds(PhaseChange, from_phase=_text, to_phase=_text, iteration=_iteration),
    st.builds(
        LoopComplete,
        status=st.sampled_from(["done", "max_iterations", "error"]),
        iterations=_count,
        total_duration_ms=_count,
        tools_used=_names,
        successful_tools=_names,
    ),
    st.builds(SchemaRetry, attempt=_count, errors=_names, nudge_used=st.booleans()),
)


@st.composite
def runs(draw: st.DrawFn) -> WriteBatch:
    """A run's rows: header, spans, events, ledger and call log."""
    run_id = "r-" + uuid.uuid4().hex
    events = draw(st.lists(EVENTS, max_size=40))
    spans = [
        SpanRow(
            run_id=run_id,
            span_id=span_id,
            parent_id=None if span_id == 1 else 1,
            name=draw(_text),
            kind="run" if span_id == 1 else draw(st.sampled_from(["step", "llm_call", "tool"])),
            start_ns=draw(st.integers(0, 10)),
            end_ns=draw(st.none() | st.integers(10, 20)),
            status="ok",
            error=draw(st.none() | _text),
            metadata=draw(st.dictionaries(_text, _text | st.integers(), max_size=2)),
        )
        for span_id in range(1, draw(st.integers(1, 5)) + 1)
    ]
    steps = [
        StepRow(
            run_id=run_id,
            seq=seq,
            data=CompletedStep(
                name=draw(_text),
                function="f",
                model=draw(st.none() | _text),
                input_tokens=draw(_count),
                output_tokens=draw(_count),
                cost_usd=draw(st.floats(0, 1)),
                llm_calls=draw(st.integers(0, 3)),
                status=draw(st.sampled_from(["completed", "failed", "skipped", "escalated"])),
                error=None,
            ).to_dict(),
        )
        for seq in range(draw(st.integers(0, 4)))
    ]
    calls = [
        LlmCallRow(
            run_id=run_id,
            seq=seq,
            span_id=draw(st.none() | st.integers(1, 5)),
            step=draw(st.none() | _text),
            persona=None,
            model=draw(_text),
            input_tokens=draw(st.integers(0, 10**6)),
            output_tokens=draw(st.integers(0, 10**6)),
            cache_tokens=0,
            cost_usd=draw(st.none() | st.floats(0, 1)),
            duration_ms=draw(st.integers(0, 10**4)),
            at=1.0e9,
        )
        for seq in range(draw(st.integers(0, 6)))
    ]
    header = RunRow(
        id=run_id,
        name=draw(_text),
        status=draw(st.sampled_from(["completed", "running", "failed"])),
        started_at=1.0e9,
        ended_at=draw(st.none() | st.just(1.0e9 + 2.5)),
        metadata={"k": draw(_text)},
        budget=draw(st.none() | st.just({"max_tokens": 100})),
        llm_calls=draw(st.integers(0, 6)),
        input_tokens=draw(_count),
    )
    span_ids = st.none() | st.integers(1, len(spans))
    return WriteBatch(
        runs=[header],
        spans=spans,
        events=[
            EventRow(run_id=run_id, seq=seq, span_id=draw(span_ids), data=event.to_dict())
            for seq, event in enumerate(events)
        ],
        steps=steps,
        llm_calls=calls,
    )


# -- stores -------------------------------------------------------------------------------

examples = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SQLiteStore | PostgresStore]:
    """One store for the module: every example writes a run of its own."""
    if request.param == "sqlite":
        with SQLiteStore(tmp_path_factory.mktemp("reads") / "runs.db") as opened:
            yield opened
        return
    with (
        fresh_database(request.getfixturevalue("postgres_url")) as url,
        PostgresStore(url) as opened,
    ):
        yield opened


def _set_data(
    store: SQLiteStore | PostgresStore, table: str, run_id: str, seq: int, text: Any
) -> None:
    """Overwrite a row's JSON text, as a damaged or edited database would."""
    sql = f"UPDATE {table} SET data = ? WHERE run_id = ? AND seq = ?"
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as conn, conn:
            conn.execute(sql, (text, run_id, seq))
    else:
        with psycopg.connect(store.url) as pg:
            pg.execute(sql.replace("?", "%s"), (text, run_id, seq))


# -- equal to the eager decoding ------------------------------------------------------------


@examples
@given(batch=runs())
def test_a_run_reads_back_as_the_eager_decoding_gave_it(
    store: SQLiteStore | PostgresStore, batch: WriteBatch
) -> None:
    store.write(batch)
    run_id = batch.runs[0].id
    expected = _eager(store, run_id)
    stored = store.get_run(run_id)
    assert stored is not None
    assert_as_eager(stored, expected)
    # Read in any order, one at a time, the events are the same objects after.
    for index in reversed(range(len(stored.events))):
        assert stored.events[index] == expected["events"][index]
    assert all(a is b for a, b in zip(stored.events, list(stored.events), strict=True))


# Texts that are not an event at all: the summary leaves them out, as it would
# leave out an event that is not there.
NOT_EVENTS: dict[str, Any] = {
    "cut short": lambda text: text[: len(text) // 2],
    "two values": lambda text: text + "," + text,
    "a list": lambda text: "[1, 2]",
    "unknown type": lambda text: '{"type": "bogus"}',
    "type not text": lambda text: '{"type": 7, "iteration": 1}',
    "empty": lambda text: "",
}


@examples
@given(
    batch=runs().filter(lambda b: len(b.events) > 0),
    damage=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(sorted(NOT_EVENTS)))),
)
def test_a_row_that_cannot_be_read_costs_only_itself(
    store: SQLiteStore | PostgresStore, batch: WriteBatch, damage: list[tuple[int, str]]
) -> None:
    store.write(batch)
    run_id = batch.runs[0].id
    expected = _eager(store, run_id)
    broken: dict[int, str] = {}
    for position, kind in damage:
        seq = position % len(batch.events)
        text = json.dumps(batch.events[seq].data, separators=(",", ":"))
        _set_data(store, "events", run_id, seq, NOT_EVENTS[kind](text))
        broken[seq] = kind

    stored = store.get_run(run_id)
    assert stored is not None
    assert len(stored.events) == len(expected["events"])
    for seq, event in enumerate(expected["events"]):
        if seq in broken:
            with pytest.raises(
                ValueError, match=f"^run {re.escape(run_id)}: event {seq} cannot be read: "
            ):
                stored.events[seq]
        else:
            assert stored.events[seq] == event
    if broken:
        with pytest.raises(ValueError, match=f"event {min(broken)} cannot be read"):
            list(stored.events)
    kept = [event for seq, event in enumerate(expected["events"]) if seq not in broken]
    assert stored.summary["agent"] == summarize_events(kept)
    for name in ("run", "spans", "event_span_ids", "completed_steps", "llm_calls"):
        assert getattr(stored, name) == expected[name], name


def test_the_error_is_the_one_reading_the_event_gives_with_the_run_and_row(
    store: SQLiteStore | PostgresStore,
) -> None:
    run_id = "r-" + uuid.uuid4().hex
    phase = PhaseChange(from_phase="a", to_phase="b", iteration=1).to_dict()
    store.write(
        WriteBatch(
            runs=[RunRow(id=run_id, name="n", status="completed", started_at=1.0)],
            events=[EventRow(run_id=run_id, seq=s, span_id=None, data=phase) for s in range(3)],
        )
    )
    _set_data(store, "events", run_id, 1, json.dumps({**phase, "iteration": -1}))
    stored = store.get_run(run_id)
    assert stored is not None
    with pytest.raises(ValueError, match="cannot be read") as raised:
        stored.events[1]
    assert str(raised.value) == (
        f"run {run_id}: event 1 cannot be read: ValueError: "
        "phase_change.iteration: expected a non-negative integer, got -1"
    )
    assert isinstance(raised.value.__cause__, ValueError)
    assert stored.events[0] == stored.events[2] == event_from_dict(phase)
    assert stored.events[-1] is stored.events[2]


def test_a_ledger_row_that_cannot_be_read_names_the_run_and_row(
    store: SQLiteStore | PostgresStore,
) -> None:
    run_id = "r-" + uuid.uuid4().hex
    step = CompletedStep("s", "f", None, 1, 2, 0.0, 1, "completed", None).to_dict()
    store.write(
        WriteBatch(
            runs=[RunRow(id=run_id, name="n", status="completed", started_at=1.0)],
            steps=[StepRow(run_id=run_id, seq=s, data=step) for s in range(3)],
        )
    )
    _set_data(store, "completed_steps", run_id, 1, '{"name": "s"')
    with pytest.raises(
        ValueError, match=rf"^run {run_id}: ledger row 1 cannot be read: JSONDecodeError"
    ):
        store.get_run(run_id)
    _set_data(store, "completed_steps", run_id, 1, '{"name": "s"}')
    with pytest.raises(
        ValueError,
        match=rf"^run {run_id}: ledger row 1 cannot be read: ValueError: completed step: missing",
    ):
        store.get_run(run_id)


def test_text_that_is_not_text_is_a_row_that_cannot_be_read(tmp_path: Path) -> None:
    """SQLite keeps whatever it is given: a BLOB in place of an event's JSON."""
    with SQLiteStore(tmp_path / "runs.db") as store:
        run_id = "r-blob"
        phase = PhaseChange(from_phase="a", to_phase="b", iteration=1)
        store.write(
            WriteBatch(
                runs=[RunRow(id=run_id, name="n", status="completed", started_at=1.0)],
                events=[
                    EventRow(run_id=run_id, seq=s, span_id=None, data=phase.to_dict())
                    for s in range(3)
                ],
            )
        )
        _set_data(store, "events", run_id, 2, json.dumps(phase.to_dict()).encode())
        stored = store.get_run(run_id)
        assert stored is not None
        assert stored.events[:2] == [phase, phase]
        with pytest.raises(ValueError, match=r"^run r-blob: event 2 cannot be read: TypeError"):
            stored.events[2]
        assert stored.summary["agent"] == summarize_events([phase, phase])


# -- the lazy list behaves as the list it stands for ------------------------------------------


def test_events_built_on_read_behave_as_their_list(store: SQLiteStore | PostgresStore) -> None:
    run_id = "r-" + uuid.uuid4().hex
    events = [
        LlmCall(
            call_id=str(i),
            model="m",
            input_tokens=i,
            output_tokens=1,
            cache_tokens=0,
            duration_ms=3,
            iteration=i % 3,
        )
        for i in range(200)
    ]
    store.write(
        WriteBatch(
            runs=[RunRow(id=run_id, name="n", status="completed", started_at=1.0)],
            events=[
                EventRow(run_id=run_id, seq=i, span_id=None, data=e.to_dict())
                for i, e in enumerate(events)
            ],
        )
    )
    stored = store.get_run(run_id)
    assert stored is not None
    # Threads reading at once each get the one object built for an index.
    seen: list[list[AgentEvent]] = []
    start = threading.Barrier(8)

    def read() -> None:
        start.wait()
        seen.append([stored.events[i] for i in range(len(events) - 1, -1, -1)])

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(all(a is b for a, b in zip(seen[0], other, strict=True)) for other in seen)
    assert events == stored.events == events[:]  # a list on either side
    assert stored.events != events[:-1]
    assert stored.events[5:9] == events[5:9]
    assert stored.events[::-50] == events[::-50]
    assert stored.events[-1] == events[-1]
    with pytest.raises(IndexError):
        stored.events[200]
    assert repr(stored.events) == repr(events)
    assert events[7] in stored.events
    assert stored.events.index(events[7]) == 7
    assert list(reversed(stored.events)) == events[::-1]
    with pytest.raises(TypeError):
        hash(stored.events)
    # Copies and pickles are the list itself.
    assert type(copy.copy(stored.events)) is list
    assert pickle.loads(pickle.dumps(stored)) == stored
    assert copy.deepcopy(stored) == stored


# -- the summary from the rows, against summarize_events ------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(EVENTS, max_size=60),
    junk=st.lists(
        st.tuples(
            st.integers(0, 60),
            st.sampled_from(
                [
                    [1, 2],
                    None,
                    "text",
                    {"type": "bogus"},
                    {"type": 3},
                    {"type": "llm_call", "iteration": 1},
                    {"type": "tool_execution", "tool_name": 5, "duration_ms": 1},
                    {"type": "loop_complete", "status": "done", "iterations": True},
                    {
                        "type": "llm_call",
                        "iteration": 1,
                        "input_tokens": -1,
                        "output_tokens": 1,
                        "duration_ms": 1,
                    },
                    {
                        "type": "llm_call",
                        "iteration": 0,
                        "input_tokens": 1.5,
                        "output_tokens": 1,
                        "duration_ms": 1,
                    },
                ]
            ),
        ),
        max_size=5,
    ),
)
def test_the_summary_from_rows_is_summarize_events_of_the_events(
    events: list[AgentEvent], junk: list[tuple[int, Any]]
) -> None:
    rows: list[Any] = [event.to_dict() for event in events]
    for position, row in sorted(junk, key=lambda item: item[0], reverse=True):
        rows.insert(min(position, len(rows)), copy.deepcopy(row))
    assert agent_summary(rows) == summarize_events(events)


@examples
@given(batch=runs())
def test_the_loaded_reads_add_up_the_agent_summary_without_building_events(
    store: SQLiteStore | PostgresStore, batch: WriteBatch
) -> None:
    """``LoadedReads.agent_summary`` (the paged reads of any store) is
    ``summarize_events`` of the run's events, taken from the decoded rows: no
    event object is built for it."""
    from steptrace.store._loaded_reads import LoadedReads
    from steptrace.store._stored_events import BuiltOnRead

    store.write(batch)
    run_id = batch.runs[0].id
    reads = LoadedReads(store)
    summary = reads.agent_summary(run_id)
    held = reads._stored(run_id)
    assert held is not None
    assert isinstance(held.events, BuiltOnRead)
    if batch.runs[0].status != "running":  # an ended run is kept, unread
        assert held.events._unbuilt == len(batch.events)
    assert summary == summarize_events(_eager(store, run_id)["events"])
    assert reads.agent_summary("no-such-run") is None
