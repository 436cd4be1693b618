"""Durable runs: the ``RunStore`` protocol, the SQLite store and the background writer.

``steptrace.store`` keeps runs (header and totals), their span trees, agent
events and completed-step ledgers in a database, written while runs go by a
``StoreWriter`` span processor and read back as ``StoredRun`` objects::

    store = SQLiteStore(default_store_path())
    writer = StoreWriter(store)
    steptrace.add_span_processor(writer)

Only the standard library is used; nothing here runs until it is imported.
"""

from ._protocol import EventRow, RunRow, RunStore, SpanRow, StepRow, StoredRun, WriteBatch
from ._schema import migrate
from ._sqlite import SQLiteStore, default_store_path
from ._writer import StoreWriter

__all__ = [
    "EventRow",
    "RunRow",
    "RunStore",
    "SQLiteStore",
    "SpanRow",
    "StepRow",
    "StoreWriter",
    "StoredRun",
    "WriteBatch",
    "default_store_path",
    "migrate",
]
