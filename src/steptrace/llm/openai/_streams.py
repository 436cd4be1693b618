"""The stream side of ``instrument_openai``: wrappers that account a stream at its end.

This module owns a ``stream=True`` call from the moment ``instrument_openai``
hands it over: ``start_stream`` / ``astart_stream`` open the call's span in a
copy of the caller's context and send the request; ``InstrumentedStream`` and
``AsyncInstrumentedStream`` pass every chunk through unchanged while
``_StreamState`` watches them, and account the stream once, when it ends, is
closed early, breaks, or is garbage-collected. It also owns ``fail_span``, which both
the stream and the whole-response paths use. It imports nothing from
``instrument_openai``: the call it is handed only has to look like a
``StreamCall``. Imported only by ``instrument``, after that module has
checked that the ``openai`` SDK is installed.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import Any, Protocol

import openai

from ... import _context
from ..._accounting import release_budget_hold
from ..._config import report_observer_failure
from ..._redact import redact
from ...errors import BudgetExhausted, PricingUnknown
from ...spans import Span, end_span
from ...tracing import span as _span
from ..conclusion import Concluded, arecord, record

__all__ = [
    "AsyncInstrumentedStream",
    "InstrumentedStream",
    "StreamCall",
    "astart_stream",
    "fail_span",
    "start_stream",
]


class StreamCall(Protocol):
    """What a stream needs of the instrumented call that started it."""

    @property
    def kwargs(self) -> dict[str, Any]:
        """The arguments the request is sent with."""

    def open_span(self) -> _span:
        """The call's ``chat <model>`` span, not yet entered."""

    def conclude(
        self,
        request_span: Span,
        *,
        usage: Any,
        response_id: str | None,
        response_model: str | None,
        finish_reasons: list[str],
        output_chars: int,
    ) -> Concluded:
        """Conclude the call on its span (``conclusion.conclude``)."""


def fail_span(request_span: Span, error: BaseException) -> None:
    """End the span as failed, with the error's message redacted, and free the
    call's shared-budget hold (the call will never report its usage)."""
    release_budget_hold()
    text = redact(str(error))
    end_span(request_span, f"{type(error).__name__}: {text}" if text else type(error).__name__)


def start_stream(call: StreamCall, original: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Send the streaming request; an ``InstrumentedStream`` over the SDK's
    stream (anything else is returned as it is, marked unaccounted)."""
    # The span is opened, and later closed, in a copy of the caller's context:
    # it never becomes the caller's current span while the caller iterates, and
    # the accounting goes to the step that made the call.
    context = contextvars.copy_context()
    span_manager = call.open_span()
    request_span = context.run(span_manager.__enter__)
    try:
        raw = original(*args, **call.kwargs)
    except BaseException as error:
        fail_span(request_span, error)
        context.run(span_manager.__exit__, None, None, None)
        raise
    if not isinstance(raw, openai.Stream):
        request_span.set("steptrace.unaccounted", type(raw).__name__)
        context.run(span_manager.__exit__, None, None, None)
        return raw
    return InstrumentedStream(raw, _StreamState(call, context, span_manager, request_span))


async def astart_stream(
    call: StreamCall, original: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
) -> Any:
    """``start_stream`` for an ``AsyncOpenAI`` client."""
    context = contextvars.copy_context()
    span_manager = call.open_span()
    request_span = context.run(span_manager.__enter__)
    try:
        raw = await original(*args, **call.kwargs)
    except BaseException as error:
        fail_span(request_span, error)
        context.run(span_manager.__exit__, None, None, None)
        raise
    if not isinstance(raw, openai.AsyncStream):
        request_span.set("steptrace.unaccounted", type(raw).__name__)
        context.run(span_manager.__exit__, None, None, None)
        return raw
    return AsyncInstrumentedStream(raw, _StreamState(call, context, span_manager, request_span))


class _StreamState:
    """What a stream has shown so far, and the one-time accounting at its end."""

    __slots__ = (
        "call",
        "context",
        "done",
        "finish_reasons",
        "model",
        "origin",
        "output_chars",
        "response_id",
        "span",
        "span_manager",
        "usage",
    )

    def __init__(
        self,
        call: StreamCall,
        context: contextvars.Context,
        span_manager: _span,
        request_span: Span,
    ) -> None:
        self.call = call
        self.context = context
        self.span_manager = span_manager
        self.span = request_span
        self.origin = _context.get_frame()
        self.done = False
        self.usage: Any = None
        self.response_id: str | None = None
        self.model: str | None = None
        self.finish_reasons: dict[int, str] = {}
        self.output_chars = 0

    def observe(self, chunk: Any) -> None:
        try:
            self.response_id = self.response_id or chunk.id
            self.model = self.model or chunk.model
            if chunk.usage is not None:
                self.usage = chunk.usage
            for choice in chunk.choices:
                delta = choice.delta
                self.output_chars += len(delta.content or "") + len(delta.refusal or "")
                for tool_call in delta.tool_calls or ():
                    function = tool_call.function
                    if function is not None:
                        self.output_chars += len(function.name or "")
                        self.output_chars += len(function.arguments or "")
                if choice.finish_reason:
                    self.finish_reasons[choice.index] = choice.finish_reason
        except Exception as exc:
            report_observer_failure("instrument_openai stream accounting", exc, self.span)

    def _conclude(self, error: BaseException | None, early: bool) -> Concluded | None:
        """In the call's context: describe the span, emit the event, end the span."""
        try:
            if early:
                self.span.set("steptrace.stream_closed_early", True)
            return self.call.conclude(
                self.span,
                usage=self.usage,
                response_id=self.response_id,
                response_model=self.model,
                finish_reasons=[self.finish_reasons[i] for i in sorted(self.finish_reasons)],
                output_chars=self.output_chars,
            )
        except Exception as exc:
            report_observer_failure("instrument_openai stream accounting", exc, self.span)
            return None
        finally:
            if error is not None:
                fail_span(self.span, error)
            self.span_manager.__exit__(None, None, None)

    def finish(
        self, error: BaseException | None = None, *, early: bool = False, quiet: bool = False
    ) -> None:
        """Account the stream once. ``quiet``: a budget error is not raised (the
        stream is being finalized where nobody can catch it)."""
        if self.done:
            return
        self.done = True
        usage = self.context.run(self._conclude, error, early)
        if usage is None:
            return
        try:
            if self._origin_open():
                self.context.run(record, usage)
            else:
                record(usage)
        except (BudgetExhausted, PricingUnknown):
            if not quiet:
                raise

    def _origin_open(self) -> bool:
        """Whether the step (or span) that made the call is still running. If it
        has ended, the usage goes to the scope where the stream ends instead, so
        that ledger rows still add up to the run's total."""
        return self.origin is None or self.origin.end_ns is None

    async def afinish(
        self, error: BaseException | None = None, *, early: bool = False, quiet: bool = False
    ) -> None:
        """``finish`` for async streams: async threshold hooks run on this loop."""
        if self.done:
            return
        self.done = True
        usage = self.context.run(self._conclude, error, early)
        if usage is None:
            return
        loop = asyncio.get_running_loop()
        context = self.context if self._origin_open() else None
        try:
            await loop.create_task(arecord(usage), context=context)
        except (BudgetExhausted, PricingUnknown):
            if not quiet:
                raise


class InstrumentedStream:
    """A sync chat-completion stream that accounts for itself when it ends.

    Iterates the SDK ``Stream``'s chunks unchanged; ``close()``, ``response``
    and use as a context manager work as on the SDK stream."""

    def __init__(self, stream: openai.Stream[Any], state: _StreamState) -> None:
        self._stream = stream
        self._state = state
        self._chunks = self._iterate()

    def _iterate(self) -> Generator[Any, None, None]:
        state = self._state
        try:
            for chunk in self._stream:
                state.observe(chunk)
                yield chunk
        except GeneratorExit:
            state.finish(early=True, quiet=True)
            raise
        except BaseException as error:
            state.finish(error, quiet=True)  # the stream's own error comes first
            raise
        state.finish()

    def __iter__(self) -> Iterator[Any]:
        return self._chunks

    def __next__(self) -> Any:
        return next(self._chunks)

    @property
    def response(self) -> Any:
        return self._stream.response

    def close(self) -> None:
        """Close the response; a stream not read to its end is accounted now."""
        self._stream.close()
        self._state.finish(early=True)
        self._chunks.close()

    def __enter__(self) -> InstrumentedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_stream", "_state", "_chunks"):
            raise AttributeError(name)
        return getattr(self._stream, name)


class AsyncInstrumentedStream:
    """An async chat-completion stream that accounts for itself when it ends."""

    def __init__(self, stream: openai.AsyncStream[Any], state: _StreamState) -> None:
        self._stream = stream
        self._state = state
        self._chunks = self._iterate()

    async def _iterate(self) -> AsyncGenerator[Any, None]:
        state = self._state
        try:
            async for chunk in self._stream:
                state.observe(chunk)
                yield chunk
        except GeneratorExit:
            state.finish(early=True, quiet=True)
            raise
        except BaseException as error:
            await state.afinish(error, quiet=True)  # the stream's own error comes first
            raise
        await state.afinish()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._chunks

    async def __anext__(self) -> Any:
        return await self._chunks.__anext__()

    @property
    def response(self) -> Any:
        return self._stream.response

    async def close(self) -> None:
        """Close the response; a stream not read to its end is accounted now."""
        await self._stream.close()
        await self._state.afinish(early=True)
        await self._chunks.aclose()

    async def aclose(self) -> None:
        await self.close()

    async def __aenter__(self) -> AsyncInstrumentedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_stream", "_state", "_chunks"):
            raise AttributeError(name)
        return getattr(self._stream, name)
