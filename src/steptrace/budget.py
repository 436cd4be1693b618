"""Budgets, usage figures, money arithmetic and the price-source extension point.

``Budget`` is a validated pair of limits (``None`` means off). Money is kept as
integer picodollars (1e-12 USD) inside the accounting so that ten thousand
calls of $0.0001 add up to exactly $1 and never trip a $1 budget by rounding
drift; it is shown as float USD everywhere a user looks. A ``Ledger`` is the
running total of one budget scope. ``PriceSource`` is the
protocol the LLM layer implements to price calls whose cost is not given; the
core ships no prices of its own (``_pricing`` finds the LLM layer's table).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ._records import FrozenRecord
from .errors import ScopeKind

__all__ = ["Budget", "PriceSource", "Usage"]

PICO_PER_USD = 10**12

MAX_CALL_TOKENS = 2**40 - 1
"""The most tokens one recorded call may count (input, output, cache or duration
in ms alike), about 1.1 trillion: far beyond any model, far below where sums
overflow a store's 64-bit integers. One less than a power of two, so the hot
path checks four counts with one bitwise or."""

MAX_CALL_USD = 1_000_000.0
"""The most one recorded call may cost, in USD."""

MAX_BUDGET_USD = 9_000_000.0
"""The largest ``max_usd`` limit: picodollars must fit a signed 64-bit integer
(about $9.2M) in stores and shared pools."""


def usd_to_pico(usd: float) -> int:
    return round(usd * PICO_PER_USD)


def pico_to_usd(pico: int) -> float:
    return pico / PICO_PER_USD


class Budget(FrozenRecord):
    """Limits for a step, persona or run. ``None`` turns a limit off.

    ``max_tokens`` counts input plus output tokens and must be a positive
    integer; ``max_usd`` must be a finite number >= 0. A scope is exhausted when
    its usage goes *strictly over* a limit.
    """

    __slots__ = ("max_tokens", "max_usd")
    _fields = ("max_tokens", "max_usd")
    max_tokens: int | None
    max_usd: float | None

    def __init__(self, max_tokens: int | None = None, max_usd: float | None = None) -> None:
        self._set("max_tokens", _check_max_tokens(max_tokens, "Budget"))
        self._set("max_usd", _check_max_usd(max_usd, "Budget"))

    @property
    def is_unlimited(self) -> bool:
        return self.max_tokens is None and self.max_usd is None

    def to_dict(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "max_usd": self.max_usd}

    @classmethod
    def coerce(cls, value: Budget | Mapping[str, Any] | None, owner: str) -> Budget | None:
        """Accept a ``Budget``, a dict with ``max_tokens``/``max_usd``, or None.

        ``owner`` (e.g. ``"step `plan`"``) is named in every error message.
        """
        if value is None or isinstance(value, Budget):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(
                f"{owner}: budget must be a Budget or a dict with max_tokens/max_usd, "
                f"got {type(value).__name__}"
            )
        unknown = sorted(set(value) - {"max_tokens", "max_usd"})
        if unknown:
            raise ValueError(
                f"{owner}: unknown budget field(s) {unknown}; expected max_tokens, max_usd"
            )
        return cls(
            max_tokens=_check_max_tokens(value.get("max_tokens"), owner),
            max_usd=_check_max_usd(value.get("max_usd"), owner),
        )


def _check_max_tokens(value: object, owner: str) -> int | None:
    if value is None:
        return None
    # JSON and YAML manifests may give 100.0; accept whole floats, nothing fractional.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: budget.max_tokens must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{owner}: budget.max_tokens must be a positive integer, got {value}")
    return value


def _check_max_usd(value: object, owner: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{owner}: budget.max_usd must be a number >= 0, got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= MAX_BUDGET_USD:
        raise ValueError(
            f"{owner}: budget.max_usd must be a number between 0 and "
            f"{MAX_BUDGET_USD:,.0f}, got {value!r}"
        )
    return float(value)


def checked_price(answer: object, source: object, model: str) -> float:
    """A price source's answer that was not a plain float in range: accept an
    int, refuse anything else naming the value and the source (a negative price
    would credit a ledger, NaN poisons every total after it)."""
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer <= MAX_CALL_USD:
        return float(answer)
    if isinstance(answer, float) and math.isfinite(answer) and 0 <= answer <= MAX_CALL_USD:
        return answer
    text = repr(answer)
    if len(text) > 60:
        text = text[:57] + "..."
    raise ValueError(
        f"price source {type(source).__name__} priced model {model!r} at {text}: "
        f"expected None (unknown) or a number of USD between 0 and {MAX_CALL_USD:,.0f}"
    )


class Usage(NamedTuple):
    """A snapshot of usage: tokens, priced cost in USD, and LLM calls, of which
    ``unpriced_calls`` had no known price (their cost is not in ``cost_usd``:
    the cost is then a lower bound, shown as "+ N calls of unknown cost")."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    llm_calls: int = 0
    unpriced_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Ledger:
    """Usage totals of one budget scope (a run, a persona, or a step with a
    budget), its limits in tokens and picodollars, and the threshold hooks it
    has already fired. Mutated only under the owning run's lock."""

    __slots__ = (
        "cost_pico",
        "fired_thresholds",
        "held_pico",
        "held_tokens",
        "input_tokens",
        "kind",
        "llm_calls",
        "max_pico",
        "max_tokens",
        "name",
        "output_tokens",
        "owner",
        "unpriced_calls",
    )

    def __init__(
        self,
        kind: ScopeKind,
        name: str,
        max_tokens: int | None,
        max_pico: int | None,
        owner: Any = None,
    ) -> None:
        self.kind: ScopeKind = kind
        self.name = name
        self.owner = owner
        """The frame whose budget this is (for a step: to name it in errors)."""
        self.max_tokens = max_tokens
        self.max_pico = max_pico
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_pico = 0
        self.llm_calls = 0
        self.unpriced_calls = 0
        """Of ``llm_calls``, those whose cost is unknown (not in ``cost_pico``)."""
        self.held_tokens = 0
        """Worst cases held by pre-flights whose calls have not reported back."""
        self.held_pico = 0
        self.fired_thresholds: set[int] | None = None

    @property
    def has_budget(self) -> bool:
        return self.max_tokens is not None or self.max_pico is not None

    @property
    def budget(self) -> Budget | None:
        if not self.has_budget:
            return None
        max_usd = None if self.max_pico is None else pico_to_usd(self.max_pico)
        return Budget(self.max_tokens, max_usd)

    def usage(self) -> Usage:
        return Usage(
            self.input_tokens,
            self.output_tokens,
            pico_to_usd(self.cost_pico),
            self.llm_calls,
            self.unpriced_calls,
        )

    def budget_pct(self) -> float | None:
        """Percent of the budget used: the larger of the token and USD fractions."""
        pct: float | None = None
        if self.max_tokens is not None:
            pct = 100.0 * (self.input_tokens + self.output_tokens) / self.max_tokens
        if self.max_pico is not None:
            if self.max_pico == 0:
                usd_pct = 0.0 if self.cost_pico == 0 else math.inf
            else:
                usd_pct = 100.0 * self.cost_pico / self.max_pico
            pct = usd_pct if pct is None else max(pct, usd_pct)
        return pct


@runtime_checkable
class PriceSource(Protocol):
    """Prices a model call. Implemented by the LLM layer (``steptrace.llm``).

    Returns the cost in USD, or ``None`` when the model's price is unknown (the
    caller then refuses to count the call as free under a USD budget). Must be
    pure, fast and thread-safe: it runs on every recorded call and pre-flight
    check, and must not do network I/O. A source may also take a keyword
    ``reasoning_tokens`` (part of ``output_tokens``) to price them at their
    own rate; without it they are priced as the output they are part of.
    """

    def cost_usd(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float | None: ...
