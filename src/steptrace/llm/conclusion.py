"""The conclusion of a model call, however it was made: priced once, described
on its span, evented, recorded.

Every way steptrace sees a model call ends here: ``llm_call`` through a
provider, a client wrapped by ``instrument()``, and each framework
integration. ``conclude`` prices the call once (``price_call``: the configured
source, or the default table found on first need, or a ``cost_usd`` the caller
was given), writes the response's OpenTelemetry GenAI attributes and
steptrace's figures into the request span's metadata, and emits the
``LlmCall`` event under the current span. ``record`` (``arecord`` for async
code, whose threshold hooks are awaited) then records the usage in the scope
of the call's pre-flight ``Hold`` (or this context's pending ``check_budget``
hold), without asking the price source again. The caller makes the record
once the request's span has ended, so a budget error raised by the record is
never the request's own error.

A price source that fails (raises, or answers something that is not a price)
does not lose the call: it is recorded with its cost unknown, and the
failure is raised after the record, as ``record_llm_usage`` does.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .._accounting import arecord_llm_usage, record_llm_usage
from .._pricing import price_call
from ..events import LlmCall
from ..tracing import emit_event

if TYPE_CHECKING:
    from .._accounting import Hold
    from ..budget import PriceSource
    from ..spans import Span

__all__ = ["Concluded", "TokenCounts", "arecord", "conclude", "record"]


class TokenCounts(NamedTuple):
    """A response's usage as the provider counted it. ``input_tokens`` counts
    every prompt token, cached ones included (cache reads and writes are parts
    of it); ``reasoning_tokens`` are part of ``output_tokens``."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class Concluded(NamedTuple):
    """A concluded call, ready to be recorded."""

    model: str
    counts: TokenCounts
    cost_usd: float | None
    """``None``: no price is known (recorded as cost unknown, never $0)."""
    duration_ms: int
    price_error: Exception | None = None


def conclude(
    metadata: dict[str, Any],
    *,
    model: str,
    counts: TokenCounts,
    duration_ms: int,
    response_id: str | None,
    response_model: str | None = None,
    finish_reasons: Sequence[str | None] = (),
    estimated: bool = False,
    iteration: int = 0,
    cost_usd: float | None = None,
    price: PriceSource | None = None,
    span: Span | None = None,
) -> Concluded:
    """Price the call once (unless ``cost_usd`` is given), describe it in
    ``metadata`` (the request span's), emit ``LlmCall``, and return what
    ``record`` needs. ``estimated``: the counts are steptrace's estimate (the
    provider reported none). ``price``: a source for this call instead of the
    configured one. ``span``: the span to file the event under, when it is not
    this context's current one (a span from ``tracing.open_span``)."""
    error: Exception | None = None
    if cost_usd is None:
        try:
            cost_usd = price_call(
                model,
                counts.input_tokens,
                counts.output_tokens,
                counts.cache_read_tokens,
                counts.cache_write_tokens,
                reasoning_tokens=counts.reasoning_tokens,
                source=price,
            )
        except Exception as exc:  # recorded as cost unknown, raised after the record
            error = exc
    metadata["gen_ai.response.model"] = response_model or model
    metadata["gen_ai.response.id"] = response_id
    if len(finish_reasons) == 1:  # the common case, without a comprehension's call
        reasons = [finish_reasons[0] or "unknown"]
    else:
        reasons = [reason or "unknown" for reason in finish_reasons] or ["unknown"]
    metadata["gen_ai.response.finish_reasons"] = reasons
    metadata["gen_ai.usage.input_tokens"] = counts.input_tokens
    metadata["gen_ai.usage.output_tokens"] = counts.output_tokens
    metadata["steptrace.cache_read_tokens"] = counts.cache_read_tokens
    metadata["steptrace.cache_write_tokens"] = counts.cache_write_tokens
    metadata["steptrace.reasoning_tokens"] = counts.reasoning_tokens
    metadata["steptrace.cost_usd"] = cost_usd
    if estimated:
        metadata["steptrace.usage_estimated"] = True
    emit_event(
        LlmCall(
            call_id=response_id or uuid.uuid4().hex[:16],
            model=model,
            input_tokens=counts.input_tokens,
            output_tokens=counts.output_tokens,
            cache_tokens=counts.cache_read_tokens,
            duration_ms=duration_ms,
            iteration=iteration,
            estimated=estimated,
        ),
        span=span,
    )
    return Concluded(model, counts, cost_usd, duration_ms, error)


def record(concluded: Concluded, hold: Hold | None = None) -> None:
    """Record the concluded call in ``hold``'s scope (default: this context's
    pending hold, else the active scope), settling the hold. Raises as
    ``record_llm_usage`` does, then a price source's failure."""
    counts = concluded.counts
    record_llm_usage(
        concluded.model,
        counts.input_tokens,
        counts.output_tokens,
        cost_usd=concluded.cost_usd,
        duration_ms=concluded.duration_ms,
        cache_tokens=counts.cache_read_tokens,
        cache_write_tokens=counts.cache_write_tokens,
        _hold=hold,
        _priced=True,
    )
    if concluded.price_error is not None:
        raise concluded.price_error


async def arecord(concluded: Concluded, hold: Hold | None = None) -> None:
    """``record`` for async code: async threshold hooks are awaited here."""
    counts = concluded.counts
    await arecord_llm_usage(
        concluded.model,
        counts.input_tokens,
        counts.output_tokens,
        cost_usd=concluded.cost_usd,
        duration_ms=concluded.duration_ms,
        cache_tokens=counts.cache_read_tokens,
        cache_write_tokens=counts.cache_write_tokens,
        _hold=hold,
        _priced=True,
    )
    if concluded.price_error is not None:
        raise concluded.price_error
