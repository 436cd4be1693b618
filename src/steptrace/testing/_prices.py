"""``FakePrices``: a price source with flat, made-up prices, for tests and offline
examples that need a cost without genai-prices' table.

Prices are given per million tokens and a cost is computed as
``(input * input_per_million + output * output_per_million) / 1_000_000``, so
whole-number prices give exactly the float a reader computes by hand. Cache
reads and writes are part of ``input_tokens`` (as in ``PriceSource``) and cost
the input price. Every call it is asked to price is kept, in order, so a test
can check what reached the price source.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

__all__ = ["FakePrices", "PricedCall"]


class PricedCall(NamedTuple):
    """One call ``FakePrices`` was asked to price, with the counts it was given."""

    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int


class FakePrices:
    """A ``steptrace.PriceSource`` charging the same made-up prices for every model.

    ``FakePrices()`` charges $1 per million tokens, input or output;
    ``FakePrices(input_per_million=1.0, output_per_million=2.0)`` charges output
    double. Models whose id starts with one of ``unknown`` (e.g.
    ``unknown=("unknown",)``) have no price: ``cost_usd`` answers ``None``, as
    a real table does for a model it does not list. ``calls`` holds every call
    priced, oldest first (appending is thread-safe). Install it with
    ``steptrace.configure(price_source=FakePrices())``.
    """

    def __init__(
        self,
        input_per_million: float = 1.0,
        output_per_million: float | None = None,
        *,
        unknown: Iterable[str] = (),
    ) -> None:
        self.input_per_million = float(input_per_million)
        self.output_per_million = float(
            input_per_million if output_per_million is None else output_per_million
        )
        self.unknown = tuple(unknown)
        self.calls: list[PricedCall] = []

    def __repr__(self) -> str:
        return (
            f"FakePrices(input_per_million={self.input_per_million!r}, "
            f"output_per_million={self.output_per_million!r}, unknown={self.unknown!r})"
        )

    def cost_usd(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float | None:
        """The call's cost in USD at these prices, or ``None`` for an unknown model."""
        self.calls.append(
            PricedCall(model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
        )
        if self.unknown and model.startswith(self.unknown):
            return None
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / 1_000_000
