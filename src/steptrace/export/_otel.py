"""The live OpenTelemetry bridge: a steptrace span processor that makes SDK spans.

``OpenTelemetryExporter`` is registered like any steptrace processor
(``steptrace.add_span_processor(OpenTelemetryExporter(provider))``) and turns
every steptrace span into one OpenTelemetry span of the given tracer provider
(the global one when none is given), named and attributed as ``_semconv``
describes. This is the only module of steptrace that imports OpenTelemetry.

How the tree survives: each OpenTelemetry span is *started* in ``on_start``,
with the steptrace span's start time and the OpenTelemetry span of its
steptrace parent as parent, and *ended* in ``on_end`` with the steptrace end
time, after its attributes, events and status are set. Starting early mints
the span id when the parent is known, so children (which end first) need no
buffering and nothing waits for a parent that may never end. Consequences:

- one trace per run: the run's root span starts a trace (or joins the
  OpenTelemetry span current where the run was opened, e.g. a web request's),
  and every span of the run descends from it; a run continued in another
  process (``steptrace.extract``) joins that trace: its root's parent is the
  span the carrier's ``traceparent`` names, which ``steptrace.inject`` takes
  from this exporter (``traceparent(span)``) when it has the span open;
- a span whose parent is not open in the exporter (the processor was added
  mid-run, or a detached task outlived its parent) hangs under its nearest
  open ancestor, else starts a trace of its own; a span the exporter never saw
  start is started and ended in ``on_end`` with its real times;
- the default run (steps called outside any ``steptrace.run()``) never ends,
  so its root is not exported: each of its top-level spans starts a trace;
- spans that never end are never exported (OpenTelemetry exports on end).

Agent events carry no timestamp and are emitted while their span is open.
The exporter reads the run's new events through a ``RunReader`` (the one
reader it shares with the store writer: ``steptrace._run_reader``) on every
span start and end of the run, files them under the span they were emitted in,
stamped with the time it first saw them, and attaches them as span events
when that span ends (the stamp clamped into the span's interval). Events
removed by ``take_agent_trace()`` before the exporter saw them are lost to it.

Failures never reach the run: every callback is wrapped, counted in
``failures`` and logged (the first with its traceback); in steptrace's strict
mode (tests) they are re-raised so steptrace records them.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING

try:
    import opentelemetry.sdk.trace  # noqa: F401  # the SDK is what records anything
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "steptrace.export.OpenTelemetryExporter needs the OpenTelemetry SDK: "
        "pip install 'steptrace[otel]'"
    ) from exc

from .. import _config
from .._context import Frame
from .._run_reader import RunReader
from ..spans import Span, SpanKind
from ._semconv import describe, event_attributes, event_name

if TYPE_CHECKING:
    from .._run import Run
    from ..events import AgentEvent

__all__ = ["OpenTelemetryExporter"]

logger = logging.getLogger("steptrace.export")

_SCOPE = "steptrace"


def _scope_version() -> str:
    from .. import __version__

    return __version__


class _RunEvents:
    """What the exporter has read of one run's event log."""

    __slots__ = ("pending", "reader")

    def __init__(self, run: Run) -> None:
        # Events only: the exporter never holds steps or trace records back
        # from the run's retention.
        self.reader = RunReader(run, steps=False, trace=False)
        self.pending: dict[int, list[tuple[int, AgentEvent]]] = {}
        """Events not yet attached, by span id, each with the time first seen."""


class OpenTelemetryExporter:
    """A steptrace ``SpanProcessor`` that re-creates every span in OpenTelemetry.

    ``tracer_provider``: where spans go (a ``TracerProvider`` with your span
    processors and exporters); ``None`` uses the global provider, resolved
    when spans are made, so one set later still receives them. Thread-safe;
    each callback does a little dictionary work and one SDK call.
    See the module docstring for how parents, traces and events map.
    """

    def __init__(self, tracer_provider: otel_trace.TracerProvider | None = None) -> None:
        self._provider = tracer_provider
        if tracer_provider is None:
            self._tracer = otel_trace.get_tracer(_SCOPE, _scope_version())
        else:
            self._tracer = tracer_provider.get_tracer(_SCOPE, _scope_version())
        self._open: dict[int, otel_trace.Span] = {}
        self._runs: weakref.WeakKeyDictionary[Run, _RunEvents] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.failures = 0
        """How many callbacks failed (each logged; none reached the run)."""

    # -- the SpanProcessor protocol -----------------------------------------------

    def on_start(self, span: Span) -> None:
        try:
            run = _run_of(span)
            if run is not None:
                self._read_events(run)
                if run.is_default and run.root is span:
                    return
            self._start(span)
        except Exception as exc:
            self._failed("on_start", span, exc)

    def on_end(self, span: Span) -> None:
        try:
            self._end(span)
        except Exception as exc:
            self._failed("on_end", span, exc)

    # -- flushing -----------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the tracer provider's processors (when it can), e.g. before exit."""
        provider = self._provider or otel_trace.get_tracer_provider()
        flush = getattr(provider, "force_flush", None)
        if flush is None:
            return True
        return bool(flush(timeout_millis))

    # -- internals ----------------------------------------------------------------

    def _start(self, span: Span) -> otel_trace.Span:
        parent = self._parent_of(span)
        started = self._tracer.start_span(
            span.name,
            context=None if parent is None else otel_trace.set_span_in_context(parent),
            kind=(
                otel_trace.SpanKind.CLIENT
                if span.kind is SpanKind.LLM_CALL
                else otel_trace.SpanKind.INTERNAL
            ),
            start_time=span.start_ns,
        )
        self._open[span.span_id] = started
        return started

    def traceparent(self, span: Span) -> str | None:
        """The W3C ``traceparent`` of ``span``'s OpenTelemetry span while it is
        open here (``steptrace.inject`` puts it in the carrier), else None."""
        otel_span = self._open.get(span.span_id)
        if otel_span is None:
            return None
        context = otel_span.get_span_context()
        if not context.is_valid:
            return None
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"

    def _parent_of(self, span: Span) -> otel_trace.Span | None:
        if span.parent_id is None:
            return None
        found = self._open.get(span.parent_id)
        if found is not None:
            return found
        run = _run_of(span)
        if run is not None and run.root is span and run.continuation is not None:
            return _remote_parent(run.continuation.traceparent)
        frame = getattr(span, "parent", None)
        while isinstance(frame, Frame):
            found = self._open.get(frame.span_id)
            if found is not None:
                return found
            frame = frame.parent
        return None

    def _end(self, span: Span) -> None:
        run = _run_of(span)
        otel_span = self._open.pop(span.span_id, None)
        if otel_span is None:
            if run is not None and run.is_default and run.root is span:
                return
            otel_span = self._start(span)
            self._open.pop(span.span_id, None)
        end_ns = span.end_ns if span.end_ns is not None else time.time_ns()
        described = describe(span)
        otel_span.update_name(described.name)
        otel_span.set_attributes(described.attributes)
        if run is not None:
            for seen_ns, event in self._events_of(run, span):
                otel_span.add_event(
                    event_name(event),
                    event_attributes(event),
                    timestamp=min(max(seen_ns, span.start_ns), end_ns),
                )
            if run.root is span:
                with self._lock:
                    self._runs.pop(run, None)
        if described.error is not None:
            otel_span.set_status(Status(StatusCode.ERROR, described.error))
        otel_span.end(end_time=end_ns)

    def _read_events(self, run: Run) -> _RunEvents:
        """File the run's events emitted since the last look under their spans."""
        now = time.time_ns()
        with self._lock:
            state = self._runs.get(run)
            if state is None:
                state = self._runs[run] = _RunEvents(run)
            news = state.reader.read()
            for span_id, event in zip(news.event_span_ids, news.events, strict=True):
                state.pending.setdefault(span_id, []).append((now, event))
        return state

    def _events_of(self, run: Run, span: Span) -> list[tuple[int, AgentEvent]]:
        state = self._read_events(run)
        with self._lock:
            return state.pending.pop(span.span_id, [])

    def _failed(self, where: str, span: Span, exc: Exception) -> None:
        with self._lock:
            self.failures += 1
            first = self.failures == 1
        if first:
            logger.warning(
                "steptrace: OpenTelemetry export %s failed for %r", where, span, exc_info=exc
            )
        else:
            logger.debug("steptrace: OpenTelemetry export %s failed for %r: %r", where, span, exc)
        if _config.settings.strict:
            raise exc


def _remote_parent(traceparent: str) -> otel_trace.Span | None:
    """The span another process's carrier names, as a non-recording remote parent."""
    parts = traceparent.split("-")
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except (IndexError, ValueError):
        return None
    context = otel_trace.SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=otel_trace.TraceFlags(flags)
    )
    return otel_trace.NonRecordingSpan(context) if context.is_valid else None


def _run_of(span: Span) -> Run | None:
    run: Run | None = getattr(span, "run", None)
    return run
