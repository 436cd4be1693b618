"""Pricing a model call: which price source answers, and the one function that asks it.

Every cost steptrace records or checks comes from ``price_call``: a call
recorded without ``cost_usd`` (``record_llm_usage``), a pre-flight's worst
case (``reserve``), and the conclusion of an ``llm_call``, an instrumented
SDK call or a framework integration's request, each priced once. The source
is the configured one (``steptrace.configure(price_source=...)``); when none
was ever configured, the first call that needs a price finds the default,
``steptrace.llm``'s genai-prices table when genai-prices is installed. It is
found by name, so the core keeps importing only the standard library and a
price never depends on what the program happened to import. An explicit
``configure(price_source=None)`` means no prices.

A price that stays unknown is never a silent zero: the call is recorded with
cost ``None`` in the trace and counted in every ledger's ``unpriced_calls``
(so rows, summaries and the CLI say "cost unknown"), and a USD budget in
force turns it into ``PricingUnknown``.
"""

from __future__ import annotations

import threading

from ._config import settings
from .budget import MAX_CALL_USD, PriceSource, checked_price

__all__ = ["DEFAULT_PRICES_MODULE", "price_call", "price_source"]

DEFAULT_PRICES_MODULE = "steptrace.llm.prices"
"""Where the default price source lives (its ``install_default_prices``)."""

_finding = threading.Lock()


def price_source() -> PriceSource | None:
    """The source that prices calls: the configured one, else the default,
    looked for once, on the first call that needs a price."""
    if settings.price_source_configured:
        return settings.price_source
    return _find_default()


def _find_default() -> PriceSource | None:
    with _finding:
        if not settings.price_source_configured:
            try:
                import importlib  # deferred: needed once, on the first priced call

                importlib.import_module(DEFAULT_PRICES_MODULE).install_default_prices()
            except ImportError:
                pass  # no genai-prices: prices stay unknown, and say so
            finally:
                settings.price_source_configured = True
    return settings.price_source


def price_call(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_tokens: int = 0,
    cache_write_tokens: int = 0,
    *,
    reasoning_tokens: int = 0,
    source: PriceSource | None = None,
) -> float | None:
    """The cost of a call in USD from ``source`` (default: ``price_source()``),
    checked: ``None`` when the price is unknown, ``ValueError`` naming the
    source when its answer is not a price. ``cache_tokens`` (cache reads) and
    ``cache_write_tokens`` are parts of ``input_tokens``, ``reasoning_tokens``
    of ``output_tokens``: a source whose ``cost_usd`` takes
    ``reasoning_tokens`` (genai-prices' table does) prices them at their own
    rate, any other at the output rate they are part of."""
    if source is None:
        source = settings.price_source if settings.price_source_configured else _find_default()
        if source is None:
            return None
    if reasoning_tokens and _takes_reasoning(source):
        answer = source.cost_usd(  # type: ignore[call-arg]  # optional in the protocol
            model,
            input_tokens,
            output_tokens,
            cache_read_tokens=cache_tokens,
            cache_write_tokens=cache_write_tokens,
            reasoning_tokens=reasoning_tokens,
        )
    else:
        answer = source.cost_usd(
            model,
            input_tokens,
            output_tokens,
            cache_read_tokens=cache_tokens,
            cache_write_tokens=cache_write_tokens,
        )
    if answer is None or (type(answer) is float and 0.0 <= answer <= MAX_CALL_USD):
        return answer
    return checked_price(answer, source, model)


_REASONING_AWARE: dict[type, bool] = {}


def _takes_reasoning(source: PriceSource) -> bool:
    """Whether ``source.cost_usd`` accepts ``reasoning_tokens`` (asked once a
    class: ``PriceSource`` leaves it optional, so sources written before it
    keep working)."""
    known = _REASONING_AWARE.get(type(source))
    if known is None:
        import inspect  # deferred: only calls with reasoning tokens ask

        try:
            parameters = inspect.signature(source.cost_usd).parameters
        except (TypeError, ValueError):
            parameters = {}  # type: ignore[assignment]
        known = "reasoning_tokens" in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
        )
        _REASONING_AWARE[type(source)] = known
    return known
