"""What the agent loop accepts from the model's tool calls, and how much it keeps.

Tool calls are model output, so hostile data: this module owns the checks
each call passes before anything else looks at it (``screen``) and the caps on
what goes back into the transcript. ``ToolLimits`` holds the caps:
``max_argument_chars`` (a call whose argument text is longer is refused and is
not run; the transcript keeps it with empty arguments, so the oversized text
is not sent again with every later request) and ``max_result_chars`` (a
longer result is cut, with a note saying how long it was). A tool name that is
not 1-64 letters, digits, ``_``, ``-``, ``.`` or ``:`` is shown escaped as
ASCII and cut to 64 characters (``shown_name``) wherever it is echoed: in the
transcript, the ``ToolRejected`` event and the answer the model reads. Of two
calls with the same id, only the first is kept.
"""

from __future__ import annotations

import re
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..llm._call import _json_chars
from ..llm._types import ToolCall

__all__ = [
    "DEFAULT_MAX_ARGUMENT_CHARS",
    "DEFAULT_MAX_RESULT_CHARS",
    "Screened",
    "ToolLimits",
    "screen",
    "shown_name",
]

DEFAULT_MAX_RESULT_CHARS = 100_000
"""Characters of a tool result the model is sent (about 25,000 tokens)."""

DEFAULT_MAX_ARGUMENT_CHARS = 100_000
"""Characters of argument text a tool call may have."""

_NAME_CHARS = 64
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True)
class ToolLimits:
    """Caps on tool calls and results (see the module docstring)."""

    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS
    max_argument_chars: int = DEFAULT_MAX_ARGUMENT_CHARS

    def __post_init__(self) -> None:
        for name in ("max_result_chars", "max_argument_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"ToolLimits: {name} must be an int, got {value!r}")
            if value <= 0:
                raise ValueError(f"ToolLimits: {name} must be > 0, got {value}")

    def cut_result(self, text: str) -> str:
        """``text``, or its first ``max_result_chars`` characters and a note."""
        if len(text) <= self.max_result_chars:
            return text
        return (
            f"{text[: self.max_result_chars]}\n[... tool result truncated: {len(text):,} "
            f"characters, the first {self.max_result_chars:,} shown]"
        )


def is_plain(name: str) -> bool:
    """Whether ``shown_name(name)`` is ``name`` itself."""
    return _PLAIN_NAME.fullmatch(name) is not None


def shown_name(name: str) -> str:
    """A tool name safe to echo: as is when plain, else escaped to printable
    ASCII and cut, with its length when it was longer than 64 characters."""
    if _PLAIN_NAME.fullmatch(name):
        return name
    shown = ascii(name[:_NAME_CHARS])[1:-1][:_NAME_CHARS]
    if len(name) > _NAME_CHARS:
        shown += f"... ({len(name):,} characters)"
    return shown


def shown_text(text: str, limit: int = 300) -> str:
    """``text`` (built from model output, e.g. a validation error naming an
    argument the model made up) with characters that are not printable
    escaped, cut to ``limit`` characters."""
    if text.isprintable() and len(text) <= limit:
        return text
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text[:limit])
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


class Screened(NamedTuple):
    """A tool call as the transcript keeps it, and why it is refused (if it is).
    A named tuple, not a frozen dataclass: one is made for every tool call, and
    a frozen dataclass's ``__init__`` (``object.__setattr__`` per field) costs
    several times as much."""

    call: ToolCall
    refusal: str | None = None


def _argument_chars(call: ToolCall) -> int:
    if call.raw_arguments:
        return len(call.raw_arguments)
    try:
        # ``len(json.dumps(dict(call.arguments)))``, measured once per call: the
        # estimate of every later request counts the same call again.
        return _json_chars(call) - len(call.name)
    except (TypeError, ValueError, RecursionError):
        return 0  # arguments built by hand that JSON cannot write: validation refuses them


def screen(
    calls: Sequence[ToolCall], limits: ToolLimits, plain: Container[str] = ()
) -> tuple[list[Screened], list[ToolCall]]:
    """The calls to keep (names made safe, oversized arguments emptied and
    refused) and the duplicates dropped (a later call reusing an id).
    ``plain``: names known to be plain (``shown_name`` would return them as
    they are), such as the tools' own."""
    kept: list[Screened] = []
    duplicates: list[ToolCall] = []
    seen: set[str] = set()
    for call in calls:
        name = call.name if call.name in plain else shown_name(call.name)
        if call.id in seen:
            duplicates.append(ToolCall(id=call.id, name=name))
            continue
        seen.add(call.id)
        chars = _argument_chars(call)
        if chars > limits.max_argument_chars:
            refusal = (
                f"arguments are {chars:,} characters, over the limit of "
                f"{limits.max_argument_chars:,}; call the tool with shorter arguments"
            )
            kept.append(Screened(ToolCall(id=call.id, name=name), refusal))
        elif name != call.name:
            safe = ToolCall(
                id=call.id, name=name, arguments=call.arguments, raw_arguments=call.raw_arguments
            )
            kept.append(Screened(safe))
        else:
            kept.append(Screened(call))
    return kept, duplicates
