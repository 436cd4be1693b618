"""The stream side of ``instrument_anthropic``: wrappers that account a stream at its end.

This module owns a streamed Messages call once ``instrument`` has started it:
``InstrumentedStream`` and ``AsyncInstrumentedStream`` (``stream=True``) and
the ``messages.stream(...)`` manager pass every event through unchanged while
the call watches them, and account the call once, when the stream ends, is
closed, or fails, with the usage known at that point. ``record_usage`` /
``arecord_usage`` record a concluded call; while another error is
propagating, a budget error raised by the record (the usage is in the ledger)
gives way to it. It imports nothing from ``instrument``: the call it is handed
only has to look like a ``StreamCall``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Protocol

from ...errors import BudgetExhausted, PricingUnknown
from ..conclusion import Concluded, arecord, record

__all__ = [
    "AsyncInstrumentedStream",
    "InstrumentedStream",
    "StreamCall",
    "StreamManager",
    "arecord_usage",
    "record_usage",
]


class StreamCall(Protocol):
    """What a stream needs of the instrumented call that started it."""

    def take_event(self, event: Any) -> None:
        """Watch one stream event (message start, deltas with usage)."""

    def take_message(self, message: Any) -> None:
        """Take the whole message (id, model, stop reason, usage)."""

    def account(self, error: BaseException | None = None) -> Concluded | None:
        """Conclude the call and emit its span; None when no response was seen."""


def record_usage(usage: Concluded | None, error: BaseException | None) -> None:
    """Record the usage; while another error is propagating, a budget error
    raised by the record (the usage is in the ledger) gives way to it."""
    if usage is None:
        return
    try:
        record(usage)
    except (BudgetExhausted, PricingUnknown):
        if error is None or isinstance(error, GeneratorExit):
            raise


async def arecord_usage(usage: Concluded | None, error: BaseException | None) -> None:
    if usage is None:
        return
    try:
        await arecord(usage)
    except (BudgetExhausted, PricingUnknown):
        if error is None or isinstance(error, GeneratorExit):
            raise


class InstrumentedStream:
    """A synchronous SDK stream that accounts its call when it ends.

    Iterates the SDK's events unchanged; other attributes (``response``, ...)
    are the wrapped stream's. ``close()`` and leaving a ``with`` block account
    the usage seen so far."""

    def __init__(self, stream: Any, call: StreamCall) -> None:
        self._stream = stream
        self._call = call
        self._done = False

    def _finish(self, error: BaseException | None) -> None:
        if not self._done:
            self._done = True
            record_usage(self._call.account(error), error)

    def __iter__(self) -> InstrumentedStream:
        return self

    def __next__(self) -> Any:
        try:
            event = self._stream.__next__()
        except StopIteration:
            self._finish(None)
            raise
        except BaseException as error:
            self._finish(error)
            raise
        self._call.take_event(event)
        return event

    def close(self) -> None:
        self._stream.close()
        self._finish(None)

    def __enter__(self) -> InstrumentedStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stream.close()
        self._finish(exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class AsyncInstrumentedStream:
    """The asynchronous twin of ``InstrumentedStream`` (``await stream.close()``)."""

    def __init__(self, stream: Any, call: StreamCall) -> None:
        self._stream = stream
        self._call = call
        self._done = False

    async def _finish(self, error: BaseException | None) -> None:
        if not self._done:
            self._done = True
            await arecord_usage(self._call.account(error), error)

    def __aiter__(self) -> AsyncInstrumentedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            event = await self._stream.__anext__()
        except StopAsyncIteration:
            await self._finish(None)
            raise
        except BaseException as error:
            await self._finish(error)
            raise
        self._call.take_event(event)
        return event

    async def close(self) -> None:
        await self._stream.close()
        await self._finish(None)

    async def __aenter__(self) -> AsyncInstrumentedStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stream.close()
        await self._finish(exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _snapshot(message_stream: Any) -> Any:
    """The SDK ``MessageStream``'s accumulated message, None before ``message_start``."""
    try:
        return message_stream.current_message_snapshot
    except AssertionError:
        return None


class StreamManager:
    """Wraps ``messages.stream(...)``'s manager: the request is made on entry,
    the call accounted on exit from the stream's accumulated message."""

    def __init__(self, manager: Any, call: StreamCall) -> None:
        self._manager = manager
        self._call = call
        self._stream: Any = None

    def __enter__(self) -> Any:
        try:
            self._stream = self._manager.__enter__()
        except BaseException as error:
            record_usage(self._call.account(error), error)
            raise
        return self._stream

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._manager.__exit__(exc_type, exc, tb)
        snapshot = _snapshot(self._stream)
        if snapshot is not None:
            self._call.take_message(snapshot)
        record_usage(self._call.account(exc), exc)

    async def __aenter__(self) -> Any:
        try:
            self._stream = await self._manager.__aenter__()
        except BaseException as error:
            await arecord_usage(self._call.account(error), error)
            raise
        return self._stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._manager.__aexit__(exc_type, exc, tb)
        snapshot = _snapshot(self._stream)
        if snapshot is not None:
            self._call.take_message(snapshot)
        await arecord_usage(self._call.account(exc), exc)
