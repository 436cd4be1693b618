"""SQL and row mapping shared by every backend: columns, run filters, usage
aggregates, and turning result tuples back into rows and ``StoredRun``.

Queries are written with ``?`` placeholders; a backend whose driver uses
another style converts them (``PostgresStore`` turns ``?`` into ``%s``). The
one expression that differs between dialects, a call's UTC day, is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .._run import CompletedStep
from ..events import AgentEvent, event_from_dict
from ._protocol import (
    AGGREGATE_KEYS,
    AggregateKey,
    BatchRejected,
    LlmCallRow,
    RunFilter,
    RunRow,
    SpanRow,
    StoredRun,
    WriteBatch,
    summarize,
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

RUN_WRITTEN_COLUMNS = (
    "id, name, status, started_at, ended_at, error, metadata, budget, "
    "input_tokens, output_tokens, cost_usd, llm_calls, pid, host, heartbeat_at, "
    "parent_run_id, parent_span_id, replay_of"
)
RUN_COLUMNS = RUN_WRITTEN_COLUMNS + ", write_errors, write_error"
"""What a run row reads back: what the writer writes, and the store's own
count of the run's refused rows (kept when a header is written again)."""
CALL_COLUMNS = (
    "run_id, seq, span_id, step, persona, model, input_tokens, output_tokens, "
    "cache_tokens, cost_usd, duration_ms, at"
)
SPAN_COLUMNS = (
    "run_id, span_id, parent_id, name, kind, start_ns, end_ns, status, error, metadata, context"
)


EVENT_COLUMNS = "run_id, seq, span_id, type, data"
STEP_COLUMNS = "run_id, seq, data"
TRANSCRIPT_COLUMNS = "run_id, span_id, request, response"
_SEQ_KEY = ("run_id", "seq")
_SPAN_KEY = ("run_id", "span_id")

TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "runs": (RUN_WRITTEN_COLUMNS, ("id",)),
    "spans": (SPAN_COLUMNS, _SPAN_KEY),
    "events": (EVENT_COLUMNS, _SEQ_KEY),
    "completed_steps": (STEP_COLUMNS, _SEQ_KEY),
    "llm_calls": (CALL_COLUMNS, _SEQ_KEY),
    "transcripts": (TRANSCRIPT_COLUMNS, _SPAN_KEY),
}
"""Each table a ``WriteBatch`` fills: its columns (in ``batch_rows`` order) and key."""

HEARTBEAT = "UPDATE runs SET heartbeat_at = ? WHERE id = ? AND status = 'running'"
"""Applied with ``(time, run id)`` for each of a batch's heartbeats."""

CHILD_RUNS = "SELECT id FROM runs WHERE parent_run_id = ? ORDER BY started_at, id"
"""A run's children's ids, in start order (``get_run``)."""

WRITE_ERRORS = "UPDATE runs SET write_errors = write_errors + ?, write_error = ? WHERE id = ?"
"""Applied with ``(rows, message, run id)`` for each of a batch's write errors."""


def _upsert(table: str, columns: str, key: tuple[str, ...]) -> str:
    names = [name.strip() for name in columns.split(",")]
    updates = ", ".join(f"{name} = excluded.{name}" for name in names if name not in key)
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


UPSERTS = {table: _upsert(table, columns, key) for table, (columns, key) in TABLES.items()}
"""Insert-or-update of each table, in SQL both databases accept: a row whose key
exists is replaced in the columns written, so a run header written again keeps
the store's own ``write_errors`` and ``write_error``."""

# One encoder for every row: json.dumps with options builds a new one per call.
# Metadata is user data: anything JSON cannot encode is stored as its str().
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)


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
    """``SELECT key, calls, input, output, cost`` over ``llm_calls``, grouped
    (days in order, other keys most expensive first)."""
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
        "COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cost_usd), 0) "
        f"FROM llm_calls{clause} GROUP BY k ORDER BY {order}",
        params,
    )


def _call_row(row: tuple[Any, ...]) -> LlmCallRow:
    return LlmCallRow(
        run_id=row[0],
        seq=row[1],
        span_id=row[2],
        step=row[3],
        persona=row[4],
        model=row[5],
        input_tokens=row[6],
        output_tokens=row[7],
        cache_tokens=row[8],
        cost_usd=row[9],
        duration_ms=row[10],
        at=row[11],
    )


def span_row(row: tuple[Any, ...]) -> SpanRow:
    return SpanRow(
        run_id=row[0],
        span_id=row[1],
        parent_id=row[2],
        name=row[3],
        kind=row[4],
        start_ns=row[5],
        end_ns=row[6],
        status=row[7],
        error=row[8],
        metadata=json.loads(row[9]),
        context=json.loads(row[10]),
    )


def run_row(row: tuple[Any, ...]) -> RunRow:
    return RunRow(
        id=row[0],
        name=row[1],
        status=row[2],
        started_at=row[3],
        ended_at=row[4],
        error=row[5],
        metadata=json.loads(row[6]),
        budget=None if row[7] is None else json.loads(row[7]),
        input_tokens=row[8],
        output_tokens=row[9],
        cost_usd=row[10],
        llm_calls=row[11],
        pid=row[12],
        host=row[13],
        heartbeat_at=row[14],
        parent_run_id=row[15],
        parent_span_id=row[16],
        replay_of=row[17],
        write_errors=int(row[18]),
        write_error=row[19],
    )


def stored_run(
    head: tuple[Any, ...],
    spans: Sequence[tuple[Any, ...]],
    events: Sequence[tuple[Any, ...]],
    steps: Sequence[tuple[Any, ...]],
    calls: Sequence[tuple[Any, ...]],
    children: Sequence[tuple[Any, ...]] = (),
) -> StoredRun:
    """A ``StoredRun`` from a run's rows: ``RUN_COLUMNS``, ``SPAN_COLUMNS``,
    ``(span_id, data)`` events, ``(data,)`` ledger rows, ``CALL_COLUMNS``,
    ``(id,)`` of its child runs."""
    run = run_row(head)
    loads = json.loads
    typed: list[AgentEvent] = [event_from_dict(loads(data)) for _, data in events]
    ledger = [CompletedStep.from_dict(loads(data)) for (data,) in steps]
    llm_calls = [_call_row(row) for row in calls]
    return StoredRun(
        run=run,
        spans=[span_row(row) for row in spans],
        events=typed,
        event_span_ids=[span_id for span_id, _ in events],
        completed_steps=ledger,
        llm_calls=llm_calls,
        summary=summarize(run, typed, ledger, llm_calls),
        child_run_ids=[child_id for (child_id,) in children],
    )


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
        (
            "runs",
            [
                (
                    r.id,
                    r.name,
                    r.status,
                    r.started_at,
                    r.ended_at,
                    r.error,
                    dumps(r.metadata),
                    None if r.budget is None else dumps(r.budget),
                    r.input_tokens,
                    r.output_tokens,
                    r.cost_usd,
                    r.llm_calls,
                    r.pid,
                    r.host,
                    r.heartbeat_at,
                    r.parent_run_id,
                    r.parent_span_id,
                    r.replay_of if r.replay_of is not None else _replay_of(r.metadata),
                )
                for r in batch.runs
            ],
        ),
        (
            "spans",
            [
                (
                    s.run_id,
                    s.span_id,
                    s.parent_id,
                    s.name,
                    s.kind,
                    s.start_ns,
                    s.end_ns,
                    s.status,
                    s.error,
                    dumps(s.metadata),
                    dumps(s.context),
                )
                for s in batch.spans
            ],
        ),
        (
            "events",
            [
                (e.run_id, e.seq, e.span_id, str(e.data.get("type")), dumps(e.data))
                for e in batch.events
            ],
        ),
        ("completed_steps", [(c.run_id, c.seq, dumps(c.data)) for c in batch.steps]),
        (
            "llm_calls",
            [
                (
                    c.run_id,
                    c.seq,
                    c.span_id,
                    c.step,
                    c.persona,
                    c.model,
                    c.input_tokens,
                    c.output_tokens,
                    c.cache_tokens,
                    c.cost_usd,
                    c.duration_ms,
                    c.at,
                )
                for c in batch.llm_calls
            ],
        ),
        (
            "transcripts",
            [
                (
                    t.run_id,
                    t.span_id,
                    None if t.request is None else dumps(t.request),
                    None if t.response is None else dumps(t.response),
                )
                for t in batch.transcripts
            ],
        ),
    ]
    # The writer's fast path (_encode.EncodedBatch) brings tuples in this
    # same column order, already encoded: they follow the batch's row objects.
    encoded: dict[str, list[tuple[Any, ...]]] | None = getattr(batch, "encoded", None)
    if encoded:
        tables = [(table, rows + encoded.get(table, [])) for table, rows in tables]
    return [(table, rows) for table, rows in tables if rows]


def _replay_of(metadata: Any) -> str | None:
    """The run a run replays, as ``steptrace replay`` names it in the metadata."""
    original = metadata.get("replay_of") if isinstance(metadata, dict) else None
    return original if isinstance(original, str) else None


def heartbeat_rows(batch: WriteBatch) -> list[tuple[float, str]]:
    """Parameters of ``HEARTBEAT`` for the batch's heartbeats."""
    return [(at, run_id) for run_id, at in batch.heartbeats]


def write_error_rows(batch: WriteBatch) -> list[tuple[int, str, str]]:
    """Parameters of ``WRITE_ERRORS`` for the batch's write errors."""
    return [(rows, message, run_id) for run_id, rows, message in batch.write_errors]
