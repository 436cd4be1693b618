"""Text for a terminal: safe text, colour (only where it belongs), numbers,
times, tables.

Stored names, errors, metadata and events are hostile data (a model chose
some of them). ``terminal_text`` is the one function every renderer passes
such text through: credentials are redacted (``steptrace._redact``) and every
control or format character (ESC, BEL, C1 controls, bidi overrides,
zero-width characters, line breaks where one line is expected) is shown as a
visible escape (``\\x1b``, ``\\u202e``, ``\\n``) instead of acting on the
terminal. ``terminal_lines`` does it to each line of a block of our own,
``terminal_json`` to JSON text (as JSON escapes, so it still parses).
``Style.paint`` and ``table`` apply it to whatever they are given.

``Style`` paints text with ANSI colours when enabled: on a terminal, never
with ``NO_COLOR`` set (https://no-color.org), or as ``--color`` says.
Numbers are shown the same way everywhere: tokens with thousands separators,
USD with enough decimals to see a fraction of a cent, durations in the unit
that reads best. ``table`` aligns columns on the plain text and paints after,
so colour never breaks the alignment.
"""

from __future__ import annotations

import json
import os
import time
import unicodedata
from collections.abc import Callable, Sequence
from typing import TextIO

from .._redact import redact

__all__ = [
    "Style",
    "format_cost",
    "format_duration",
    "format_pct",
    "format_time",
    "format_tokens",
    "format_usd",
    "table",
    "terminal_json",
    "terminal_lines",
    "terminal_text",
    "wants_colour",
]

_CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}

_STATUS_COLOURS = {
    "completed": "green",
    "ok": "green",
    "running": "cyan",
    "failed": "red",
    "error": "red",
    "interrupted": "yellow",
    "over_budget": "red",
    "skipped": "yellow",
    "escalated": "magenta",
}


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Not printable by ``str.isprintable`` but harmless: spaces and private use.
_HARMLESS = frozenset({"Zs", "Co"})


def _acts_on_terminal(ch: str) -> bool:
    """Control (Cc), format (Cf: bidi, zero-width), surrogate, unassigned, and
    line/paragraph separator characters."""
    return not ch.isprintable() and unicodedata.category(ch) not in _HARMLESS


def _visible(ch: str) -> str:
    named = _NAMED_ESCAPES.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def terminal_text(text: object) -> str:
    """``text`` (``str()`` of anything else) as one line that is safe to print:
    credentials redacted, characters that act on a terminal shown escaped."""
    line = redact(text if isinstance(text, str) else str(text))
    if line.isprintable():
        return line
    return "".join(_visible(ch) if _acts_on_terminal(ch) else ch for ch in line)


def terminal_lines(text: str) -> str:
    """A block of lines of our own (a table, a traceback): each line made safe
    with ``terminal_text``, the line breaks kept."""
    return "\n".join(terminal_text(line) for line in text.split("\n"))


def terminal_json(text: str) -> str:
    """JSON text (lines of it) safe to print: credentials redacted, characters
    that act on a terminal written as JSON escapes (they can only be inside
    strings there, so the JSON still parses to the same data); line breaks
    between lines kept."""
    text = redact(text)
    if text.isprintable():
        return text
    return "".join(
        json.dumps(ch)[1:-1] if ch != "\n" and _acts_on_terminal(ch) else ch for ch in text
    )


def wants_colour(stream: TextIO, choice: str = "auto") -> bool:
    """Colour for ``stream``: ``always``, ``never``, or (``auto``) only on a
    terminal and never when ``NO_COLOR`` is set to anything but empty."""
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR", ""):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Style:
    """Paints text when ``enabled``; the text is made safe (``terminal_text``)
    either way."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def paint(self, text: str, *styles: str) -> str:
        text = terminal_text(text)
        if not self.enabled or not styles or not text:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def status(self, status: str, text: str | None = None) -> str:
        """``text`` (default: the status itself) in the status's colour."""
        colour = _STATUS_COLOURS.get(status)
        shown = status if text is None else text
        return terminal_text(shown) if colour is None else self.paint(shown, colour)

    def pct(self, pct: float | None, text: str) -> str:
        """``text`` coloured by how much of a budget is used."""
        if pct is None:
            return terminal_text(text)
        return self.paint(text, "red" if pct > 100 else "yellow" if pct >= 80 else "green")


def format_tokens(n: int) -> str:
    return f"{n:,}"


def format_usd(usd: float | None) -> str:
    """``$0.000420``, ``$0.1234``, ``$12.50``; ``-`` when unknown."""
    if usd is None:
        return "-"
    if usd == 0:
        return "$0"
    if abs(usd) < 0.01:
        return f"${usd:.6f}"
    if abs(usd) < 1:
        return f"${usd:.4f}"
    return f"${usd:,.2f}"


def format_cost(usd: float, unknown: int) -> str:
    """A cost that may leave out calls of unknown price: ``$0.0123``,
    ``$0.0123 + 2 unknown``, or ``unknown`` when no call had a price."""
    if not unknown:
        return format_usd(usd)
    if usd == 0:
        return "unknown"
    return f"{format_usd(usd)} + {unknown} unknown"


def format_limit_usd(usd: float) -> str:
    """A budget limit: as few decimals as it needs (``$0.25``, ``$1``)."""
    return f"${usd:g}" if usd >= 0.0001 else f"${usd:.6f}"


def format_pct(pct: float | None) -> str:
    if pct is None:
        return ""
    if pct == float("inf"):
        return "over"
    return f"{pct:.0f}%"


def format_duration(seconds: float | None) -> str:
    """``12 ms``, ``3.2 s``, ``4m 05s``, ``1h 02m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_time(timestamp: float | None) -> str:
    """A wall time (``time.time()``) in local time, to the second."""
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


Painter = Callable[[str], str]


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[int] = (),
    painters: Sequence[Sequence[Painter | None]] | None = None,
    style: Style | None = None,
) -> str:
    """Rows aligned under ``headers`` (columns in ``right`` right-aligned).

    ``painters[r][c]``, when given, colours cell ``c`` of row ``r`` after
    padding. Every cell is made safe (``terminal_text``) first."""
    headers = [terminal_text(h) for h in headers]
    rows = [[terminal_text(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str], paint: Sequence[Painter | None] | None) -> str:
        out = []
        for i, cell in enumerate(cells):
            painter = paint[i] if paint is not None and i < len(paint) else None
            shown = cell if painter is None else painter(cell)
            pad = " " * (widths[i] - len(cell))
            out.append(pad + shown if i in right else shown + pad)
        return "  ".join(out).rstrip()

    header = line(headers, None)
    if style is not None:
        header = style.paint(header, "bold")
    lines = [header]
    for r, row in enumerate(rows):
        lines.append(line(row, None if painters is None else painters[r]))
    return "\n".join(lines)
