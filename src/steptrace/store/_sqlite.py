"""The SQLite run store: one file, shared by the threads and processes that open it.

``SQLiteStore`` owns one ``sqlite3`` connection, guarded by a lock (every call
holds it for one short statement group), opened in autocommit mode so each
``write`` is one explicit ``BEGIN IMMEDIATE`` ... ``COMMIT``. The file uses
write-ahead logging (readers never block the writer), a 5 s busy timeout (so
several processes writing to one file wait their turn instead of failing) and
no foreign keys (rows of a run arrive in any order). Opening a store creates
the file and its directory and applies pending migrations (``_schema``).

Not done yet: a run whose process died stays ``running``; marking such runs
``interrupted`` on the next open needs a liveness record (pid and host, or a
heartbeat) that this schema does not hold yet.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from .._run import CompletedStep
from ..events import AgentEvent, event_from_dict
from ._protocol import RunRow, SpanRow, StoredRun, WriteBatch, summarize
from ._schema import migrate

__all__ = ["SQLiteStore", "default_store_path"]

BUSY_TIMEOUT_MS = 5000


def default_store_path() -> Path:
    """``$STEPTRACE_STORE``, else ``.steptrace/runs.db`` under the working directory."""
    return Path(os.environ.get("STEPTRACE_STORE", ".steptrace/runs.db"))


def _dumps(value: Any) -> str:
    # Metadata is user data: anything JSON cannot encode is stored as its str().
    return json.dumps(value, default=str, separators=(",", ":"))


_RUN_COLUMNS = (
    "id, name, status, started_at, ended_at, error, metadata, budget, "
    "input_tokens, output_tokens, cost_usd, llm_calls"
)


class SQLiteStore:
    """A ``RunStore`` in one SQLite file (``path``; ``":memory:"`` for tests)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        target = default_store_path() if path is None else Path(path)
        if str(target) != ":memory:":
            target.parent.mkdir(parents=True, exist_ok=True)
        self.path = target
        self._lock = threading.Lock()
        conn = sqlite3.connect(
            str(target),
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = OFF")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"SQLiteStore({str(self.path)!r}) is closed")
        return self._conn

    # -- writing ------------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    f"INSERT OR REPLACE INTO runs ({_RUN_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            r.id,
                            r.name,
                            r.status,
                            r.started_at,
                            r.ended_at,
                            r.error,
                            _dumps(r.metadata),
                            None if r.budget is None else _dumps(r.budget),
                            r.input_tokens,
                            r.output_tokens,
                            r.cost_usd,
                            r.llm_calls,
                        )
                        for r in batch.runs
                    ],
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO spans (run_id, span_id, parent_id, name, kind, "
                    "start_ns, end_ns, status, error, metadata) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                            _dumps(s.metadata),
                        )
                        for s in batch.spans
                    ],
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO events (run_id, seq, span_id, type, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [
                        (e.run_id, e.seq, e.span_id, str(e.data.get("type")), _dumps(e.data))
                        for e in batch.events
                    ],
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO completed_steps (run_id, seq, data) VALUES (?, ?, ?)",
                    [(c.run_id, c.seq, _dumps(c.data)) for c in batch.steps],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # -- reading ------------------------------------------------------------------

    def list_runs(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRow]:
        where: list[str] = []
        params: list[Any] = []
        if name is not None:
            where.append("name = ?")
            params.append(name)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = (
            f"SELECT {_RUN_COLUMNS} FROM runs{clause} "
            "ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?"
        )
        with self._lock:
            rows = self._connection().execute(sql, (*params, limit, offset)).fetchall()
        return [_run_row(row) for row in rows]

    def get_run(self, run_id: str) -> StoredRun | None:
        with self._lock:
            conn = self._connection()
            # One read transaction: the run's rows as of a single commit.
            conn.execute("BEGIN")
            try:
                head = conn.execute(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
                ).fetchone()
                spans = conn.execute(
                    "SELECT run_id, span_id, parent_id, name, kind, start_ns, end_ns, status, "
                    "error, metadata FROM spans WHERE run_id = ? ORDER BY start_ns, span_id",
                    (run_id,),
                ).fetchall()
                events = conn.execute(
                    "SELECT span_id, data FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
                ).fetchall()
                steps = conn.execute(
                    "SELECT data FROM completed_steps WHERE run_id = ? ORDER BY seq", (run_id,)
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        if head is None:
            return None
        run = _run_row(head)
        typed: list[AgentEvent] = [event_from_dict(json.loads(data)) for _, data in events]
        ledger = [CompletedStep.from_dict(json.loads(data)) for (data,) in steps]
        return StoredRun(
            run=run,
            spans=[
                SpanRow(
                    run_id=r[0],
                    span_id=r[1],
                    parent_id=r[2],
                    name=r[3],
                    kind=r[4],
                    start_ns=r[5],
                    end_ns=r[6],
                    status=r[7],
                    error=r[8],
                    metadata=json.loads(r[9]),
                )
                for r in spans
            ],
            events=typed,
            event_span_ids=[span_id for span_id, _ in events],
            completed_steps=ledger,
            summary=summarize(run, typed, ledger),
        )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"


def _run_row(row: tuple[Any, ...]) -> RunRow:
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
    )
