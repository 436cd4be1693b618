"""Durable runs: the ``RunStore`` protocol, the SQLite and PostgreSQL stores, the writer.

``steptrace.store`` keeps runs (header and totals), their span trees, agent
events, completed-step ledgers, LLM call logs and transcripts in a database,
written while runs go by a ``StoreWriter`` span processor and read back as
``StoredRun`` objects::

    writer = steptrace.store.record_runs()     # .steptrace/runs.db, or $STEPTRACE_STORE
    ...
    store = steptrace.store.open_store()
    store.list_runs(status="failed")

A viewer reads a store a page at a time through ``PagedReads``
(``paged_reads(store)``): a sorted page of runs and their totals, a run's
header and structure, pages of its events and spans, search within it; in SQL
for both backends, by loading runs for any other ``RunStore``
(``LoadedReads``). All of the store's SQL lives in this package.

The SQLite store and the writer use only the standard library.
``PostgresStore`` (a ``postgresql://`` URL, extra ``steptrace[postgres]``) is
loaded on first use, so importing this package never imports psycopg.
"""

from typing import TYPE_CHECKING

from ._loaded_reads import LoadedReads
from ._open import is_database_url, open_store, record_runs, store_location
from ._paged import SORT_KEYS, PagedReads, RunFilters, RunStructure, RunTotals, SortKey
from ._paged_choice import paged_reads
from ._protocol import (
    Aggregate,
    BatchRejected,
    EventRow,
    LlmCallRow,
    RunRow,
    RunStore,
    SpanRow,
    StepRow,
    StoredRun,
    TranscriptRow,
    WriteBatch,
)
from ._schema import migrate
from ._search import SearchHit
from ._sqlite import SQLiteStore, default_store_path
from ._writer import StoreWriter

if TYPE_CHECKING:
    from ._postgres import PostgresStore

__all__ = [
    "SORT_KEYS",
    "Aggregate",
    "BatchRejected",
    "EventRow",
    "LlmCallRow",
    "LoadedReads",
    "PagedReads",
    "PostgresStore",
    "RunFilters",
    "RunRow",
    "RunStore",
    "RunStructure",
    "RunTotals",
    "SQLiteStore",
    "SearchHit",
    "SortKey",
    "SpanRow",
    "StepRow",
    "StoreWriter",
    "StoredRun",
    "TranscriptRow",
    "WriteBatch",
    "default_store_path",
    "is_database_url",
    "migrate",
    "open_store",
    "paged_reads",
    "record_runs",
    "store_location",
]


def __getattr__(name: str) -> object:
    if name == "PostgresStore":
        from ._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
