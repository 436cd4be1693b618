"""One model request as a framework integration sees it: pre-flight, span,
``LlmCall`` event and usage, for the LiteLLM and LangChain integrations.

Frameworks report a request in two halves: "about to send" (a wrapped
``litellm.completion`` before it calls through, LangChain's
``on_chat_model_start``) and later "this is what it used" (the response, the
end of a stream, ``on_llm_end``), sometimes from another context than the one
that started it: exactly what ``steptrace.reserve`` and its ``Hold`` are
for. ``ModelRequest.start`` reserves the request's worst case on every budget
in force (raising ``BudgetExhausted`` before anything is sent; concurrent
requests see each other's holds) and opens its ``chat <model>`` span in a
copy of the caller's context, so the span never becomes the caller's current
span while the framework works. ``finish`` describes the response on the
span, emits ``LlmCall`` under it and settles the hold with the usage, which
lands in the step that made the call wherever the second half arrives;
``fail`` ends the span as failed (its message redacted) and releases the
hold.

Usage follows steptrace's convention: ``input_tokens`` counts every prompt
token, cached ones included; ``cache_read``/``cache_write`` are parts of it.
Without reported usage (a stream that never said), the pre-flight input
estimate and the output characters are recorded, marked
``steptrace.usage_estimated`` on the span.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .. import Hold, reserve
from .._config import settings
from .._redact import redact
from ..budget import PriceSource
from ..events import LlmCall
from ..spans import Span, SpanKind, end_span
from ..tracing import emit_event
from ..tracing import span as _span

__all__ = ["CHARS_PER_TOKEN", "ModelRequest", "ReportedUsage", "estimate_tokens"]

CHARS_PER_TOKEN = 3
"""Output estimate when no usage is reported: ~4 characters a token; 3 errs high."""

_FINISHED = "steptrace_request_finished"


def estimate_tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class ReportedUsage:
    """Token counts a framework reported for one request."""

    input_tokens: int
    output_tokens: int
    cache_read: int = 0
    cache_write: int = 0


class ModelRequest:
    """One model request between its pre-flight and its record."""

    __slots__ = (
        "_context",
        "_done",
        "_hold",
        "_manager",
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
        context: contextvars.Context,
        manager: _span,
        request_span: Span,
    ) -> None:
        self._hold = hold
        self.model = model
        self.estimate = estimate
        self.price = price
        self._context = context
        self._manager = manager
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
            context = contextvars.copy_context()
            manager = _span(f"chat {model}", kind=SpanKind.LLM_CALL, **metadata)
            request_span = context.run(manager.__enter__)
        except BaseException:
            hold.release()
            raise
        return cls(model, estimated_input_tokens, price, hold, context, manager, request_span)

    def _conclude(
        self,
        usage: ReportedUsage | None,
        response_id: str | None,
        response_model: str | None,
        finish_reasons: list[str],
        output_chars: int,
        cost_usd: float | None,
    ) -> dict[str, Any]:
        duration_ms = round((time.perf_counter() - self.started) * 1000)
        request_span = self.span
        if usage is None:
            usage = ReportedUsage(self.estimate, estimate_tokens(output_chars))
            request_span.set("steptrace.usage_estimated", True)
        if cost_usd is None:
            source = self.price or settings.price_source
            cost_usd = (
                None
                if source is None
                else source.cost_usd(
                    self.model,
                    usage.input_tokens,
                    usage.output_tokens,
                    cache_read_tokens=usage.cache_read,
                    cache_write_tokens=usage.cache_write,
                )
            )
        request_span.metadata.update(
            {
                "gen_ai.response.model": response_model or self.model,
                "gen_ai.response.id": response_id,
                "gen_ai.response.finish_reasons": finish_reasons or ["unknown"],
                "gen_ai.usage.input_tokens": usage.input_tokens,
                "gen_ai.usage.output_tokens": usage.output_tokens,
                "steptrace.cache_read_tokens": usage.cache_read,
                "steptrace.cache_write_tokens": usage.cache_write,
                "steptrace.cost_usd": cost_usd,
            }
        )
        emit_event(
            LlmCall(
                call_id=response_id or uuid.uuid4().hex[:16],
                model=self.model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_tokens=usage.cache_read,
                duration_ms=duration_ms,
                iteration=0,
            )
        )
        return {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cost_usd": cost_usd,
            "duration_ms": duration_ms,
            "cache_tokens": usage.cache_read,
            "cache_write_tokens": usage.cache_write,
        }

    def _claim(self) -> bool:
        if self._done:
            return False
        self._done = True
        return True

    def finish(
        self,
        usage: ReportedUsage | None,
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
        if not self._claim():
            return
        context = self._context
        try:
            record = context.run(
                self._conclude,
                usage,
                response_id,
                response_model,
                finish_reasons or [],
                output_chars,
                cost_usd,
            )
        except BaseException:
            self._hold.release()
            raise
        finally:
            if error is not None:
                end_span(self.span, _describe(error))
            context.run(self._manager.__exit__, None, None, None)
        self._hold.settle(**record)

    async def afinish(
        self,
        usage: ReportedUsage | None,
        *,
        response_id: str | None = None,
        response_model: str | None = None,
        finish_reasons: list[str] | None = None,
        output_chars: int = 0,
        cost_usd: float | None = None,
    ) -> None:
        """``finish`` for async code: async threshold hooks run on this loop."""
        if not self._claim():
            return
        context = self._context
        try:
            record = context.run(
                self._conclude,
                usage,
                response_id,
                response_model,
                finish_reasons or [],
                output_chars,
                cost_usd,
            )
        except BaseException:
            self._hold.release()
            raise
        finally:
            context.run(self._manager.__exit__, None, None, None)
        await self._hold.asettle(**record)

    def fail(self, error: BaseException | str) -> None:
        """The request failed or was abandoned: end its span as failed (once)."""
        if not self._claim():
            return
        try:
            end_span(self.span, error if isinstance(error, str) else _describe(error))
            self._context.run(self._manager.__exit__, None, None, None)
        finally:
            self._hold.release()


def _describe(error: BaseException) -> str:
    """The error for a span: its type and its message with credentials redacted."""
    text = redact(str(error))
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
