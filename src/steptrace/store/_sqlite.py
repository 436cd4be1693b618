"""The SQLite run store: one file, shared by the threads and processes that open it.

``SQLiteStore`` owns one ``sqlite3`` connection, guarded by a lock (every call
holds it for one short statement group), opened in autocommit mode so each
``write`` is one explicit ``BEGIN IMMEDIATE`` ... ``COMMIT``. The file uses
write-ahead logging (readers never block the writer), a 5 s busy timeout (so
several processes writing to one file wait their turn instead of failing) and
no foreign keys (rows of a run arrive in any order). Opening a store creates
the file and its directory, applies pending migrations (``_schema``) and marks
runs whose process died ``interrupted`` (``_liveness``). ``read_only=True``
opens an existing file for reading only (``mode=ro``, or ``immutable`` when
even that needs a write, as on a read-only mount): no migration, no marking.
A failed transaction is rolled back only if SQLite has not already done it
(it does on a full disk), so the error raised is the real one.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._liveness import STALE_AFTER, interrupted_runs
from ._protocol import (
    BatchRejected,
    StoredRun,
    WriteBatch,
)
from ._queries import (
    CALL_COLUMNS,
    CHILD_RUNS,
    HEARTBEAT,
    RUN_COLUMNS,
    SPAN_COLUMNS,
    UPSERTS,
    WRITE_ERRORS,
    batch_rows,
    heartbeat_rows,
    stored_run,
    write_error_rows,
)
from ._schema import MIGRATIONS, current_version, migrate
from ._sql_reads import SQLReads

__all__ = ["SQLiteStore", "default_store_path"]

BUSY_TIMEOUT_MS = 5000


_DEFAULT_PATH = ".steptrace/runs.db"

# What sqlite3 raises for a value it cannot bind or a row a constraint refuses:
# the data's fault (``BatchRejected``), unlike OperationalError (locked, full).
_DATA_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    OverflowError,
    ValueError,  # text that is not valid Unicode (lone surrogates)
    TypeError,
)


def default_store_path() -> Path:
    """``$STEPTRACE_STORE`` when it is a file path, else ``.steptrace/runs.db``
    under the working directory."""
    configured = os.environ.get("STEPTRACE_STORE", "")
    if configured and "://" not in configured:
        return Path(configured)
    return Path(_DEFAULT_PATH)


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to write-ahead logging, waiting out other openers.

    Changing the journal mode needs the file to itself and SQLite answers
    "database is locked" at once instead of using the busy timeout, so two
    processes opening a new file together would fail without this wait."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite rolls back by itself on some errors (SQLITE_FULL): a second
    # ROLLBACK would raise "cannot rollback" in place of the real error.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _connect_read_only(target: Path) -> sqlite3.Connection:
    """``target`` opened for reading only: ``mode=ro`` when SQLite can still
    keep its shared-memory file beside it, else ``immutable`` (a read-only
    mount, where nothing else can be writing it either)."""
    if not target.is_file():
        raise FileNotFoundError(f"no SQLite store at {target}")
    uri = "file:" + urllib.parse.quote(str(target.absolute())) + "?mode=ro"
    for options in ("", "&immutable=1"):
        conn = sqlite3.connect(
            uri + options, uri=True, isolation_level=None, check_same_thread=False
        )
        try:
            version = current_version(conn)
        except sqlite3.OperationalError:
            conn.close()
            if options:
                raise
            continue
        if version < len(MIGRATIONS):
            conn.close()
            raise sqlite3.OperationalError(
                f"the store at {target} cannot be written and has an older schema "
                f"(version {version}, this steptrace reads {len(MIGRATIONS)}): open it once "
                "where it can be written to migrate it"
            )
        return conn
    raise AssertionError("unreachable")  # pragma: no cover


class SQLiteStore(SQLReads):
    """A ``RunStore`` in one SQLite file (``path``; ``":memory:"`` for tests);
    ``read_only``: see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        stale_after: float = STALE_AFTER,
        read_only: bool = False,
    ) -> None:
        target = default_store_path() if path is None else Path(path)
        self.path = target
        self.read_only = read_only
        self._lock = threading.Lock()
        if read_only:
            self._conn: sqlite3.Connection | None = _connect_read_only(target)
            return
        if str(target) != ":memory:":
            target.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(target),
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _enable_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = OFF")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        try:
            self.mark_interrupted(stale_after=stale_after)
        except BaseException:
            self.close()  # never handed out: nobody else would close it
            raise

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"SQLiteStore({str(self.path)!r}) is closed")
        return self._conn

    # -- writing ------------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        # Rows are encoded before the write lock is taken: other processes wait less.
        tables = batch_rows(batch)
        heartbeats = heartbeat_rows(batch)
        write_errors = write_error_rows(batch)
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for table, rows in tables:
                    conn.executemany(UPSERTS[table], rows)
                conn.executemany(HEARTBEAT, heartbeats)
                conn.executemany(WRITE_ERRORS, write_errors)
                conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(conn)
                if isinstance(exc, _DATA_ERRORS):
                    raise BatchRejected(f"{type(exc).__name__}: {exc}") from exc
                raise

    # -- reading ------------------------------------------------------------------

    def mark_interrupted(self, *, stale_after: float = STALE_AFTER) -> list[str]:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                running = conn.execute(
                    "SELECT id, pid, host, heartbeat_at, started_at FROM runs "
                    "WHERE status = 'running'"
                ).fetchall()
                gone = interrupted_runs(running, now=time.time(), stale_after=stale_after)
                conn.executemany(
                    "UPDATE runs SET status = 'interrupted', "
                    "ended_at = COALESCE(heartbeat_at, started_at) "
                    "WHERE id = ? AND status = 'running'",
                    [(run_id,) for run_id in gone],
                )
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        return gone

    # -- reading ------------------------------------------------------------------

    DAY = "strftime('%Y-%m-%d', at, 'unixepoch')"

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._connection().execute(sql, params).fetchall()

    def run_ids(self, prefix: str = "", *, limit: int = 50) -> list[str]:
        # Not LIKE: SQLite's LIKE ignores ASCII case, and the prefix is literal.
        rows = self._read(
            "SELECT id FROM runs WHERE substr(id, 1, ?) = ? "
            "ORDER BY started_at DESC, id DESC LIMIT ?",
            (len(prefix), prefix, limit),
        )
        return [run_id for (run_id,) in rows]

    def get_run(self, run_id: str) -> StoredRun | None:
        with self._lock:
            conn = self._connection()
            # One read transaction: the run's rows as of a single commit.
            conn.execute("BEGIN")
            try:
                head = conn.execute(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
                ).fetchone()
                spans = conn.execute(
                    f"SELECT {SPAN_COLUMNS} FROM spans WHERE run_id = ? ORDER BY start_ns, span_id",
                    (run_id,),
                ).fetchall()
                events = conn.execute(
                    "SELECT seq, span_id, data FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
                ).fetchall()
                steps = conn.execute(
                    "SELECT seq, data FROM completed_steps WHERE run_id = ? ORDER BY seq", (run_id,)
                ).fetchall()
                calls = conn.execute(
                    f"SELECT {CALL_COLUMNS} FROM llm_calls WHERE run_id = ? ORDER BY seq",
                    (run_id,),
                ).fetchall()
                children = conn.execute(CHILD_RUNS, (run_id,)).fetchall()
            finally:
                conn.execute("COMMIT")
        if head is None:
            return None
        return stored_run(head, spans, events, steps, calls, children)

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
