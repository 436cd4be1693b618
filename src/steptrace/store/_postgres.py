"""The PostgreSQL run store: one database shared by every worker of a fleet.

``PostgresStore`` keeps the very same tables as ``SQLiteStore`` (``_schema``'s
migrations, applied verbatim by this module's ``migrate``, which serializes
concurrent openers with a transaction-scoped advisory lock) and shares its SQL
and row mapping (``_queries``; ``?`` placeholders become ``%s``). Connections
come from a small pool owned by the store: each call borrows one connection
for one short statement group, so the writer thread never waits behind a slow
read; a connection the server dropped is discarded and the call retried once on
a new one (the store recovers by itself when the database comes back); a child
process forked with an open store makes its own connections instead of sharing
the parent's sockets. Every ``write`` is one transaction of upserts; ``get_run``
reads in one repeatable-read snapshot. psycopg 3 (``steptrace[postgres]``) is
imported when a store is opened, never at import.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .._redact import redact_url  # registers the password: redacted everywhere
from . import _pg_text as pg_text
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
from ._schema import MIGRATIONS
from ._sql_reads import SQLReads

if TYPE_CHECKING:
    import psycopg

    Connection = psycopg.Connection[tuple[Any, ...]]

__all__ = ["PostgresStore", "migrate", "redact_url"]

_T = TypeVar("_T")

INSTALL_HINT = "pip install 'steptrace[postgres]'"

# Any constant works as long as every steptrace opener uses the same one
# ("Steptrac" in ASCII, below 2**63 so it fits a BIGINT).
MIGRATION_LOCK = 0x5374657074726163

# A call's UTC day, formatted as SQLite's strftime('%Y-%m-%d', at, 'unixepoch').
_DAY = "to_char(to_timestamp(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ImportError(
            f"the PostgreSQL run store needs psycopg 3: {INSTALL_HINT}", name=exc.name
        ) from exc
    return psycopg


@functools.lru_cache(maxsize=256)
def _pg(sql: str) -> str:
    """``sql`` written with ``?`` placeholders, in psycopg's ``%s`` style."""
    return sql.replace("%", "%%").replace("?", "%s")


_UPSERTS = {table: _pg(sql) for table, sql in UPSERTS.items()}
_HEARTBEAT = _pg(HEARTBEAT)
_WRITE_ERRORS = _pg(WRITE_ERRORS)


def _data_error(psycopg: Any, exc: BaseException) -> bool:
    """Whether ``exc`` is the batch's data's fault (``BatchRejected``): a value
    the server refuses (SQLSTATE classes 22 and 23) or psycopg cannot adapt or
    encode, as opposed to a lost connection or a closed store."""
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return True
    if isinstance(exc, psycopg.ProgrammingError):
        return getattr(exc, "sqlstate", None) is None  # "cannot adapt type ...", client side
    return isinstance(exc, OverflowError | ValueError | TypeError)


def migrate(conn: Connection) -> int:
    """Apply every pending migration in one transaction; return the new version.

    ``conn`` must be in autocommit mode, so this function controls the
    transaction. Openers of one database take turns (an advisory lock held
    until commit), so the second finds nothing left to do. Idempotent.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
        if not (exists and exists[0]):
            conn.execute(
                "CREATE TABLE schema_version ("
                "version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        version = int(row[0]) if row else 0
        for number in range(version + 1, len(MIGRATIONS) + 1):
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)",
                (number, time.time()),
            )
    return max(version, len(MIGRATIONS))


class _PoolClosed(RuntimeError):
    pass


class _Pool:
    """At most ``size`` connections, each lent to one caller at a time.

    Connections are made on demand; one that comes back broken or inside a
    transaction is closed instead of reused. After a fork the child starts
    with no connections: the inherited ones talk over the parent's sockets,
    so they are set aside unclosed (closing would end the parent's sessions).
    """

    def __init__(self, connect: Callable[[], Connection], size: int, idle_status: Any) -> None:
        self._connect = connect
        self._idle_status = idle_status
        self._size = size
        self._idle: list[Connection] = []
        self._lent = 0
        self._pid = os.getpid()
        self._inherited: list[Connection] = []
        self._closed = False
        self._available = threading.Condition(threading.Lock())

    @contextlib.contextmanager
    def connection(self) -> Iterator[tuple[Connection, bool]]:
        """A connection for the ``with`` block, and whether it was used before."""
        conn, reused = self._take()
        try:
            yield conn, reused
        finally:
            self._give_back(conn)

    def _take(self) -> tuple[Connection, bool]:
        with self._available:
            if os.getpid() != self._pid:
                self._inherited.extend(self._idle)
                self._idle, self._lent, self._pid = [], 0, os.getpid()
            while True:
                if self._closed:
                    raise _PoolClosed
                if self._idle:
                    self._lent += 1
                    return self._idle.pop(), True
                if self._lent < self._size:
                    self._lent += 1
                    break
                self._available.wait()
        try:
            return self._connect(), False
        except BaseException:
            with self._available:
                self._lent -= 1
                self._available.notify()
            raise

    def _give_back(self, conn: Connection) -> None:
        reusable = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == self._idle_status
        )
        with self._available:
            if os.getpid() != self._pid:  # lent before a fork: not ours to count
                return
            self._lent -= 1
            self._available.notify()
            if reusable and not self._closed:
                self._idle.append(conn)
                return
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        with self._available:
            self._closed = True
            idle, self._idle = self._idle, []
            self._available.notify_all()
        if os.getpid() == self._pid:
            for conn in idle:
                with contextlib.suppress(Exception):
                    conn.close()


class PostgresStore(SQLReads):
    """A ``RunStore`` in a PostgreSQL database (``url``: ``postgresql://...``).

    The tables live in the connection's default schema (choose another with
    ``?options=-csearch_path%3Dmyschema`` in the URL). ``pool_size`` bounds
    the connections this store opens; ``connect_timeout`` (seconds) bounds
    each attempt. An unreachable server raises ``ConnectionError`` naming the
    URL, its password redacted. A call whose pooled connection turns out to
    have been closed by the server (a restart, an idle timeout) is retried
    once on a new connection: reads are side-effect free and every write is
    an upsert, so running it twice leaves the same rows.
    """

    def __init__(
        self,
        url: str,
        *,
        stale_after: float = STALE_AFTER,
        pool_size: int = 4,
        connect_timeout: float = 10.0,
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"PostgresStore: pool_size must be at least 1, got {pool_size!r}")
        self._psycopg = _psycopg()
        self._conninfo = url
        self.url = redact_url(url)
        """The database URL, password redacted."""
        self._connect_timeout = max(1, round(connect_timeout))
        self._pool: _Pool | None = _Pool(
            self._new_connection, pool_size, self._psycopg.pq.TransactionStatus.IDLE
        )
        try:
            self._call(migrate)
            self.mark_interrupted(stale_after=stale_after)
        except BaseException:
            self.close()
            raise

    def _new_connection(self) -> Connection:
        try:
            conn: Connection = self._psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=self._connect_timeout
            )
        except self._psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split())
            raise ConnectionError(f"PostgresStore: cannot connect to {self.url}: {reason}") from exc
        except self._psycopg.ProgrammingError as exc:  # a malformed URL
            reason = " ".join(str(exc).split())
            raise ValueError(f"PostgresStore: bad database URL {self.url}: {reason}") from exc
        pg_text.register(conn, self._psycopg)
        return conn

    def _call(self, work: Callable[[Connection], _T]) -> _T:
        """``work(conn)`` on a pooled connection; once more on a new one if the
        pooled connection had been closed by the server."""
        while True:
            pool = self._pool
            if pool is None:
                raise RuntimeError(f"PostgresStore({self.url!r}) is closed")
            try:
                with pool.connection() as (conn, reused):
                    try:
                        return work(conn)
                    except self._psycopg.OperationalError:
                        if not (reused and conn.broken):
                            raise
                        # A stale pooled connection (now discarded): try again.
            except _PoolClosed:
                raise RuntimeError(f"PostgresStore({self.url!r}) is closed") from None

    # -- writing ------------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        statements: list[tuple[str, Sequence[tuple[Any, ...]]]] = [
            (_UPSERTS[table], rows) for table, rows in batch_rows(batch)
        ]
        statements.append((_HEARTBEAT, heartbeat_rows(batch)))
        statements.append((_WRITE_ERRORS, write_error_rows(batch)))

        def write(conn: Connection) -> None:
            with conn.transaction(), conn.cursor() as cursor:
                for sql, rows in statements:
                    if rows:
                        cursor.executemany(sql, rows)

        try:
            self._call(write)
        except Exception as exc:
            if _data_error(self._psycopg, exc):
                raise BatchRejected(f"{type(exc).__name__}: {exc}") from exc
            raise

    def mark_interrupted(self, *, stale_after: float = STALE_AFTER) -> list[str]:
        def mark(conn: Connection) -> list[str]:
            running = conn.execute(
                "SELECT id, pid, host, heartbeat_at, started_at FROM runs WHERE status = 'running'"
            ).fetchall()
            gone = interrupted_runs(running, now=time.time(), stale_after=stale_after)
            if not gone:
                return []
            # One statement touching only the dead runs' rows; ``status`` is
            # checked again so a run that ended meanwhile keeps its status, and
            # RETURNING tells which rows this call (not a concurrent one) marked.
            marked = conn.execute(
                "UPDATE runs SET status = 'interrupted', "
                "ended_at = COALESCE(heartbeat_at, started_at) "
                "WHERE id = ANY(%s) AND status = 'running' RETURNING id",
                (gone,),
            ).fetchall()
            done = {run_id for (run_id,) in marked}
            return [run_id for run_id in gone if run_id in done]

        return self._call(mark)

    # -- reading ------------------------------------------------------------------

    DAY = _DAY
    # Ties go by the id's bytes, as in SQLite, whatever the database's collation.
    BYTE_ORDER = ' COLLATE "C"'

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query written with ``?`` placeholders."""
        return self._call(lambda conn: conn.execute(_pg(sql), params).fetchall())

    def run_ids(self, prefix: str = "", *, limit: int = 50) -> list[str]:
        # starts_with takes the prefix literally: no LIKE wildcards to escape.
        rows = self._read(
            "SELECT id FROM runs WHERE starts_with(id, ?) "
            'ORDER BY started_at DESC, id COLLATE "C" DESC LIMIT ?',
            (prefix, limit),
        )
        return [run_id for (run_id,) in rows]

    def get_run(self, run_id: str) -> StoredRun | None:
        def read(conn: Connection) -> StoredRun | None:
            with conn.transaction():
                # One snapshot: the run's rows as of a single commit.
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                head = conn.execute(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE id = %s", (run_id,)
                ).fetchone()
                if head is None:
                    return None
                spans = conn.execute(
                    f"SELECT {SPAN_COLUMNS} FROM spans WHERE run_id = %s "
                    "ORDER BY start_ns, span_id",
                    (run_id,),
                ).fetchall()
                events = conn.execute(
                    "SELECT seq, span_id, data FROM events WHERE run_id = %s ORDER BY seq",
                    (run_id,),
                ).fetchall()
                steps = conn.execute(
                    "SELECT seq, data FROM completed_steps WHERE run_id = %s ORDER BY seq",
                    (run_id,),
                ).fetchall()
                calls = conn.execute(
                    f"SELECT {CALL_COLUMNS} FROM llm_calls WHERE run_id = %s ORDER BY seq",
                    (run_id,),
                ).fetchall()
                children = conn.execute(_pg(CHILD_RUNS), (run_id,)).fetchall()
            return stored_run(head, spans, events, steps, calls, children)

        return self._call(read)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"
