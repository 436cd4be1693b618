"""JSON text from encoders built once: ``json.dumps``'s output without its setup per call.

``json.dumps(value, **options)`` builds a ``JSONEncoder`` for any option, and
every ``encode`` builds the C encoder (``json.encoder.c_make_encoder``) again,
with a fresh dict of circular-reference markers: thousands of instructions
before the first character, which the store's writer, the agent loop's
pre-flight measure and its loop detection pay per record or per tool call.
This module owns the one way steptrace skips that: ``chunks(**options)`` is
the C encoder built once for those options, and ``encoder(**options)`` a
function giving ``json.dumps(value, **options)`` exactly.

The C encoder is built without markers, so it holds no state between calls and
one can be shared by every thread and task; a cycle then ends in
``RecursionError`` instead of ``ValueError``. ``encoder``'s function answers
any failure by asking ``json.dumps`` itself, so what it raises (a cycle, a key
or value JSON cannot hold, NaN under ``allow_nan=False``, an int too long to
write) is what ``json.dumps`` raises; a caller inlining ``chunks`` in a hot
loop keeps a reference path of its own. Standard library only: this module is
at the bottom of the core's layers.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["chunks", "encoder"]

Chunks = Callable[[Any, int], Sequence[str]]
"""The C encoder's call: ``(value, 0)`` -> the pieces of its JSON text."""

_DEFAULT_SEPARATORS = (", ", ": ")  # json.dumps's, without an indent

_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_c_ascii: Any = getattr(json.encoder, "c_encode_basestring_ascii", None)
_c_unicode: Any = getattr(json.encoder, "c_encode_basestring", None)


def _reference(
    default: Callable[[Any], Any] | None,
    sort_keys: bool,
    separators: tuple[str, str],
    ensure_ascii: bool,
    allow_nan: bool,
) -> Callable[[Any], str]:
    """``json.dumps`` with these options, as one function of the value."""

    def dumps(value: Any) -> str:
        return json.dumps(
            value,
            default=default,
            sort_keys=sort_keys,
            separators=separators,
            ensure_ascii=ensure_ascii,
            allow_nan=allow_nan,
        )

    return dumps


_refuse = json.JSONEncoder().default  # json.dumps's default: TypeError, naming the type


def chunks(
    *,
    default: Callable[[Any], Any] | None = None,
    sort_keys: bool = False,
    separators: tuple[str, str] = _DEFAULT_SEPARATORS,
    ensure_ascii: bool = True,
    allow_nan: bool = True,
) -> Chunks:
    """The C encoder for these ``json.dumps`` options, built once and without
    markers: ``"".join(chunks(value, 0))`` is ``json.dumps(value, ...)`` for every
    value that ``json.dumps`` can write (a cycle raises ``RecursionError``)."""
    escape = _c_ascii if ensure_ascii else _c_unicode
    if _c_make_encoder is None or escape is None:  # pragma: no cover - every CPython has it
        dumps = _reference(default, sort_keys, separators, ensure_ascii, allow_nan)
        return lambda value, _: (dumps(value),)
    item_separator, key_separator = separators
    made: Chunks = _c_make_encoder(
        None,  # no markers: no state, shareable (see the module docstring)
        _refuse if default is None else default,
        escape,
        None,  # indent
        key_separator,
        item_separator,
        sort_keys,
        False,  # skipkeys
        allow_nan,
    )
    return made


def encoder(
    *,
    default: Callable[[Any], Any] | None = None,
    sort_keys: bool = False,
    separators: tuple[str, str] = _DEFAULT_SEPARATORS,
    ensure_ascii: bool = True,
    allow_nan: bool = True,
) -> Callable[[Any], str]:
    """A function giving ``json.dumps(value, default=..., sort_keys=..., ...)``
    exactly, the text or the exception, for any value."""
    encode = chunks(
        default=default,
        sort_keys=sort_keys,
        separators=separators,
        ensure_ascii=ensure_ascii,
        allow_nan=allow_nan,
    )
    reference = _reference(default, sort_keys, separators, ensure_ascii, allow_nan)
    join = "".join

    def dumps(value: Any) -> str:
        try:
            return join(encode(value, 0))
        except Exception:  # json.dumps says what it says (a cycle: ValueError, not recursion)
            return reference(value)

    return dumps
