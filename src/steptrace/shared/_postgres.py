"""``PostgresPool``: shared budget counters in PostgreSQL, under row locks.

Two tables and three functions, created on first use when missing (under an
advisory lock, so many workers starting at once do not race; a later change
to a function must give it a new name):

- ``steptrace_shared_budgets``: one row a pool counter, settled ``tokens``
  and ``pico`` (picodollars, ``BIGINT``);
- ``steptrace_shared_reservations``: the live holds, each with its counter,
  amounts and ``expires_at`` on the database server's clock.

Each operation is one statement, a call of a PL/pgSQL function created with
the tables, so it is one round trip and one transaction: it locks the
counter's row (``SELECT ... FOR UPDATE``), so operations on one counter
serialize while others go on, deletes the counter's expired reservations,
then compares and updates with exact integers (sums compared as
``NUMERIC``). The connection (autocommit) is one per pool and process,
guarded by a lock (a forked child reconnects). Counters are never deleted:
old windows stay readable.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

from .._redact import register_url
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
    # Lock a counter's row (creating it), drop its expired holds, read it.
    """
    CREATE OR REPLACE FUNCTION steptrace_shared_lock(
        p_key TEXT,
        OUT tokens BIGINT, OUT pico BIGINT, OUT reserved_tokens BIGINT, OUT reserved_pico BIGINT
    ) LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO steptrace_shared_budgets AS b (key) VALUES (p_key)
            ON CONFLICT ON CONSTRAINT steptrace_shared_budgets_pkey DO NOTHING;
        SELECT b.tokens, b.pico INTO tokens, pico
            FROM steptrace_shared_budgets b WHERE b.key = p_key FOR UPDATE;
        DELETE FROM steptrace_shared_reservations r
            WHERE r.key = p_key AND r.expires_at <= clock_timestamp();
        SELECT COALESCE(SUM(r.tokens), 0), COALESCE(SUM(r.pico), 0)
            INTO reserved_tokens, reserved_pico
            FROM steptrace_shared_reservations r WHERE r.key = p_key;
    END $$
    """,
    # Hold an amount if settled + reserved + it stays within both limits.
    """
    CREATE OR REPLACE FUNCTION steptrace_shared_reserve(
        p_key TEXT, p_id TEXT, p_tokens BIGINT, p_pico BIGINT,
        p_max_tokens BIGINT, p_max_pico BIGINT, p_ttl DOUBLE PRECISION,
        OUT held BOOLEAN, OUT tokens BIGINT, OUT pico BIGINT,
        OUT reserved_tokens BIGINT, OUT reserved_pico BIGINT
    ) LANGUAGE plpgsql AS $$
    BEGIN
        SELECT l.tokens, l.pico, l.reserved_tokens, l.reserved_pico
            INTO tokens, pico, reserved_tokens, reserved_pico
            FROM steptrace_shared_lock(p_key) l;
        held := (p_max_tokens IS NULL
                 OR tokens::NUMERIC + reserved_tokens + p_tokens <= p_max_tokens)
            AND (p_max_pico IS NULL
                 OR pico::NUMERIC + reserved_pico + p_pico <= p_max_pico);
        IF held THEN
            INSERT INTO steptrace_shared_reservations AS r (key, id, tokens, pico, expires_at)
                VALUES (p_key, p_id, p_tokens, p_pico,
                        clock_timestamp() + make_interval(secs => p_ttl));
            reserved_tokens := reserved_tokens + p_tokens;
            reserved_pico := reserved_pico + p_pico;
        END IF;
    END $$
    """,
    # Drop a hold (if still there) and add the actual amount.
    """
    CREATE OR REPLACE FUNCTION steptrace_shared_settle(
        p_key TEXT, p_id TEXT, p_tokens BIGINT, p_pico BIGINT,
        OUT held BOOLEAN, OUT tokens BIGINT, OUT pico BIGINT,
        OUT reserved_tokens BIGINT, OUT reserved_pico BIGINT
    ) LANGUAGE plpgsql AS $$
    DECLARE
        held_tokens BIGINT;
        held_pico BIGINT;
    BEGIN
        SELECT l.tokens, l.pico, l.reserved_tokens, l.reserved_pico
            INTO tokens, pico, reserved_tokens, reserved_pico
            FROM steptrace_shared_lock(p_key) l;
        held := FALSE;
        IF p_id IS NOT NULL THEN
            DELETE FROM steptrace_shared_reservations r WHERE r.key = p_key AND r.id = p_id
                RETURNING r.tokens, r.pico INTO held_tokens, held_pico;
            IF FOUND THEN
                held := TRUE;
                reserved_tokens := reserved_tokens - held_tokens;
                reserved_pico := reserved_pico - held_pico;
            END IF;
        END IF;
        UPDATE steptrace_shared_budgets b
            SET tokens = b.tokens + p_tokens, pico = b.pico + p_pico, updated_at = now()
            WHERE b.key = p_key;
        tokens := tokens + p_tokens;
        pico := pico + p_pico;
    END $$
    """,
)
_SCHEMA_LOCK = 0x5E7A_B0D6  # the advisory lock taken while creating the schema


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
        register_url(url)  # its password is redacted wherever it shows up
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
            autocommit=True,
            connect_timeout=max(1, round(self.timeout)),
            options=f"-c statement_timeout={max(1, round(self.timeout * 1000))}",
        )
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            exists = conn.execute(
                "SELECT to_regproc('steptrace_shared_settle') IS NOT NULL"
            ).fetchone()
            if not exists or not exists[0]:
                for statement in _SCHEMA:
                    conn.execute(statement)
        self._conn = conn
        self._pid = os.getpid()
        return conn

    def _call(self, key: str, sql: str, args: tuple[Any, ...]) -> Any:
        """Run one statement; return its single row."""
        with self._lock:
            try:
                return self._connection().execute(sql, args).fetchone()
            except psycopg.Error as exc:  # any failure: the limit cannot be checked
                if self._conn is not None and self._pid == os.getpid():
                    self._conn.close()
                self._conn = None
                raise SharedPoolUnavailable(
                    masked_url(self.url), key, f"{type(exc).__name__}: {exc}"
                ) from exc

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
        reservation = uuid.uuid4().hex
        held, *totals = self._call(
            key,
            "SELECT * FROM steptrace_shared_reserve(%s, %s, %s, %s, %s, %s, %s)",
            (key, reservation, tokens, pico, max_tokens, max_pico, float(ttl)),
        )
        return (reservation if held else None), PoolTotals(*map(int, totals))

    def settle(
        self,
        key: str,
        reservation: str | None,
        tokens: int,
        pico: int,
        *,
        retention: float | None,
    ) -> PoolTotals:
        _, *totals = self._call(
            key,
            "SELECT * FROM steptrace_shared_settle(%s, %s, %s, %s)",
            (key, reservation, tokens, pico),
        )
        return PoolTotals(*map(int, totals))

    def release(self, key: str, reservation: str) -> None:
        self._call(
            key,
            "DELETE FROM steptrace_shared_reservations WHERE key = %s AND id = %s RETURNING 1",
            (key, reservation),
        )

    def totals(self, key: str) -> PoolTotals:
        row = self._call(key, "SELECT * FROM steptrace_shared_lock(%s)", (key,))
        return PoolTotals(*map(int, row))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
