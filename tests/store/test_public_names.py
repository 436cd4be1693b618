"""``steptrace.store``'s public surface is one ``__all__`` (in ruff's order), frozen here so
changes are deliberate; the portal and the CLI use nothing else of it."""

from __future__ import annotations

import steptrace.store

PUBLIC_NAMES = [
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


def test_the_public_names_are_frozen() -> None:
    assert steptrace.store.__all__ == PUBLIC_NAMES
    assert len(set(PUBLIC_NAMES)) == len(PUBLIC_NAMES)
    for name in PUBLIC_NAMES:
        assert getattr(steptrace.store, name) is not None, name
