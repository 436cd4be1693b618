"""Text for a terminal: colour (only where it belongs), numbers, times, tables.

``Style`` paints text with ANSI colours when enabled: on a terminal, never
with ``NO_COLOR`` set (https://no-color.org), or as ``--color`` says.
Numbers are shown the same way everywhere: tokens with thousands separators,
USD with enough decimals to see a fraction of a cent, durations in the unit
that reads best. ``table`` aligns columns on the plain text and paints after,
so colour never breaks the alignment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TextIO

__all__ = [
    "Style",
    "format_duration",
    "format_pct",
    "format_time",
    "format_tokens",
    "format_usd",
    "table",
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
    """Paints text when ``enabled``; otherwise returns it unchanged."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def paint(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles or not text:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def status(self, status: str, text: str | None = None) -> str:
        """``text`` (default: the status itself) in the status's colour."""
        colour = _STATUS_COLOURS.get(status)
        shown = status if text is None else text
        return shown if colour is None else self.paint(shown, colour)

    def pct(self, pct: float | None, text: str) -> str:
        """``text`` coloured by how much of a budget is used."""
        if pct is None:
            return text
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
    padding."""
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
