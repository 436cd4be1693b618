"""The paged reads of a PostgreSQL store: ``PostgresPagedReads``.

The queries are ``SQLPagedReads``'s, run through the store's own connection
pool; events' JSON (kept as text, as in SQLite) is read with ``jsonb``
operators, but for the few rows ``jsonb`` cannot read (``_pg_text``). Each
query is its own snapshot. psycopg is imported by the store, never here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._paged_sql import SQLPagedReads
from ._pg_text import JSON_UNSAFE

if TYPE_CHECKING:
    from ._postgres import PostgresStore

__all__ = ["PostgresPagedReads"]


class PostgresPagedReads(SQLPagedReads):
    """``SQLPagedReads`` over a ``PostgresStore``."""

    def __init__(self, store: PostgresStore) -> None:
        super().__init__(store)
        self._postgres = store

    FIND = "strpos"
    JSON_UNREADABLE = JSON_UNSAFE

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._postgres._read(sql, params)

    def _json_int(self, field: str) -> str:
        return f"(data::jsonb ->> '{field}')::bigint"

    def _json_text(self, field: str) -> str:
        return f"(data::jsonb -> '{field}')::text"
