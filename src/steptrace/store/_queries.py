"""SQL and row mapping shared by every backend: columns, run filters, usage
aggregates, and turning result tuples back into rows and ``StoredRun``.

Queries are written with ``?`` placeholders; a backend whose driver uses
another style converts them (``PostgresStore`` turns ``?`` into ``%s``). The
one expression that differs between dialects, a call's UTC day, is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, TypeVar

from .._run import CompletedStep
from ._protocol import (
    AGGREGATE_KEYS,
    AggregateKey,
    BatchRejected,
    CallLog,
    LlmCallRow,
    RunFilter,
    RunRow,
    SpanRow,
    StoredRun,
    WriteBatch,
    summarize,
)
from ._stored_events import (
    BuiltOnRead,
    Unreadable,
    agent_summary,
    decode_rows,
    stored_events,
    unreadable,
)
from ._tables import (
    CALLS,
    EVENTS,
    RUNS,
    SPANS,
    STEPS,
    TABLES,
    TRANSCRIPTS,
    Table,
    dumps,
    reader,
)

__all__ = [
    "CALL_COLUMNS",
    "CHILD_RUNS",
    "EVENT_COLUMNS",
    "HEARTBEAT",
    "RUN_COLUMNS",
    "SPAN_COLUMNS",
    "STEP_COLUMNS",
    "TABLES",
    "TRANSCRIPT_COLUMNS",
    "UPSERTS",
    "WRITE_ERRORS",
    "aggregate_query",
    "batch_rows",
    "dumps",
    "heartbeat_rows",
    "loads_or_none",
    "run_filter_clause",
    "run_row",
    "span_row",
    "stored_run",
    "write_error_rows",
]

RUN_COLUMNS = RUNS.select()
"""What a run row reads back: what the writer writes, and the store's own
count of the run's refused rows (kept when a header is written again)."""
SPAN_COLUMNS = SPANS.select()
CALL_COLUMNS = CALLS.select()
EVENT_COLUMNS = EVENTS.select()
STEP_COLUMNS = STEPS.select()
TRANSCRIPT_COLUMNS = TRANSCRIPTS.select()

HEARTBEAT = "UPDATE runs SET heartbeat_at = ? WHERE id = ? AND status = 'running'"
"""Applied with ``(time, run id)`` for each of a batch's heartbeats."""

CHILD_RUNS = "SELECT id FROM runs WHERE parent_run_id = ? ORDER BY started_at, id"
"""A run's children's ids, in start order (``get_run``)."""

WRITE_ERRORS = "UPDATE runs SET write_errors = write_errors + ?, write_error = ? WHERE id = ?"
"""Applied with ``(rows, message, run id)`` for each of a batch's write errors."""


def _upsert(table: Table) -> str:
    names, key = table.columns, table.key
    updates = ", ".join(f"{name} = excluded.{name}" for name in names if name not in key)
    return (
        f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


UPSERTS = {name: _upsert(table) for name, table in TABLES.items()}
"""Insert-or-update of each table, in SQL both databases accept: a row whose key
exists is replaced in the columns written, so a run header written again keeps
the store's own ``write_errors`` and ``write_error``."""


def loads_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def run_filter_clause(where: RunFilter) -> tuple[str, list[Any]]:
    """A ``WHERE ...`` clause (or ``""``) over ``runs`` and its parameters.

    With ``top_level``, the runs without a parent of which the run itself or
    a child run matches the other filters."""
    clause, params = _matching(where)
    if where.parent_run_id is not None:
        parent = "parent_run_id = ?"
        clause = f"{clause} AND {parent}" if clause else f" WHERE {parent}"
        params.append(where.parent_run_id)
    if not where.top_level:
        return clause, params
    if not clause:
        return " WHERE parent_run_id IS NULL", params
    return (
        " WHERE parent_run_id IS NULL AND id IN "
        f"(SELECT COALESCE(parent_run_id, id) FROM runs{clause})",
        params,
    )


def _matching(where: RunFilter) -> tuple[str, list[Any]]:
    conditions: list[str] = []
    params: list[Any] = []
    if where.name is not None:
        conditions.append("name = ?")
        params.append(where.name)
    if where.status is not None:
        conditions.append("status = ?")
        params.append(where.status)
    if where.persona is not None:
        conditions.append(
            "EXISTS (SELECT 1 FROM spans WHERE spans.kind = 'persona' "
            "AND spans.name = ? AND spans.run_id = runs.id)"
        )
        params.append(where.persona)
    if where.started_after is not None:
        conditions.append("started_at >= ?")
        params.append(where.started_after)
    if where.started_before is not None:
        conditions.append("started_at < ?")
        params.append(where.started_before)
    return (f" WHERE {' AND '.join(conditions)}" if conditions else ""), params


def aggregate_query(
    by: AggregateKey,
    *,
    day_expression: str,
    run_id: str | None,
    since: float | None,
    until: float | None,
) -> tuple[str, list[Any]]:
    """``SELECT key, calls, input, output, cost, unpriced calls`` over
    ``llm_calls``, grouped (days in order, other keys most expensive first)."""
    if by not in AGGREGATE_KEYS:
        raise ValueError(f"aggregate: by must be one of {', '.join(AGGREGATE_KEYS)}, got {by!r}")
    key = day_expression if by == "day" else by
    conditions: list[str] = []
    params: list[Any] = []
    if run_id is not None:
        conditions.append("run_id = ?")
        params.append(run_id)
    else:  # a replay spent nothing: its calls are the original's again
        conditions.append("run_id NOT IN (SELECT id FROM runs WHERE replay_of IS NOT NULL)")
    if since is not None:
        conditions.append("at >= ?")
        params.append(since)
    if until is not None:
        conditions.append("at < ?")
        params.append(until)
    clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    # Days read best in order; everything else most expensive first. Calls
    # outside any persona or step (NULL) come first among equals, in every
    # dialect (PostgreSQL would otherwise put NULL last, SQLite first).
    order = "k" if by == "day" else "5 DESC, 2 DESC, k NULLS FIRST"
    return (
        f"SELECT {key} AS k, COUNT(*), COALESCE(SUM(input_tokens), 0), "
        "COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cost_usd), 0), "
        f"COUNT(*) - COUNT(cost_usd) FROM llm_calls{clause} GROUP BY k ORDER BY {order}",
        params,
    )


span_row: Callable[[Sequence[Any]], SpanRow] = reader(SPANS)
"""A ``SPAN_COLUMNS`` result row as a ``SpanRow``."""
run_row: Callable[[Sequence[Any]], RunRow] = reader(RUNS)
"""A ``RUN_COLUMNS`` result row as a ``RunRow``."""
_call_row: Callable[[Sequence[Any]], LlmCallRow] = reader(CALLS)


def stored_run(
    head: tuple[Any, ...],
    spans: Sequence[tuple[Any, ...]],
    events: Sequence[tuple[Any, ...]],
    steps: Sequence[tuple[Any, ...]],
    calls: list[tuple[Any, ...]],
    children: Sequence[tuple[Any, ...]] = (),
) -> StoredRun:
    """A ``StoredRun`` from a run's rows: ``RUN_COLUMNS``, ``SPAN_COLUMNS``,
    ``(seq, span_id, data)`` events, ``(seq, data)`` ledger rows,
    ``CALL_COLUMNS``, ``(id,)`` of its child runs.

    Events and LLM call rows are built when read (``BuiltOnRead``), the
    summary from the rows; the other rows are read now, and one of them that
    cannot be read raises ``ValueError`` naming the run and the row."""
    run_id = head[0]
    (run,) = _read_all(run_row, [head], lambda _: f"run {run_id}: header")
    steps_data = decode_rows([data for _, data in steps])
    ledger = _read_all(
        _step,
        list(zip(steps, steps_data, strict=True)),
        lambda r: f"run {run_id}: ledger row {r[0][0]}",
    )
    # Columns taken in C-level passes: a big run has 100,000 events.
    seqs, span_ids, texts = (list(map(itemgetter(i), events)) for i in range(3))
    rows = decode_rows(texts)
    return StoredRun(
        run=run,
        spans=_read_all(span_row, spans, lambda r: f"run {run_id}: span {r[1]}"),
        events=stored_events(run_id, seqs, rows),
        event_span_ids=span_ids,
        completed_steps=ledger,
        llm_calls=BuiltOnRead(_call_row, calls, lambda i: f"run {run_id}: llm call {calls[i][1]}"),
        summary=summarize(run, agent_summary(rows), ledger, _call_log(calls)),
        child_run_ids=[child_id for (child_id,) in children],
    )


_R = TypeVar("_R")


def _read_all(
    read: Callable[[Any], _R], rows: Sequence[Any], where: Callable[[Any], str]
) -> list[_R]:
    """Each row read. One that cannot be read raises ``unreadable`` saying
    ``where(row)`` is (looked for only then: reading stays one comprehension)."""
    try:
        return [read(row) for row in rows]
    except Exception:
        for row in rows:
            try:
                read(row)
            except Exception as exc:
                raise unreadable(where(row), exc) from exc
        raise


def _step(row: tuple[tuple[Any, ...], Any]) -> CompletedStep:
    """A ledger row (``(seq, data)``, its decoded data) as its ``CompletedStep``."""
    data = row[1]
    if isinstance(data, Unreadable):
        raise data.error
    return CompletedStep.from_dict(data)


_COST = CALLS.read_columns.index("cost_usd")
_INPUT = CALLS.read_columns.index("input_tokens")
_OUTPUT = CALLS.read_columns.index("output_tokens")


def _call_log(calls: Sequence[tuple[Any, ...]]) -> CallLog:
    """The columns of ``CALL_COLUMNS`` rows the summary reads."""
    return CallLog(*(list(map(itemgetter(i), calls)) for i in (_INPUT, _OUTPUT, _COST)))


def batch_rows(batch: WriteBatch) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """``(table, parameter rows)`` for every table of ``TABLES`` the batch
    fills, values in the table's column order (JSON fields encoded).

    ``BatchRejected`` when a value cannot be encoded (a circular structure, an
    object whose ``str()`` raises, ...)."""
    try:
        return _batch_rows(batch)
    except Exception as exc:
        raise BatchRejected(f"a row cannot be encoded: {type(exc).__name__}: {exc}") from exc


def _batch_rows(batch: WriteBatch) -> list[tuple[str, list[tuple[Any, ...]]]]:
    tables: list[tuple[str, list[tuple[Any, ...]]]] = [
        (table.name, table.values(rows))
        for table, rows in (
            (RUNS, batch.runs),
            (SPANS, batch.spans),
            (EVENTS, batch.events),
            (STEPS, batch.steps),
            (CALLS, batch.llm_calls),
            (TRANSCRIPTS, batch.transcripts),
        )
    ]
    # The writer's fast path (_encode.EncodedBatch) brings tuples in this
    # same column order, already encoded: they follow the batch's row objects.
    encoded: dict[str, list[tuple[Any, ...]]] | None = getattr(batch, "encoded", None)
    if encoded:
        tables = [(table, rows + encoded.get(table, [])) for table, rows in tables]
    return [(table, rows) for table, rows in tables if rows]


def heartbeat_rows(batch: WriteBatch) -> list[tuple[float, str]]:
    """Parameters of ``HEARTBEAT`` for the batch's heartbeats."""
    return [(at, run_id) for run_id, at in batch.heartbeats]


def write_error_rows(batch: WriteBatch) -> list[tuple[int, str, str]]:
    """Parameters of ``WRITE_ERRORS`` for the batch's write errors."""
    return [(rows, message, run_id) for run_id, rows, message in batch.write_errors]
