"""``PostgresPool``: shared budget counters in PostgreSQL, under row locks.

Two tables (created on first use, under an advisory lock so many workers
starting at once do not race):

- ``steptrace_shared_budgets``: one row a pool counter, settled ``tokens``
  and ``pico`` (picodollars, ``BIGINT``);
- ``steptrace_shared_reservations``: the live holds, each with its counter,
  amounts and ``expires_at`` on the database server's clock.

Each operation is one short transaction that first locks the counter's row
(``SELECT ... FOR UPDATE``), so operations on one counter serialize while
others go on; it deletes the counter's expired reservations, then reads,
compares and updates with exact integers in Python. The connection is one
per pool and process, guarded by a lock (a forked child reconnects).
Counters are never deleted: old windows stay readable.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

from .._shared import PoolTotals, masked_url
from ..errors import SharedPoolUnavailable

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "steptrace.shared.PostgresPool needs psycopg 3: pip install 'steptrace[postgres]'"
    ) from exc

__all__ = ["PostgresPool"]

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS steptrace_shared_budgets (
        key TEXT PRIMARY KEY,
        tokens BIGINT NOT NULL DEFAULT 0,
        pico BIGINT NOT NULL DEFAULT 0,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS steptrace_shared_reservations (
        key TEXT NOT NULL,
        id TEXT NOT NULL,
        tokens BIGINT NOT NULL,
        pico BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (key, id)
    )
    """,
)
_SCHEMA_LOCK = 0x5E7A_B0D6  # the advisory lock taken while creating the tables


class PostgresPool:
    """Shared budget counters in PostgreSQL (a ``postgresql://`` URL).

    ``timeout`` (seconds) bounds connecting and each statement; past it, or
    when the server cannot be reached, calls fail closed with
    ``SharedPoolUnavailable``. Thread-safe.
    """

    kind = "postgres"

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                f"PostgresPool: url must be a postgresql:// URL, got {masked_url(str(url))!r}"
            )
        self.url = url
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = os.getpid()

    @classmethod
    def from_url(cls, url: str) -> PostgresPool:
        return cls(url)

    def __repr__(self) -> str:
        return f"PostgresPool({masked_url(self.url)!r})"

    # -- connection ---------------------------------------------------------------

    def _connection(self) -> Any:
        if self._conn is not None and self._pid == os.getpid() and not self._conn.closed:
            return self._conn
        conn = psycopg.connect(
            self.url,
            connect_timeout=max(1, round(self.timeout)),
            options=f"-c statement_timeout={max(1, round(self.timeout * 1000))}",
        )
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                conn.execute(statement)
        self._conn = conn
        self._pid = os.getpid()
        return conn

    def _transaction(self, key: str, work: Any) -> Any:
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    return work(conn)
            except psycopg.Error as exc:  # any failure: the limit cannot be checked
                if self._conn is not None and self._pid == os.getpid():
                    self._conn.close()
                self._conn = None
                raise SharedPoolUnavailable(
                    masked_url(self.url), key, f"{type(exc).__name__}: {exc}"
                ) from exc

    @staticmethod
    def _lock_row(conn: Any, key: str) -> PoolTotals:
        """Lock the counter's row, drop its expired holds, return its totals."""
        conn.execute(
            "INSERT INTO steptrace_shared_budgets (key) VALUES (%s) ON CONFLICT (key) DO NOTHING",
            (key,),
        )
        tokens, pico = conn.execute(
            "SELECT tokens, pico FROM steptrace_shared_budgets WHERE key = %s FOR UPDATE", (key,)
        ).fetchone()
        conn.execute(
            "DELETE FROM steptrace_shared_reservations "
            "WHERE key = %s AND expires_at <= clock_timestamp()",
            (key,),
        )
        reserved_tokens, reserved_pico = conn.execute(
            "SELECT COALESCE(SUM(tokens), 0), COALESCE(SUM(pico), 0) "
            "FROM steptrace_shared_reservations WHERE key = %s",
            (key,),
        ).fetchone()
        return PoolTotals(int(tokens), int(pico), int(reserved_tokens), int(reserved_pico))

    # -- the SharedPool protocol --------------------------------------------------

    def reserve(
        self,
        key: str,
        tokens: int,
        pico: int,
        *,
        max_tokens: int | None,
        max_pico: int | None,
        ttl: float,
        retention: float | None,
    ) -> tuple[str | None, PoolTotals]:
        def work(conn: Any) -> tuple[str | None, PoolTotals]:
            totals = self._lock_row(conn, key)
            if max_tokens is not None and totals.committed_tokens + tokens > max_tokens:
                return None, totals
            if max_pico is not None and totals.committed_pico + pico > max_pico:
                return None, totals
            reservation = uuid.uuid4().hex
            conn.execute(
                "INSERT INTO steptrace_shared_reservations (key, id, tokens, pico, expires_at) "
                "VALUES (%s, %s, %s, %s, clock_timestamp() + make_interval(secs => %s))",
                (key, reservation, tokens, pico, ttl),
            )
            return reservation, totals._replace(
                reserved_tokens=totals.reserved_tokens + tokens,
                reserved_pico=totals.reserved_pico + pico,
            )

        result: tuple[str | None, PoolTotals] = self._transaction(key, work)
        return result

    def settle(
        self,
        key: str,
        reservation: str | None,
        tokens: int,
        pico: int,
        *,
        retention: float | None,
    ) -> PoolTotals:
        def work(conn: Any) -> PoolTotals:
            totals = self._lock_row(conn, key)
            if reservation is not None:
                held = conn.execute(
                    "DELETE FROM steptrace_shared_reservations WHERE key = %s AND id = %s "
                    "RETURNING tokens, pico",
                    (key, reservation),
                ).fetchone()
                if held is not None:
                    totals = totals._replace(
                        reserved_tokens=totals.reserved_tokens - int(held[0]),
                        reserved_pico=totals.reserved_pico - int(held[1]),
                    )
            conn.execute(
                "UPDATE steptrace_shared_budgets SET tokens = tokens + %s, pico = pico + %s, "
                "updated_at = now() WHERE key = %s",
                (tokens, pico, key),
            )
            return totals._replace(tokens=totals.tokens + tokens, pico=totals.pico + pico)

        result: PoolTotals = self._transaction(key, work)
        return result

    def release(self, key: str, reservation: str) -> None:
        def work(conn: Any) -> None:
            conn.execute(
                "DELETE FROM steptrace_shared_reservations WHERE key = %s AND id = %s",
                (key, reservation),
            )

        self._transaction(key, work)

    def totals(self, key: str) -> PoolTotals:
        result: PoolTotals = self._transaction(key, lambda conn: self._lock_row(conn, key))
        return result

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
