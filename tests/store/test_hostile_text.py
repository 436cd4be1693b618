"""Text a database has trouble with is stored and read back as written.

PostgreSQL refuses NUL in ``text`` and lone surrogates, and its JSON types
refuse the JSON escapes of both; SQLite's ``LIKE`` and ``json_extract`` stop
at a NUL. Model output, tool arguments and tool names are hostile data: one of
them holding such a character used to lose its row (PostgreSQL), fail the
run's agent summary (both), or hide from a search. These tests write runs
whose every text is drawn from those characters (and the marks the
PostgreSQL store encodes them with, ``_pg_text``) into a real SQLite file and
a real PostgreSQL database, and hold what each reads back (``get_run``,
listing and filters, event pages, transcripts, aggregates, the paged reads
the portal and ``steptrace show`` use) equal to what was written, and the two
stores equal to each other.

SQLite cannot hold a lone surrogate in a plain text column (its driver
refuses to encode it: the row is refused and counted, as
``test_isolation`` shows); such text is drawn only into JSON-held values
when the two stores are compared, and everywhere for PostgreSQL alone.
"""

from __future__ import annotations

import contextlib
import json
import string
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import steptrace
from steptrace import LlmCall, LoopComplete, ToolExecution, summarize_events
from steptrace._run import CompletedStep
from steptrace.store import (
    EventRow,
    LlmCallRow,
    PostgresStore,
    RunRow,
    SpanRow,
    SQLiteStore,
    StepRow,
    TranscriptRow,
    WriteBatch,
    paged_reads,
    record_runs,
)
from steptrace.store import _pg_text as pg_text
from steptrace.store._isolation import write_isolated
from steptrace.store._tables import dumps

from .._services import fresh_database

# Characters some layer has trouble with, and what their encodings are made of.
_HOSTILE = '\x00\ud800\udbff\ufdd0\ufdd1\\u0dDfF8"x%_!é'
_PLAIN_HOSTILE = _HOSTILE.replace("\ud800", "").replace("\udbff", "")

hostile = st.text(st.sampled_from(_HOSTILE), max_size=10) | st.sampled_from(
    ["\x00", "\\u0000", "\\\\u0000", "\ud800", "\ufdd00000", "\ufdd1d800", '"\\ud800"']
)
"""Any text: held in JSON by both stores, in any column by PostgreSQL."""
plain = st.text(st.sampled_from(_PLAIN_HOSTILE), max_size=10) | st.sampled_from(
    ["\x00", "\\u0000", "\ufdd00000", "\ufdd1d800", "\\ud800"]
)
"""Text both stores hold in a plain text column (no lone surrogate)."""


def _fold(text: str | None) -> str:
    """As a search compares: ASCII letters in lower case."""
    return "" if text is None else text.translate(_LOWER)


_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


# -- the encoding ---------------------------------------------------------------------------


@given(st.text() | hostile | st.text(st.sampled_from(_HOSTILE + "0123abcd")))
@example("\x00")
@example("\\u0000")
@example("\ufdd0d800")
def test_every_text_reads_back_from_its_encoding(text: str) -> None:
    stored = pg_text.encode(text)
    assert pg_text.decode(stored) == text
    assert not any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in stored)
    stored.encode("utf-8")  # PostgreSQL can hold it


@given(st.recursive(hostile | st.integers(), lambda v: st.lists(v) | st.dictionaries(hostile, v)))
def test_json_text_needs_no_encoding(value: Any) -> None:
    """Stored JSON is ASCII, what PostgreSQL cannot hold escaped: kept as is."""
    text = dumps(value)
    assert pg_text.encode(text) == text


# -- stores ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stores(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SQLiteStore, PostgresStore]]:
    """A SQLite file and a PostgreSQL database, one pair for the module: every
    example writes runs of its own."""
    with (
        SQLiteStore(tmp_path_factory.mktemp("hostile") / "runs.db") as sqlite,
        fresh_database(request.getfixturevalue("postgres_url")) as url,
        PostgresStore(url) as postgres,
    ):
        yield sqlite, postgres


examples = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def runs(draw: st.DrawFn, text: st.SearchStrategy[str]) -> WriteBatch:
    """A run whose names, errors, model output, tool names and arguments are
    drawn from ``text`` (plain text columns) and ``hostile`` (JSON)."""
    run_id = "r-" + uuid.uuid4().hex
    tools = draw(st.lists(hostile, min_size=1, max_size=3))
    events: list[dict[str, Any]] = []
    for number, tool in enumerate(draw(st.lists(st.sampled_from(tools), max_size=6))):
        events.append(
            LlmCall(
                call_id=draw(hostile),
                model=draw(hostile),
                input_tokens=number,
                output_tokens=2,
                cache_tokens=0,
                duration_ms=3,
                iteration=draw(st.sampled_from([0, 1])),
            ).to_dict()
        )
        events.append(
            ToolExecution(
                tool_name=tool,
                tool_use_id=draw(hostile),
                duration_ms=number,
                status="ok",
                classification=draw(hostile),
                iteration=1,
            ).to_dict()
        )
        if draw(st.booleans()):
            events.append(LoopComplete(status="done", iterations=1, total_duration_ms=9).to_dict())
    spans = [
        SpanRow(
            run_id=run_id,
            span_id=span_id,
            parent_id=None if span_id == 1 else 1,
            name=draw(text),
            kind="run" if span_id == 1 else draw(st.sampled_from(["tool", "llm_call", "step"])),
            start_ns=span_id,
            end_ns=span_id + 10,
            status="error",
            error=draw(st.none() | text),
            metadata={draw(hostile): draw(hostile)},
        )
        for span_id in range(1, draw(st.integers(1, 4)) + 1)
    ]
    model = draw(text)
    return WriteBatch(
        runs=[
            RunRow(
                id=run_id,
                name=draw(text),
                status="failed",
                started_at=1.0e9,
                ended_at=1.0e9 + 1,
                error=draw(text),
                metadata={draw(hostile): draw(hostile)},
            )
        ],
        spans=spans,
        events=[
            EventRow(run_id=run_id, seq=seq, span_id=1, data=data)
            for seq, data in enumerate(events)
        ],
        steps=[
            StepRow(
                run_id=run_id,
                seq=0,
                data=CompletedStep(
                    name=draw(hostile),
                    function="f",
                    model=draw(hostile),
                    input_tokens=1,
                    output_tokens=1,
                    cost_usd=0.0,
                    llm_calls=1,
                    status="failed",
                    error=draw(hostile),
                ).to_dict(),
            )
        ],
        llm_calls=[
            LlmCallRow(
                run_id=run_id,
                seq=0,
                span_id=1,
                step=draw(st.none() | text),
                persona=draw(st.none() | text),
                model=model,
                input_tokens=1,
                output_tokens=2,
                cache_tokens=0,
                cost_usd=0.25,
                duration_ms=1,
                at=1.0e9,
            )
        ],
        transcripts=[
            TranscriptRow(
                run_id=run_id,
                span_id=1,
                request={"messages": [{"role": "user", "content": draw(hostile)}]},
                response={"text": draw(hostile), "tool_calls": [{"arguments": draw(hostile)}]},
            )
        ],
    )


def _reads(store: SQLiteStore | PostgresStore, batch: WriteBatch, needle: str) -> dict[str, Any]:
    """Everything the store answers about the run, as plain values."""
    head = batch.runs[0]
    run_id = head.id
    stored = store.get_run(run_id)
    assert stored is not None
    with _paged(store) as reader:
        structure = reader.structure(run_id)
        assert structure is not None
        return {
            "run": stored.run,
            "spans": stored.spans,
            "events": list(stored.events),
            "ledger": stored.completed_steps,
            "calls": list(stored.llm_calls),
            "summary": stored.summary,
            "listed": _listed(store, head),
            "by status": run_id in [r.id for r in store.list_runs(status="failed", limit=10_000)],
            "event rows": store.events(run_id),
            "tools": store.events(run_id, types=["tool_execution"]),
            "transcripts": store.transcripts(run_id),
            "by model": store.aggregate("model", run_id=run_id),
            "by step": store.aggregate("step", run_id=run_id),
            "header": reader.header(run_id),
            "structure": structure.spans,
            "page": reader.events_page(run_id, None, 0, 100),
            "agent": reader.agent_summary(run_id),
            "ledger page": reader.ledger(run_id),
            "search": reader.search(run_id, needle, 1000),
            "names": head.name in reader.facets()["names"],
        }


@contextlib.contextmanager
def _paged(store: SQLiteStore | PostgresStore) -> Iterator[Any]:
    """The store's paged reader, closed after (an SQLite one holds a connection)."""
    reader = paged_reads(store)
    try:
        yield reader
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()


def _run_error_found(hits: list[Any]) -> bool:
    return any(h.path == "run.error" and h.span_id is None for h in hits)


def _listed(store: SQLiteStore | PostgresStore, head: RunRow) -> tuple[bool, set[str]]:
    """Whether filtering by the run's name finds it, and the names it finds."""
    found = store.list_runs(name=head.name, limit=10_000)
    return head.id in [r.id for r in found], {r.name for r in found}


def _assert_as_written(reads: dict[str, Any], batch: WriteBatch) -> None:
    head = batch.runs[0]
    assert reads["run"].name == head.name
    assert reads["run"].error == head.error
    assert reads["run"].metadata == head.metadata
    assert reads["run"].write_errors == 0
    assert [(s.name, s.error, s.metadata) for s in reads["spans"]] == [
        (s.name, s.error, s.metadata) for s in batch.spans
    ]
    assert [e.to_dict() for e in reads["events"]] == [e.data for e in batch.events]
    assert [s.to_dict() for s in reads["ledger"]] == [s.data for s in batch.steps]
    assert reads["calls"] == batch.llm_calls
    assert reads["listed"] == (True, {head.name})
    assert reads["by status"]
    assert reads["names"]
    assert [r.data for r in reads["event rows"]] == [e.data for e in batch.events]
    assert [(t.request, t.response) for t in reads["transcripts"]] == [
        (t.request, t.response) for t in batch.transcripts
    ]
    assert [a.key for a in reads["by model"]] == [batch.llm_calls[0].model]
    assert [a.key for a in reads["by step"]] == [batch.llm_calls[0].step]
    assert reads["header"] == reads["run"]
    assert [r.data for r in reads["page"]] == [e.data for e in batch.events]
    agent = summarize_events(reads["events"])
    assert reads["agent"] == agent
    assert reads["summary"]["agent"] == agent
    assert reads["ledger page"] == [s.data for s in batch.steps]


@given(batch=runs(plain), pick=st.integers(0, 10**6))
@examples
def test_hostile_text_reads_back_alike_from_sqlite_and_postgresql(
    stores: tuple[SQLiteStore, PostgresStore], batch: WriteBatch, pick: int
) -> None:
    texts = [batch.runs[0].error, batch.spans[0].name]  # searched, as the name is not
    needle = next((t for t in texts if t), "x")
    start = pick % len(needle)
    needle = needle[start : start + 1 + pick % 3]
    found = []
    for store in stores:
        assert write_isolated(store, batch) == []
        reads = _reads(store, batch, needle)
        _assert_as_written(reads, batch)
        found.append(reads)
    sqlite, postgres = found
    assert sqlite == postgres
    hits, _ = sqlite["search"]
    if any(_fold(needle) in _fold(text) for text in texts):
        assert hits
    assert _run_error_found(hits) == (_fold(needle) in _fold(batch.runs[0].error))


@given(batch=runs(hostile), needle=hostile.filter(bool))
@examples
def test_postgresql_holds_any_text_in_any_column(
    stores: tuple[SQLiteStore, PostgresStore], batch: WriteBatch, needle: str
) -> None:
    postgres = stores[1]
    assert write_isolated(postgres, batch) == []
    reads = _reads(postgres, batch, needle)
    _assert_as_written(reads, batch)
    hits, _ = reads["search"]
    error = batch.runs[0].error
    assert _run_error_found(hits) == (_fold(needle) in _fold(error))


def test_a_legacy_row_postgresql_cannot_read_as_json_costs_the_summary_nothing(
    stores: tuple[SQLiteStore, PostgresStore],
) -> None:
    """A row written before the encoding (its JSON escapes NUL raw) still
    reads, and the agent summary adds it up the slower way rather than fail."""
    postgres = stores[1]
    run_id = "legacy-" + uuid.uuid4().hex
    tool = ToolExecution(
        tool_name="a\x00b",
        tool_use_id="t",
        duration_ms=5,
        status="ok",
        classification="",
        iteration=1,
    )
    postgres.write(
        WriteBatch(runs=[RunRow(id=run_id, name="legacy", status="completed", started_at=1e9)])
    )
    with psycopg.connect(postgres._conninfo, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events (run_id, seq, span_id, type, data) VALUES (%s, 0, NULL, %s, %s)",
            (run_id, "tool_execution", dumps(tool.to_dict())),
        )
    stored = postgres.get_run(run_id)
    assert stored is not None
    assert list(stored.events) == [tool]
    reader = paged_reads(postgres)
    assert reader.agent_summary(run_id) == summarize_events([tool])


# -- recorded by a live run -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_live_runs_hostile_tool_call_is_recorded_whole(
    kind: str, stores: tuple[SQLiteStore, PostgresStore]
) -> None:
    store = stores[0] if kind == "sqlite" else stores[1]
    name = "rm\x00 -rf \\u0000 \ufdd0"
    args = {"path": "\x00\ud800", name: ["\\ud800"]}
    writer = record_runs(store)
    try:
        with (
            steptrace.run("hostile\x00run") as run,
            steptrace.span(name, steptrace.SpanKind.TOOL, arguments=args) as span,
        ):
            steptrace.emit_event(
                ToolExecution(
                    tool_name=name,
                    tool_use_id="\x00",
                    duration_ms=4,
                    status="ok",
                    classification="",
                    iteration=1,
                ),
                span=span,
            )
    finally:
        steptrace.remove_span_processor(writer)
        writer.close()
    assert writer.failures == 0
    stored = store.get_run(run.id)
    assert stored is not None
    assert stored.run.name == "hostile\x00run"
    assert stored.run.write_errors == 0
    tool = next(s for s in stored.spans if s.kind == "tool")
    assert (tool.name, tool.metadata["arguments"]) == (name, args)
    assert [e.tool_name for e in stored.events if isinstance(e, ToolExecution)] == [name]
    assert len(stored.events) == 1
    with _paged(store) as reader:
        assert reader.agent_summary(run.id) == summarize_events(stored.events)
    assert [r.id for r in store.list_runs(name="hostile\x00run")] == [run.id]


def test_text_results_of_other_queries_decode_too(
    stores: tuple[SQLiteStore, PostgresStore], tmp_path: Path
) -> None:
    """Every ``text`` result is decoded by the connection, whatever the query."""
    postgres = stores[1]
    (row,) = postgres._read("SELECT ? || 'x', ?", ("\x00", json.dumps("\ud800")))
    assert row == ("\x00x", '"\\ud800"')
