"""``paged_reads(store)``: the fastest ``PagedReads`` for a store.

SQL over a SQLite file (through read-only connections of its own) or a
PostgreSQL database (through the store's pool); for any other ``RunStore``,
and a SQLite store in memory or opened read-only, ``LoadedReads``.
"""

from __future__ import annotations

from ._loaded_reads import LoadedReads
from ._paged import PagedReads
from ._paged_sqlite import SQLitePagedReads
from ._protocol import RunStore
from ._sqlite import SQLiteStore

__all__ = ["paged_reads"]


def paged_reads(store: RunStore) -> PagedReads:
    """The paged reads of ``store`` (see the module docstring). Close the
    reader when done (the store stays open)."""
    if isinstance(store, SQLiteStore) and SQLitePagedReads.handles(store):
        return SQLitePagedReads(store)
    # Loaded here, as steptrace.store loads it: on first use (the module
    # itself never imports psycopg; a PostgresStore does when opened).
    from ._paged_postgres import PostgresPagedReads
    from ._postgres import PostgresStore

    if isinstance(store, PostgresStore):
        return PostgresPagedReads(store)
    return LoadedReads(store)
