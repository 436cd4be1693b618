"""Token counts a response reports, read where they enter: whole and part counts.

A whole count (a response's input or output tokens) is an int from 0 to
``MAX_USAGE_COUNT``; ``whole_count`` refuses anything else, naming it, so
the caller records an estimate instead and says so (every provider of
``llm_call`` and the instrumented SDK clients read them so).

A response's usage names parts of its totals: reasoning (thinking) tokens are
part of the output tokens, cached tokens part of the input tokens. A server
may send anything there (a negative number, text, more than the whole), and
the SDKs and frameworks pass most of it on unchecked. ``part_count`` is the
one rule every reader applies (``llm_call``'s providers, the instrumented
SDK clients and each framework integration): a part is an int from 0 to its
whole, and anything else reads as 0. This module is the seam the
integrations use (``steptrace.llm``'s underscore modules are its own).
"""

from __future__ import annotations

__all__ = ["MAX_USAGE_COUNT", "part_count", "whole_count"]

MAX_USAGE_COUNT = 10**12
"""The largest token count accepted from a provider or a cassette (a trillion
tokens in one call is a broken or hostile server, not a bill)."""


def whole_count(value: object, name: str, refused: list[str]) -> int | None:
    """``value`` when it is a token count (an int from 0 to ``MAX_USAGE_COUNT``),
    else None after appending ``name=<value shown short>`` to ``refused``."""
    if type(value) is int and 0 <= value <= MAX_USAGE_COUNT:
        return value
    shown = repr(value) if type(value) is not int else f"{value:.3g}"
    refused.append(f"{name}={shown[:40]}")
    return None


def part_count(value: object, whole: int) -> int:
    """A count a provider reports as part of ``whole`` (reasoning tokens of the
    output tokens): ``value`` capped at ``whole`` when it is a token count, else
    0 (missing, negative, not an int: a hostile or broken server's)."""
    if type(value) is not int or value <= 0 or type(whole) is not int or whole <= 0:
        return 0
    return value if value <= whole else whole
