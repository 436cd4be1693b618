"""The portal's SQL reads of a PostgreSQL store: ``PostgresReads``.

The queries are ``SQLReads``'s, run through the store's own connection pool;
events' JSON (kept as text, as in SQLite) is read with ``jsonb`` operators.
Each query is its own snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..store._postgres import PostgresStore
from ._sql_reads import SQLReads

__all__ = ["PostgresReads"]


class PostgresReads(SQLReads):
    """``SQLReads`` over a ``PostgresStore``."""

    def __init__(self, store: PostgresStore) -> None:
        super().__init__(store)
        self._store = store

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._store._read(sql, params)

    def _json_int(self, field: str) -> str:
        return f"(data::jsonb ->> '{field}')::bigint"

    def _json_text(self, field: str) -> str:
        return f"(data::jsonb ->> '{field}')"
