"""Token counts reported as part of another count, read where they enter.

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

__all__ = ["part_count"]


def part_count(value: object, whole: int) -> int:
    """A count a provider reports as part of ``whole`` (reasoning tokens of the
    output tokens): ``value`` capped at ``whole`` when it is a token count, else
    0 (missing, negative, not an int: a hostile or broken server's)."""
    if type(value) is not int or value <= 0 or type(whole) is not int or whole <= 0:
        return 0
    return value if value <= whole else whole
