"""The paged reads of a SQLite store file: ``SQLitePagedReads``.

Each thread reading gets its own connection to the file with ``query_only``
on, so a viewer cannot write through it and readers run side by side (the
file is in WAL mode: they never block the runs being written). The queries
are ``SQLPagedReads``'s.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ._paged_sql import SQLPagedReads
from ._sqlite import BUSY_TIMEOUT_MS, SQLiteStore

__all__ = ["SQLitePagedReads"]


class SQLitePagedReads(SQLPagedReads):
    """``SQLPagedReads`` over a ``SQLiteStore`` file, through read-only
    connections of its own (one a thread)."""

    def __init__(self, store: SQLiteStore) -> None:
        super().__init__(store)
        self.path = Path(store.path)
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._opened_lock = threading.Lock()

    @staticmethod
    def handles(store: object) -> bool:
        """Whether ``store`` is a SQLite file this class can read on its own
        (not one in memory, nor one opened read-only: this reader's own
        connections could need to write the file's shared memory)."""
        return (
            isinstance(store, SQLiteStore) and not store.read_only and str(store.path) != ":memory:"
        )

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                str(self.path),
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._opened_lock:
                self._opened.append(conn)
        return conn

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn().execute(sql, params).fetchall()

    def close(self) -> None:
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield
        finally:
            conn.execute("COMMIT")

    def _json_int(self, field: str) -> str:
        return f"json_extract(data, '$.{field}')"

    def _json_text(self, field: str) -> str:
        if _ARROW:
            return f"(data -> '$.{field}')"
        # Before SQLite 3.38 (no ``->``) the value is taken and quoted again:
        # a string holding NUL is cut there, one holding a lone surrogate
        # cannot be read back (the text it gives is not UTF-8).
        return f"json_quote(json_extract(data, '$.{field}'))"


_ARROW = sqlite3.sqlite_version_info >= (3, 38)
"""Whether SQLite has ``->``, which gives a JSON value's own text (its escapes
kept, as ``json_extract`` does not: it cuts a string at NUL)."""
