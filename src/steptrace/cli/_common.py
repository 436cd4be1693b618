"""What every command shares: the error a person can act on, opening a store
that must already exist, and how the commands write JSON.

``CliError`` carries a message (and an exit code, 1 unless said otherwise);
``_main`` prints it as ``steptrace: error: ...`` without a traceback.
``reading_store`` refuses to create an empty store just to read it and says
where it looked and why there; it opens a store it cannot write read-only,
and turns a store that cannot be read (a damaged file) into an error naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from ..store import RunStore, is_database_url, open_store, store_location
from ._render import terminal_json

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "existing_store_location",
    "print_json",
    "reading_store",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """An error the person can act on: printed without a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def store_origin(target: str | None) -> str:
    """Why the store is where it is, for messages."""
    if target:
        return "from --store"
    if os.environ.get("STEPTRACE_STORE"):
        return "from $STEPTRACE_STORE"
    return "the default: .steptrace/runs.db under the working directory"


def existing_store_location(target: str | None) -> str:
    """Where the store of ``target`` (``--store``), ``$STEPTRACE_STORE`` or the
    default is; a ``CliError`` saying where it looked when there is none
    there (a database URL is taken as it is)."""
    location = store_location(target)
    if not is_database_url(location):
        path = Path(location)
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            raise CliError(
                f"no run store at {path.absolute()} ({store_origin(target)}; it {what}).\n"
                "Record a run first with `steptrace run SCRIPT.py`, or point --store or "
                "STEPTRACE_STORE at an existing store."
            )
    return location


@contextlib.contextmanager
def reading_store(target: str | None) -> Iterator[RunStore]:
    """The store ``existing_store_location(target)`` names, opened for reading
    (read-only when it cannot be written) and closed after the block; a
    ``CliError`` naming it when it cannot be opened or read."""
    location = existing_store_location(target)
    try:
        store = open_store(location, reading=True)
    except ImportError as exc:
        raise CliError(str(exc)) from None
    except NotImplementedError as exc:
        raise CliError(f"cannot open the store at {location}: {exc}") from None
    except Exception as exc:  # sqlite3.DatabaseError, a refused connection, ...
        raise CliError(
            f"cannot open the store at {location} ({store_origin(target)}): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    try:
        yield store
    except sqlite3.DatabaseError as exc:
        raise CliError(
            f"cannot read the store at {location} ({store_origin(target)}): {exc}; "
            "the file may be damaged (`sqlite3 FILE 'PRAGMA integrity_check'` says more)"
        ) from None
    finally:
        with contextlib.suppress(Exception):  # closing a damaged store must not hide why
            store.close()


def print_json(value: Any, out: TextIO | None = None) -> None:
    """``value`` as indented JSON on stdout (anything JSON cannot hold as its
    str()), safe for a terminal (``terminal_json``)."""
    stream = sys.stdout if out is None else out
    stream.write(terminal_json(json.dumps(value, indent=2, default=str, ensure_ascii=False)))
    stream.write("\n")
