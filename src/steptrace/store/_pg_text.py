"""What PostgreSQL text cannot hold, and how a ``PostgresStore`` keeps it anyway.

PostgreSQL refuses a NUL character in ``text``, and a lone surrogate cannot
be encoded for it at all: one hostile tool name, model name or error message
holding either used to lose its row (and a filter or search for it failed).
SQLite holds NUL; steptrace's JSON texts are ASCII, those characters escaped.

Every string crossing a store connection goes through one reversible
encoding, applied by psycopg itself (``register``: a dumper for ``str``
parameters, a loader for ``text`` results), so writes, filters, searches and
reads all meet the same stored form and callers only ever see the original:
NUL, a surrogate, and the mark itself are each stored as the mark ``U+FDD0``
(a Unicode noncharacter, never meant for interchange) and the character's
four hex digits: ``"a\\x00b"`` is stored as ``"a\\ufdd00000b"``. Each
character is encoded alone, so a text found in another is found in its
stored form too (a search for ``"\\x00"`` meets the stored ``"\\ufdd00000"``);
what sorts or compares by the stored form sees the mark.

JSON escapes of those characters (``\\u0000`` in stored JSON) are left as
they are, faithful in ``text``; PostgreSQL's JSON types refuse them, so SQL
reading events' JSON leaves such rows to Python (``JSON_UNSAFE``).
"""

from __future__ import annotations

import functools
import re
from typing import Any

__all__ = ["JSON_UNSAFE", "decode", "encode", "register"]

_MARK = "\ufdd0"
_STORED = re.compile("[\x00\ud800-\udfff\ufdd0]")
_MARKED = re.compile("\ufdd0([0-9a-f]{4})")

JSON_UNSAFE = r"(strpos(data, '\u') > 0 AND data ~ '\\u(0000|[dD][89a-fA-F]|[fF][dD][dD]0)')"
"""SQL true for an event whose JSON text ``jsonb`` cannot read (an escaped NUL
or surrogate) or whose text values would not read back from ``jsonb`` (the
mark, escaped: its value holds the mark itself). It may be true of an escaped
backslash followed by such letters: that row is read in Python too."""


def _stored(match: re.Match[str]) -> str:
    return f"{_MARK}{ord(match.group()):04x}"


def _original(match: re.Match[str]) -> str:
    return chr(int(match.group(1), 16))


def encode(text: str) -> str:
    """``text`` as PostgreSQL stores it (itself when it has nothing to encode)."""
    return _STORED.sub(_stored, text)


def decode(text: str) -> str:
    """The original of a stored ``text`` (``encode``'s inverse)."""
    return _MARKED.sub(_original, text) if _MARK in text else text


def register(conn: Any, psycopg: Any) -> None:
    """Make ``conn`` (a connection of the ``psycopg`` module given) encode
    every ``str`` parameter and decode every ``text`` result."""
    dumper, loader = _adapters(psycopg)
    conn.adapters.register_dumper(str, dumper)
    for name in ("text", "varchar"):
        conn.adapters.register_loader(name, loader)


@functools.cache
def _adapters(psycopg: Any) -> tuple[type, type]:
    """psycopg's text dumper and loader with the encoding added (its Python
    ones: the C ones cannot be subclassed)."""
    from importlib import import_module

    string: Any = import_module(psycopg.__name__ + ".types.string")

    # Each does what its base does (one call a value: a database of SQL_ASCII,
    # where the base loader gives bytes, is left to the base).
    class Dumper(string.StrDumperUnknown):  # type: ignore[misc]
        def dump(self, obj: str) -> Any:
            return _STORED.sub(_stored, obj).encode(self._encoding)

    class Loader(string.TextLoader):  # type: ignore[misc]
        def load(self, data: Any) -> Any:
            if not self._encoding:
                return super().load(data)
            text = str(data, self._encoding)
            return _MARKED.sub(_original, text) if _MARK in text else text

    return Dumper, Loader
