"""What every provider does around one SDK request: its deadline, and answers
that are not what the API promises.

Deadline: a provider's ``timeout`` is an overall deadline per request, from
sending it to the last byte of the answer; the SDK's own timeout restarts with
every byte received, so a server that sends a keep-alive byte a second would
hold a call forever. Async requests run under ``asyncio.timeout``, which
cancels the request (and closes its connection) at the deadline. A sync
request runs in a request thread (a ``DaemonPool`` of its own, as many as
there are callers waiting) while the caller waits for it, or for each chunk
of a stream, until the deadline; past it the caller gets ``DeadlineExceeded``
at once and the thread is abandoned, ending at its next chunk or the SDK's
read timeout. At most ``MAX_ABANDONED_REQUESTS`` abandoned requests may still
be running; past that, new sync requests are refused (``PoolExhausted``).

Malformed answers: ``parsed`` runs the translation of an SDK object into an
``LlmResponse`` and turns the errors that broken data raises there (a body
that is HTML, ``null`` or an array, a field of the wrong type) into
``Malformed``; ``malformed`` makes the ``ProviderUnavailable`` (retryable) the
provider raises for it, or for a body the SDK could not decode as JSON. The
usage estimate for answers without usable counts lives here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import math
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from ..._redact import redact
from ...errors import ProviderTimeout, ProviderUnavailable
from .._threads import DaemonPool, PoolExhausted
from .._types import LlmRequest, ToolCall

__all__ = [
    "MAX_ABANDONED_REQUESTS",
    "UNDECODABLE",
    "DeadlineExceeded",
    "Malformed",
    "PoolExhausted",
    "call_sync",
    "check_timeout",
    "deadline",
    "estimate_input",
    "estimate_output",
    "iterate_sync",
    "malformed",
    "parsed",
    "timed_out",
]

T = TypeVar("T")

MAX_ABANDONED_REQUESTS = 64
"""Sync requests abandoned at their deadline that may still be running."""

ESTIMATE_CHARS_PER_TOKEN = 3
"""For answers without usable usage: a conservative ~3 characters a token."""

_REQUEST_THREADS = DaemonPool(
    "steptrace-request", max_workers=None, max_abandoned=MAX_ABANDONED_REQUESTS
)


class DeadlineExceeded(Exception):
    """The request's overall deadline passed."""


class Malformed(Exception):
    """The answer is not shaped as the API promises."""


def check_timeout(owner: str, timeout: float) -> float:
    """``timeout`` as a positive finite number of seconds, or an error naming ``owner``."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{owner}: timeout must be a number of seconds, got {timeout!r}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"{owner}: timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def timed_out(provider: str, model: str, timeout: float) -> ProviderTimeout:
    return ProviderTimeout(
        f"{provider}: no complete answer within the {timeout:g} s deadline",
        provider=provider,
        model=model,
    )


def malformed(provider: str, model: str, error: BaseException) -> ProviderUnavailable:
    """The error for an answer that is not what the API promises (retryable)."""
    detail = redact(str(error))[:200]
    if not isinstance(error, Malformed):
        detail = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    return ProviderUnavailable(
        f"{provider}: malformed answer ({detail})", provider=provider, model=model
    )


_BROKEN_DATA = (AttributeError, TypeError, KeyError, IndexError, ValueError, RecursionError)

UNDECODABLE = (Malformed, json.JSONDecodeError, UnicodeDecodeError, RecursionError)
"""What a request raises for an answer that does not decode (the SDK's
``JSONDecodeError`` or ``UnicodeDecodeError``, JSON nested too deeply) or that
``parsed`` found malformed: the provider raises ``malformed(...)`` for it."""


def parsed(translate: Callable[..., T], *args: Any) -> T:
    """``translate(*args)``, with the errors broken data raises as ``Malformed``."""
    try:
        return translate(*args)
    except _BROKEN_DATA as exc:
        raise Malformed(f"{type(exc).__name__}: {exc}") from None


def estimate_input(request: LlmRequest) -> int:
    """A conservative prompt estimate: ~3 characters a token, 4 a message."""
    chars = sum(len(m.content) for m in request.messages)
    return math.ceil(chars / ESTIMATE_CHARS_PER_TOKEN) + 4 * len(request.messages)


def estimate_output(text: str, calls: Iterable[ToolCall]) -> int:
    """A conservative estimate of an answer's tokens."""
    chars = len(text) + sum(len(c.name) + len(c.raw_arguments) for c in calls)
    return math.ceil(chars / ESTIMATE_CHARS_PER_TOKEN)


# -- sync requests in request threads --------------------------------------------------


def call_sync(fn: Callable[[], T], timeout: float) -> T:
    """``fn()`` in a request thread; raises ``DeadlineExceeded`` after ``timeout`` s."""
    context = contextvars.copy_context()
    job = _REQUEST_THREADS.submit(functools.partial(context.run, fn))
    try:
        if not job.wait(timeout):
            raise DeadlineExceeded
    finally:
        _REQUEST_THREADS.abandon(job)  # a no-op once it is done
    return job.outcome()


_END = object()


def iterate_sync(open_stream: Callable[[], Any], timeout: float) -> Iterator[Any]:
    """The items of the stream ``open_stream()`` opens, read in a request
    thread and handed over one by one; raises ``DeadlineExceeded`` when the
    whole stream has not arrived within ``timeout`` s. Stopping early (the
    caller's error, ``close()``) stops the reader at its next item."""
    items: queue.SimpleQueue[Any] = queue.SimpleQueue()
    stop = threading.Event()

    def read() -> None:
        opened: AbstractContextManager[Iterable[Any]] = open_stream()
        with opened as stream:
            for item in stream:
                if stop.is_set():
                    return
                items.put(item)

    context = contextvars.copy_context()
    job = _REQUEST_THREADS.submit(functools.partial(context.run, read), lambda _: items.put(_END))
    end = time.monotonic() + timeout
    try:
        while True:
            try:
                item = items.get(timeout=max(end - time.monotonic(), 0.0))
            except queue.Empty:
                raise DeadlineExceeded from None
            if item is _END:
                job.outcome()  # the reader's error, if it failed
                return
            yield item
    finally:
        stop.set()
        _REQUEST_THREADS.abandon(job)


@contextlib.asynccontextmanager
async def deadline(timeout: float) -> AsyncIterator[None]:
    """Cancel the block after ``timeout`` s and raise ``DeadlineExceeded``."""
    try:
        async with asyncio.timeout(timeout) as scope:
            yield
    except TimeoutError:
        if scope.expired():
            raise DeadlineExceeded from None
        raise
