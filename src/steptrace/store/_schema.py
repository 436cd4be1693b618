"""The run store's relational schema and its numbered migrations.

This module owns the table layout shared by every ``RunStore`` backend and the
rule for evolving it: ``MIGRATIONS[n - 1]`` is migration ``n``, a list of SQL
statements; the ``schema_version`` table records every migration applied.
``migrate(conn)`` applies the pending ones in one write transaction
(``BEGIN IMMEDIATE``, so two processes opening a new file at once serialize
and the second finds nothing left to do). Migrations are append-only: never
edit a released one, add the next.

The statements use only SQL that SQLite and PostgreSQL both accept, with
types that mean the same in both (``BIGINT`` ids and nanoseconds, ``DOUBLE
PRECISION`` seconds and dollars, JSON as ``TEXT``), so every backend applies
the very same list; each backend has its own ``migrate`` for its driver.

Tables (migration 1):

- ``runs``: one row a run, its header and totals (``metadata`` and ``budget``
  are JSON text);
- ``spans``: every ended span, keyed by (run, span id), ``parent_id`` linking
  the tree;
- ``events``: the agent events in emission order (``seq``), each with the span
  it was emitted in and its ``to_dict()`` shape as JSON;
- ``completed_steps``: the completed-step ledger in order, each row the
  ``CompletedStep.to_dict()`` shape as JSON.

Migration 2:

- ``runs`` gains ``pid``, ``host`` and ``heartbeat_at``: the process writing a
  running run, so the next open can mark a run whose process died
  ``interrupted`` (``_liveness``);
- ``spans`` gains ``context``: the span's frame facts (``span_context``), so
  exporters describe a stored span as they did the live one;
- ``llm_calls``: the LLM call trace log, one row a recorded call, with the
  step and persona it was charged to and its wall time (for aggregates);
- ``transcripts``: each ``llm_call`` request's content (request and response
  as the cassette shapes, redacted), keyed by its ``chat`` span;
- indexes for filtering runs by status and persona.

Migration 3:

- ``runs`` gains ``parent_run_id`` and ``parent_span_id`` (a run opened inside
  another is its child; a parent's totals include its children's usage),
  ``replay_of`` (the run a replay replays: replays spend nothing and stay out
  of spend totals), and ``write_errors`` / ``write_error``: how many of the
  run's rows the store refused, and the last refusal (``_isolation``);
- indexes for a run's children and for listing top-level runs.
"""

from __future__ import annotations

import sqlite3
import time

__all__ = ["MIGRATIONS", "current_version", "migrate"]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            ended_at DOUBLE PRECISION,
            error TEXT,
            metadata TEXT NOT NULL DEFAULT '{}',
            budget TEXT,
            input_tokens BIGINT NOT NULL DEFAULT 0,
            output_tokens BIGINT NOT NULL DEFAULT 0,
            cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
            llm_calls BIGINT NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX runs_by_start ON runs (started_at DESC)",
        "CREATE INDEX runs_by_name_start ON runs (name, started_at DESC)",
        """
        CREATE TABLE spans (
            run_id TEXT NOT NULL,
            span_id BIGINT NOT NULL,
            parent_id BIGINT,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            start_ns BIGINT NOT NULL,
            end_ns BIGINT,
            status TEXT NOT NULL,
            error TEXT,
            metadata TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (run_id, span_id)
        )
        """,
        """
        CREATE TABLE events (
            run_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            span_id BIGINT,
            type TEXT NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (run_id, seq)
        )
        """,
        "CREATE INDEX events_by_run_type ON events (run_id, type, seq)",
        """
        CREATE TABLE completed_steps (
            run_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (run_id, seq)
        )
        """,
    ),
    (
        "ALTER TABLE runs ADD COLUMN pid BIGINT",
        "ALTER TABLE runs ADD COLUMN host TEXT",
        "ALTER TABLE runs ADD COLUMN heartbeat_at DOUBLE PRECISION",
        "ALTER TABLE spans ADD COLUMN context TEXT NOT NULL DEFAULT '{}'",
        "CREATE INDEX runs_by_status_start ON runs (status, started_at DESC)",
        "CREATE INDEX spans_by_kind_name ON spans (kind, name, run_id)",
        """
        CREATE TABLE llm_calls (
            run_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            span_id BIGINT,
            step TEXT,
            persona TEXT,
            model TEXT NOT NULL,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            cache_tokens BIGINT NOT NULL DEFAULT 0,
            cost_usd DOUBLE PRECISION,
            duration_ms BIGINT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (run_id, seq)
        )
        """,
        "CREATE INDEX llm_calls_by_at ON llm_calls (at)",
        """
        CREATE TABLE transcripts (
            run_id TEXT NOT NULL,
            span_id BIGINT NOT NULL,
            request TEXT,
            response TEXT,
            PRIMARY KEY (run_id, span_id)
        )
        """,
    ),
    (
        "ALTER TABLE runs ADD COLUMN parent_run_id TEXT",
        "ALTER TABLE runs ADD COLUMN parent_span_id BIGINT",
        "ALTER TABLE runs ADD COLUMN replay_of TEXT",
        "ALTER TABLE runs ADD COLUMN write_errors BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN write_error TEXT",
        "CREATE INDEX runs_by_parent ON runs (parent_run_id, started_at)",
        "CREATE INDEX runs_top_level_by_start ON runs (started_at DESC) "
        "WHERE parent_run_id IS NULL",
    ),
)


def current_version(conn: sqlite3.Connection) -> int:
    """The highest migration applied to this database (0 for an empty one)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every pending migration in one transaction; return the new version.

    ``conn`` must be in autocommit mode (``isolation_level=None``), so this
    function controls the transaction. Idempotent: a database already at the
    latest version is left untouched.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        version = current_version(conn)
        for number in range(version + 1, len(MIGRATIONS) + 1):
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (number, time.time()),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return max(version, len(MIGRATIONS))
