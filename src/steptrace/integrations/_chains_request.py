"""One model request as a framework integration sees it: pre-flight, span,
``LlmCall`` event and usage, for the LiteLLM and LangChain integrations.

Frameworks report a request in two halves: "about to send" (a wrapped
``litellm.completion`` before it calls through, LangChain's
``on_chat_model_start``) and later "this is what it used" (the response, the
end of a stream, ``on_llm_end``), sometimes from another context than the one
that started it: exactly what ``steptrace.reserve`` and its ``Hold`` are
for. ``ModelRequest.start`` reserves the request's worst case on every budget
in force (raising ``BudgetExhausted`` before anything is sent; concurrent
requests see each other's holds) and opens its ``chat <model>`` span with
``tracing.open_span``, so the span never becomes the caller's current span
while the framework works. ``finish`` describes the response on the
span, emits ``LlmCall`` under it and settles the hold with the usage, which
lands in the step that made the call wherever the second half arrives;
``fail`` ends the span as failed (its message redacted) and releases the
hold.

Usage (``TokenCounts``) follows steptrace's convention: ``input_tokens`` counts
every prompt token, cached ones included; cache reads and writes are parts of it.
The request is concluded and priced once by ``steptrace.llm.conclusion``.
Without reported usage (a stream that never said), the pre-flight input
estimate and the output characters are recorded, marked
``steptrace.usage_estimated`` on the span.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

from .. import Hold, reserve, tracing
from .._redact import redact
from ..budget import PriceSource
from ..llm.conclusion import Concluded, TokenCounts, arecord, conclude, record
from ..spans import Span, SpanKind, end_span
from ..tracing import _open

__all__ = ["CHARS_PER_TOKEN", "ModelRequest", "TokenCounts", "estimate_tokens", "new_counts"]

CHARS_PER_TOKEN = 3
"""Output estimate when no usage is reported: ~4 characters a token; 3 errs high."""

new_counts = tuple.__new__
"""``new_counts(TokenCounts, (input, output, cache_read, cache_write,
reasoning))``: the integrations read a response's usage into one on every
request, and the named tuple's own ``__new__`` is a Python function costing
several times this."""


def estimate_tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


class ModelRequest:
    """One model request between its pre-flight and its record."""

    __slots__ = (
        "_context",
        "_done",
        "_hold",
        "estimate",
        "model",
        "price",
        "span",
        "started",
    )

    def __init__(
        self,
        model: str,
        estimate: int,
        price: PriceSource | None,
        hold: Hold,
        request_span: Span,
    ) -> None:
        self._hold = hold
        self.model = model
        self.estimate = estimate
        self.price = price
        # The event is filed under the request's span wherever the response
        # arrives; it is still shown to the collectors (collect_events) of the
        # context that made the request, as if it had been emitted there.
        # Until a collector has existed no context has one, so there is
        # nothing to copy (``finish`` then concludes in an empty context).
        self._context = contextvars.copy_context() if tracing._collecting else None
        self.span = request_span
        self._done = False
        self.started = time.perf_counter()

    @classmethod
    def start(
        cls,
        model: str,
        *,
        system: str,
        estimated_input_tokens: int,
        max_output_tokens: int,
        request_model: str | None = None,
        price: PriceSource | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> ModelRequest:
        """Pre-flight the request (raises when it cannot fit) and open its span.

        ``model`` is the id recorded and priced (a provider prefix as
        ``openai:``); ``request_model`` the name the framework was given (on the
        span only; default ``model``)."""
        hold = reserve(model, estimated_input_tokens, max_output_tokens, price=price)
        metadata: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": system,
            "gen_ai.request.model": request_model or model,
            "gen_ai.request.max_tokens": max_output_tokens,
        }
        if attributes:
            metadata.update(attributes)
        try:
            # open_span without its argument checks: the name and kind are ours.
            request_span = _open(f"chat {model}", SpanKind.LLM_CALL, metadata)
        except BaseException:
            hold.release()
            raise
        return cls(model, estimated_input_tokens, price, hold, request_span)

    def _conclude(
        self,
        usage: TokenCounts | None,
        response_id: str | None,
        response_model: str | None,
        finish_reasons: list[str],
        output_chars: int,
        cost_usd: float | None,
    ) -> Concluded:
        """``_conclude_here`` in the context that made the request, when an
        event collector may be listening there (an empty context had none)."""
        context = self._context
        if context is None and not tracing._collecting:
            return self._conclude_here(
                usage, response_id, response_model, finish_reasons, output_chars, cost_usd
            )
        return (context or contextvars.Context()).run(
            self._conclude_here,
            usage,
            response_id,
            response_model,
            finish_reasons,
            output_chars,
            cost_usd,
        )

    def _conclude_here(
        self,
        usage: TokenCounts | None,
        response_id: str | None,
        response_model: str | None,
        finish_reasons: list[str],
        output_chars: int,
        cost_usd: float | None,
    ) -> Concluded:
        return conclude(
            self.span.metadata,
            model=self.model,
            counts=usage or TokenCounts(self.estimate, estimate_tokens(output_chars)),
            duration_ms=round((time.perf_counter() - self.started) * 1000),
            response_id=response_id,
            response_model=response_model,
            finish_reasons=finish_reasons,
            estimated=usage is None,
            cost_usd=cost_usd,
            price=self.price,
            span=self.span,
        )

    def finish(
        self,
        usage: TokenCounts | None,
        *,
        response_id: str | None = None,
        response_model: str | None = None,
        finish_reasons: list[str] | None = None,
        output_chars: int = 0,
        cost_usd: float | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Record the response (once; later calls do nothing). Raises
        ``BudgetExhausted``/``PricingUnknown`` as ``record_llm_usage`` does.
        ``error``: the response broke off (a stream that failed midway): what
        was received is recorded and the span ends as failed."""
        if self._done:
            return
        self._done = True
        try:
            concluded = self._conclude(
                usage, response_id, response_model, finish_reasons or [], output_chars, cost_usd
            )
        except BaseException:
            self._hold.release()
            raise
        finally:
            end_span(self.span, None if error is None else _describe(error))
        record(concluded, self._hold)

    async def afinish(
        self,
        usage: TokenCounts | None,
        *,
        response_id: str | None = None,
        response_model: str | None = None,
        finish_reasons: list[str] | None = None,
        output_chars: int = 0,
        cost_usd: float | None = None,
    ) -> None:
        """``finish`` for async code: async threshold hooks run on this loop."""
        if self._done:
            return
        self._done = True
        try:
            concluded = self._conclude(
                usage, response_id, response_model, finish_reasons or [], output_chars, cost_usd
            )
        except BaseException:
            self._hold.release()
            raise
        finally:
            end_span(self.span)
        await arecord(concluded, self._hold)

    def fail(self, error: BaseException | str) -> None:
        """The request failed or was abandoned: end its span as failed (once)."""
        if self._done:
            return
        self._done = True
        try:
            end_span(self.span, error if isinstance(error, str) else _describe(error))
        finally:
            self._hold.release()


def _describe(error: BaseException) -> str:
    """The error for a span: its type and its message with credentials redacted."""
    text = redact(str(error))
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
