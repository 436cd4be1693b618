"""The current run's LLM trace log, agent event log and user spans.

The seed's free functions, bound to the current run (``run.current_run()``):
``enable_tracing``/``take_trace``/``peek_trace``/``peek_trace_summary`` for the
LLM call trace log, ``emit_event``/``take_agent_trace``/``peek_agent_trace``/
``agent_trace_summary`` for agent events, and ``span()``, a sync and async
context manager that opens a span under the innermost open span of this
context. ``open_span`` opens one without making it current, for work whose
start and end are seen from different places (a framework's callbacks, a
stream): ``end_span`` closes it, and ``emit_event(event, span=...)`` files an
event under it. Logs are appended to under the run's lock, so ``take`` never loses an
entry recorded concurrently.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _context
from ._run import active_frame, current_run, trace_entries

if TYPE_CHECKING:
    from .events import AgentEvent, LlmTraceEntry
from . import spans as _spans
from .spans import Span, SpanKind, end_span, notify_start

__all__ = [
    "agent_trace_summary",
    "current_span",
    "emit_event",
    "enable_tracing",
    "open_span",
    "peek_agent_trace",
    "peek_trace",
    "peek_trace_summary",
    "span",
    "take_agent_trace",
    "take_trace",
]

_event_types: frozenset[type] = frozenset()
_get_frame = _context.get_frame


def enable_tracing(enabled: bool = True) -> None:
    """Turn LLM call trace recording on (or off) for the current run."""
    current_run().tracing_enabled = enabled


def take_trace() -> list[LlmTraceEntry]:
    """Return the trace log and clear it."""
    return trace_entries(current_run().take_trace())


def peek_trace() -> list[LlmTraceEntry]:
    """Return a copy of the trace log, leaving it in place."""
    return current_run().llm_trace


def peek_trace_summary() -> tuple[int, int, int, int]:
    """(input tokens, output tokens, duration ms, call count) of the trace log."""
    entries = peek_trace()
    return (
        sum(e.input_tokens for e in entries),
        sum(e.output_tokens for e in entries),
        sum(e.duration_ms for e in entries),
        len(entries),
    )


def emit_event(event: AgentEvent, *, span: Span | None = None) -> None:
    """Append an agent event under this context's innermost open span, in its
    run, or under ``span`` (one from ``open_span``, ``span()`` or
    ``current_span()``), in that span's run."""
    if type(event) not in _event_types and type(event) not in _load_event_types():
        raise TypeError(f"emit_event: expected an agent event (LlmCall, ...), got {event!r}")
    if span is None:
        frame = _get_frame() or active_frame()
    elif isinstance(span, _context.Frame):
        frame = span
    else:
        raise TypeError(f"emit_event: span must be a span of a run, got {span!r}")
    # Run.add_event, inlined: an agent loop emits several events an iteration.
    run = frame.run
    lock = run.lock
    lock.acquire()
    try:
        events = run.events
        events.append(event)
        run.event_span_ids.append(frame.span_id)
    finally:
        lock.release()
    if len(events) > run.trim_at:
        run.trim()
    if _collecting:
        for collected in _collectors.get():
            collected.append(event)


_collectors: contextvars.ContextVar[tuple[list[AgentEvent], ...]] = contextvars.ContextVar(
    "steptrace_event_collectors", default=()
)
_collecting = False
"""Whether any ``collect_events`` block has run in this process: until one
has, no context has collectors to look up."""


@contextlib.contextmanager
def collect_events() -> Iterator[list[AgentEvent]]:
    """Also collect, in a list, every event emitted in this context (and tasks
    started from it) while the block runs: how an agent loop gets exactly its
    own events when several loops share a run. Nested blocks each collect."""
    global _collecting
    _collecting = True
    collected: list[AgentEvent] = []
    token = _collectors.set((*_collectors.get(), collected))
    try:
        yield collected
    finally:
        _collectors.reset(token)


def _load_event_types() -> frozenset[type]:
    global _event_types
    from .events import AgentEvent  # deferred: see the note in __init__

    _event_types = frozenset(AgentEvent.__args__)
    return _event_types


def take_agent_trace() -> list[AgentEvent]:
    """Return the current run's agent events and clear them."""
    return current_run().take_events()


def peek_agent_trace() -> list[AgentEvent]:
    """Return a copy of the current run's agent events."""
    run = current_run()
    with run.lock:
        return list(run.events)


def agent_trace_summary() -> dict[str, Any]:
    """The seed's rolled-up summary of the current run's agent events."""
    from .events import summarize_events  # deferred: see the note in __init__

    return summarize_events(peek_agent_trace())


def current_span() -> Span:
    """The innermost open span of this context (a step's, a persona's, a
    ``span()``'s, or the run's): ``current_span().set(key, value)`` adds to
    what the record and exporters show of it."""
    return active_frame()


def open_span(name: str, kind: SpanKind = SpanKind.CUSTOM, **metadata: Any) -> Span:
    """Open a span under the innermost open span of this context without making
    it current: spans and steps opened afterwards are not its children. Close it
    with ``steptrace.spans.end_span(span, error)``; until then it is open in the
    record, as ``span()``'s is inside its block."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"open_span: name must be a non-empty string, got {name!r}")
    return _open(name, kind if type(kind) is SpanKind else SpanKind(kind), metadata)


def _open(name: str, kind: SpanKind, metadata: dict[str, Any]) -> _context.Frame:
    parent = _get_frame() or active_frame()
    # A user span is a frame without a budget: steps opened inside it become
    # its children, and usage still flows to the enclosing step.
    opened = _context.span_frame(name, kind, parent, metadata)
    # Run.opened, inlined: every model request and tool call opens a span.
    run = opened.run
    spans = run.spans
    spans.append(opened)
    if len(spans) > run.trim_at:
        run.trim()
    if _spans.processors:
        notify_start(opened)
    return opened


class span:
    """Open a span under the innermost open span of this context.

    ``with steptrace.span("retrieve", kind=SpanKind.TOOL, source="web") as s:``
    gives the ``Span``; ``s.set(key, value)`` adds metadata. An exception
    leaving the block marks the span ``error`` and propagates unchanged.
    """

    __slots__ = ("_kind", "_metadata", "_name", "_span", "_token")

    def __init__(self, name: str, kind: SpanKind = SpanKind.CUSTOM, **metadata: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"span: name must be a non-empty string, got {name!r}")
        self._name = name
        self._kind = kind if type(kind) is SpanKind else SpanKind(kind)
        self._metadata = metadata
        self._span: Span | None = None
        self._token: Any = None

    def __enter__(self) -> Span:
        opened = _open(self._name, self._kind, dict(self._metadata))
        self._token = _context.set_frame(opened)
        self._span = opened
        return opened

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._span is not None
        try:
            _context.reset_frame(self._token)
        except ValueError:
            pass  # closed from another context (e.g. a finalized generator)
        end_span(self._span, exc)

    # The async forms repeat the sync bodies rather than call them: every
    # model request of the agent-framework integrations opens one.
    async def __aenter__(self) -> Span:
        opened = _open(self._name, self._kind, dict(self._metadata))
        self._token = _context.set_frame(opened)
        self._span = opened
        return opened

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._span is not None
        try:
            _context.reset_frame(self._token)
        except ValueError:
            pass  # closed from another context (e.g. a finalized generator)
        end_span(self._span, exc)
