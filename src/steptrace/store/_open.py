"""Choosing a store from a string: a path or a database URL.

``open_store(target)`` is the one place that maps configuration to a backend:
``postgresql://`` (or ``postgres://``) URLs open a ``PostgresStore`` (extra
``steptrace[postgres]``), anything else is a SQLite file path. With no target
it reads ``STEPTRACE_STORE``, then falls back to ``.steptrace/runs.db`` under
the working directory. ``record_runs`` opens one and starts writing every run
of the process into it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..spans import add_span_processor
from ._protocol import RunStore
from ._sqlite import _DEFAULT_PATH, SQLiteStore
from ._writer import StoreWriter

__all__ = ["is_database_url", "open_store", "record_runs", "store_location"]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(target: str) -> bool:
    return target.startswith(_POSTGRES_SCHEMES)


def store_location(target: str | os.PathLike[str] | None = None) -> str:
    """Where ``open_store(target)`` would look, for messages (URLs as given)."""
    if target is None:
        target = os.environ.get("STEPTRACE_STORE") or _DEFAULT_PATH
    return str(target)


def open_store(target: str | os.PathLike[str] | None = None, *, reading: bool = False) -> RunStore:
    """Open the store at ``target`` (a SQLite path or a ``postgresql://`` URL).

    ``reading``: the caller only reads (a viewer, a report): a SQLite file that
    cannot be written (a read-only file or mount) is then opened read-only
    instead of failing."""
    location = store_location(target)
    if is_database_url(location):
        # Imported here: only a database URL needs psycopg (steptrace[postgres]).
        from ._postgres import PostgresStore

        return PostgresStore(location)
    try:
        return SQLiteStore(Path(location))
    except sqlite3.OperationalError as error:
        cannot_write = getattr(error, "sqlite_errorname", "").startswith(
            ("SQLITE_READONLY", "SQLITE_CANTOPEN")
        )
        if not (reading and cannot_write and Path(location).is_file()):
            raise
    return SQLiteStore(Path(location), read_only=True)


def record_runs(
    target: str | os.PathLike[str] | RunStore | None = None,
    *,
    capture_content: bool | None = None,
) -> StoreWriter:
    """Record every run of this process from now on: open the store (a path,
    URL, an open ``RunStore``, or the default), register a ``StoreWriter`` as a
    span processor and return it. Stop with ``writer.stop()``.

    ``capture_content`` defaults to ``$STEPTRACE_CAPTURE_CONTENT`` (``0``,
    ``false`` or ``no`` store no prompt or response text), else true."""
    store = target if isinstance(target, RunStore) else open_store(target)
    if capture_content is None:
        setting = os.environ.get("STEPTRACE_CAPTURE_CONTENT", "").strip().lower()
        capture_content = setting not in ("0", "false", "no", "off")
    writer = StoreWriter(store, capture_content=capture_content)
    add_span_processor(writer)
    return writer
