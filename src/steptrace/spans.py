"""The span model and the processors that receive spans.

A ``Span`` is one timed piece of a run: the run itself, a persona, a step, an
LLM call, a tool call, or anything a user opens with ``steptrace.span(...)``.
Spans link to their parent by id and carry free-form metadata (a step span gets
the seed's keys: persona, model, status, llm_calls, input_tokens,
output_tokens, cost_usd). Span processors are the extension point for export:
each registered ``SpanProcessor`` sees every span start and end, in every run.
A processor that raises is logged and recorded on the span, never allowed to
break the run (unless ``configure(strict=True)``).

Opening spans inside the current run is ``tracing.span``; this module only
knows how a span is built, ended and handed to processors.
"""

from __future__ import annotations

import enum
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, cast, runtime_checkable

from ._config import report_observer_failure

__all__ = [
    "InMemorySpanCollector",
    "Span",
    "SpanKind",
    "SpanProcessor",
    "add_span_processor",
    "remove_span_processor",
]


class SpanKind(enum.StrEnum):
    RUN = "run"
    PERSONA = "persona"
    STEP = "step"
    LLM_CALL = "llm_call"
    TOOL = "tool"
    CUSTOM = "custom"


def _fresh_span_ids() -> itertools.count[int]:
    # Each process counts from its own random base below 2**52 (exact as a
    # JavaScript number), so spans that processes write into one run (see
    # ``steptrace.extract``) do not collide; a forked child starts a new base.
    return itertools.count((int.from_bytes(os.urandom(4), "big") << 20) | 1)


# next() on itertools.count is atomic under the GIL: ids are unique across threads.
span_ids = _fresh_span_ids()


def _reseed_after_fork() -> None:
    global span_ids
    span_ids = _fresh_span_ids()


os.register_at_fork(after_in_child=_reseed_after_fork)


class Span:
    """One timed, named piece of a run. Mutable until ended.

    Inside the runtime, the frames of runs, personas, steps and user spans are
    subclasses of ``Span``: a step call creates one object that is at once its
    stack frame, its accounting and its span.
    """

    __slots__ = (
        "_metadata",
        "end_ns",
        "error",
        "kind",
        "name",
        "parent_id",
        "run_id",
        "span_id",
        "start_ns",
        "status",
    )

    def __init__(
        self,
        name: str,
        kind: SpanKind,
        run_id: str,
        parent_id: int | None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.span_id: int = next(span_ids)
        self.parent_id = parent_id
        self.run_id = run_id
        self.name = name
        self.kind = kind
        self.start_ns = time.time_ns()
        self.end_ns: int | None = None
        # Created on first use: most spans of a run are never given metadata.
        self._metadata: dict[str, Any] | None = metadata or None
        self.status = "unset"
        """``unset`` while open, then ``ok`` or ``error``."""
        self.error: str | None = None

    @property
    def metadata(self) -> dict[str, Any]:
        """Free-form attributes of the span (mutable)."""
        if self._metadata is None:
            self._metadata = {}
        return self._metadata

    def set(self, key: str, value: Any) -> None:
        """Set one metadata entry."""
        self.metadata[key] = value

    @property
    def duration_ms(self) -> float | None:
        """Wall time in milliseconds, ``None`` while the span is open."""
        return None if self.end_ns is None else (self.end_ns - self.start_ns) / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "run_id": self.run_id,
            "name": self.name,
            "kind": self.kind.value,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "status": self.status,
            "error": self.error,
            "metadata": dict(self.metadata),
        }

    def __repr__(self) -> str:
        return (
            f"Span({self.name!r}, kind={self.kind.value}, id={self.span_id}, "
            f"parent={self.parent_id}, status={self.status})"
        )


@runtime_checkable
class SpanProcessor(Protocol):
    """Receives every span as it starts and ends.

    Contract: called synchronously on the thread that opened or closed the span,
    so it must be thread-safe and must not block (queue work for a background
    exporter instead). It should not raise; if it does, the error is logged and
    recorded on the span and the run goes on.
    """

    def on_start(self, span: Span) -> None: ...

    def on_end(self, span: Span) -> None: ...


class TranscriptProcessor(Protocol):
    """A span processor that also wants the content of LLM calls (the run store).

    ``on_transcript(span, content)`` is called on the caller's thread, while an
    ``llm_call`` request's span is still open, for each request that got a
    response; ``content()`` builds ``(request data, response data)`` (the
    cassette shapes), so a processor that queues it pays for that work off the
    caller's thread. A processor has this method or not: nothing registers it.
    """

    def on_transcript(
        self, span: Span, content: Callable[[], tuple[dict[str, Any], dict[str, Any]]]
    ) -> None: ...


class InMemorySpanCollector:
    """A processor that keeps every ended span in a list (for tests and tools)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: list[Span] = []
        self._ended: list[Span] = []

    def on_start(self, span: Span) -> None:
        with self._lock:
            self._started.append(span)

    def on_end(self, span: Span) -> None:
        with self._lock:
            self._ended.append(span)

    @property
    def spans(self) -> list[Span]:
        """Ended spans, in the order they ended."""
        with self._lock:
            return list(self._ended)

    @property
    def started(self) -> list[Span]:
        with self._lock:
            return list(self._started)

    def clear(self) -> None:
        with self._lock:
            self._started.clear()
            self._ended.clear()


# Copy-on-write tuple: readers on the hot path take it without a lock.
processors: tuple[SpanProcessor, ...] = ()
transcript_processors: tuple[TranscriptProcessor, ...] = ()
"""The registered processors that have ``on_transcript``."""
_processors_lock = threading.Lock()


def add_span_processor(processor: SpanProcessor) -> None:
    """Register a processor for every span of every run in this process."""
    if not isinstance(processor, SpanProcessor):
        raise TypeError(f"add_span_processor: {processor!r} lacks on_start(span) and on_end(span)")
    global processors
    with _processors_lock:
        processors = (*processors, processor)
        _update_transcript_processors()


def remove_span_processor(processor: SpanProcessor) -> None:
    """Unregister a processor; unknown processors are ignored."""
    global processors
    with _processors_lock:
        processors = tuple(p for p in processors if p is not processor)
        _update_transcript_processors()


def _update_transcript_processors() -> None:
    global transcript_processors
    transcript_processors = tuple(
        cast("TranscriptProcessor", processor)
        for processor in processors
        if callable(getattr(processor, "on_transcript", None))
    )


def notify_transcript(
    span: Span, content: Callable[[], tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    """Offer an LLM request's content to the processors that want it."""
    for processor in transcript_processors:
        try:
            processor.on_transcript(span, content)
        except Exception as exc:
            report_observer_failure(f"span processor {processor!r}.on_transcript", exc, span)


def notify_start(span: Span) -> None:
    """Hand a just-opened span to every processor."""
    for processor in processors:
        try:
            processor.on_start(span)
        except Exception as exc:
            report_observer_failure(f"span processor {processor!r}.on_start", exc, span)


def end_span(span: Span, error: BaseException | str | None = None) -> None:
    """Close a span (once) and hand it to every processor."""
    if span.end_ns is not None:
        return
    span.end_ns = time.time_ns()
    if error is None:
        span.status = "ok"
    else:
        span.status = "error"
        span.error = describe_error(error) if not isinstance(error, str) else _redact_text(error)
    if processors:
        notify_end(span)


def notify_end(span: Span) -> None:
    """Hand a just-ended span to every processor."""
    for processor in processors:
        try:
            processor.on_end(span)
        except Exception as exc:
            report_observer_failure(f"span processor {processor!r}.on_end", exc, span)


def notify_amended(root: Span) -> None:
    """Tell processors that have ``on_amend(root)`` that a run's record changed
    after the fact (usage that arrived after its scope ended): the run store
    writes the amended rows again. A processor has this method or not."""
    for processor in processors:
        on_amend = getattr(processor, "on_amend", None)
        if on_amend is None:
            continue
        try:
            on_amend(root)
        except Exception as exc:
            report_observer_failure(f"span processor {processor!r}.on_amend", exc, root)


def describe_error(exc: BaseException) -> str:
    """How an exception is written into records: ``Type: message``, with
    credentials redacted (an SDK error may echo the key it was sent)."""
    text = _redact_text(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _redact_text(text: str) -> str:
    # Imported on the first error: ``import steptrace`` stays free of it.
    from ._redact import redact

    return redact(text)
