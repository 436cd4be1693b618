"""A run: the unit that owns everything the seeds keep in thread-locals.

``Run`` holds one execution's agent events, LLM trace log, completed-step ledger
and spans, its optional budget, and the root frame that steps and personas
push onto. ``with steptrace.run("name") as r:`` (or ``async with``) makes it the
current run for that context; tasks and threads started inside inherit it, and
two runs in two tasks or threads never see each other's state. Outside any
``run()``, each context lazily gets a default run (``current_run()``), so the
seed's free functions work with no setup; the default run records the LLM
trace log only after ``enable_tracing()``, as in the seed, while an explicit
run records it from the start.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _context
from ._shared import BudgetSpec, SharedBudget, split_budget
from .budget import PICO_PER_USD, Ledger, Usage

if TYPE_CHECKING:
    from ._run_reader import RunReader
    from .events import AgentEvent, LlmTraceEntry
from .spans import Span, SpanKind, describe_error, end_span, notify_amended, notify_start

__all__ = [
    "CompletedStep",
    "Run",
    "TraceRecord",
    "current_run",
    "run",
]


class TraceRecord(NamedTuple):
    """One LLM call as the run records it in its trace log.

    The first six fields are the seed's ``LlmTraceEntry``; the rest are for the
    run store: the frame that recorded the call (its step, persona and span),
    the wall time (``time.time()``), and whether the call was recorded after
    the scope it was made in had ended (``late``). The run's ``raw_trace``
    holds each record as the plain tuple of these fields (the accounting's hot
    path appends it); readers name it with ``TraceRecord._make``.
    """

    model: str
    input_tokens: int
    output_tokens: int
    duration_ms: int
    cost_usd: float | None
    """None when no price is known for the model."""
    cache_tokens: int
    frame: _context.Frame
    at: float
    late: bool

    def entry(self) -> LlmTraceEntry:
        """The seed's trace entry for this call."""
        from .events import LlmTraceEntry  # deferred: see the note in __init__

        return LlmTraceEntry(*self[:6])


_trace_record = TraceRecord._make


class CompletedStep(NamedTuple):
    """One row of the completed-step ledger.

    The seed's fields first (``to_dict()`` starts with exactly those), then where
    the step sat (persona, span ids), when it ran, and its budget. Usage is the
    step's own calls, not those of nested steps, so a ledger sums to the run's
    total without counting anything twice.
    """

    name: str
    function: str
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    llm_calls: int
    status: str
    """``completed``, ``failed``, ``skipped`` or ``escalated``."""
    error: str | None
    persona: str | None = None
    span_id: int | None = None
    parent_span_id: int | None = None
    started_ns: int = 0
    ended_ns: int = 0
    max_tokens: int | None = None
    max_usd: float | None = None
    unpriced_calls: int = 0
    """Of ``llm_calls``, those whose price was unknown: ``cost_usd`` leaves them out."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def duration_ms(self) -> float:
        return (self.ended_ns - self.started_ns) / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "function": self.function,
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "llm_calls": self.llm_calls,
            "status": self.status,
            "error": self.error,
            "persona": self.persona,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "started_ns": self.started_ns,
            "ended_ns": self.ended_ns,
            "max_tokens": self.max_tokens,
            "max_usd": self.max_usd,
            "unpriced_calls": self.unpriced_calls,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompletedStep:
        missing = [k for k in _SEED_STEP_KEYS if k not in data]
        if missing:
            raise ValueError(f"completed step: missing field(s) {missing}")
        known = {k: data[k] for k in cls._fields if k in data}
        return cls(**known)


_SEED_STEP_KEYS = (
    "name",
    "function",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "llm_calls",
    "status",
    "error",
)


def _record_seq_base() -> int:
    # 2**24 records a part; 38 random bits keep parts of one run apart (odds of
    # a clash about 1 in 5,000 among 10,000 parts of a single run).
    return (2**8 + int.from_bytes(os.urandom(5), "big") % (2**38 - 2**8)) << 24


def _new_run_id() -> str:
    # Sortable by start time, readable, and unique enough for a local store.
    return time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(4).hex()


class Continuation(NamedTuple):
    """Where a run continued in this process came from (``steptrace.extract``)."""

    run_id: str
    parent_span_id: int
    traceparent: str
    """The W3C ``traceparent`` of the span it continues (for OpenTelemetry)."""


class Run:
    """One execution's record and budget scope. Create with ``steptrace.run()``.

    A run continued in another process (``steptrace.extract``) is a ``Run`` too,
    with the same ``id``, ``is_continuation`` set, and a root span whose parent
    is the span that called ``inject``; ``continuation`` says where it came from.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        budget: BudgetSpec = None,
        metadata: Mapping[str, Any] | None = None,
        trace_llm: bool = True,
        _default: bool = False,
        _continues: Continuation | None = None,
        _shared: tuple[SharedBudget, ...] = (),
        _parent: _context.Frame | None = None,
        retain: int | None = None,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"run: name must be a string, got {name!r}")
        # A continuation hangs under a span of another process, never under this one's.
        parent = None if _continues is not None else _parent
        self.id = _new_run_id() if _continues is None else _continues.run_id
        self.name = name or ("default" if _default else "run")
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.budget, shared = split_budget(budget, f"run `{self.name}`")
        self.shared_budgets: tuple[SharedBudget, ...] = (*shared, *_shared)
        """The shared budgets of the whole run (``budget=``, or a carrier's)."""
        self.continuation = _continues
        self.is_continuation = _continues is not None
        """True for the part of a run carried on in this process by ``extract``:
        the run's header (status, totals) belongs to the process that opened it,
        so a store writer records only this part's spans, events and calls."""
        self.record_seq_base = 0 if _continues is None else _record_seq_base()
        """Where this part of the run numbers its events, ledger rows and LLM calls
        in a store: 0 for the run's own process, a random base at or above 2**32
        for each continuation, so parts written into one store never collide."""
        self.is_default = _default
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.status = "running"
        """``running``, then ``completed`` or ``failed``."""
        self.error: str | None = None
        self.events: list[AgentEvent] = []
        self.event_span_ids: list[int] = []
        """For each event, the id of the span that was current when it was emitted."""
        self.raw_trace: list[tuple[Any, ...]] = []
        """The LLM trace log as recorded: a ``TraceRecord``'s fields a call, as
        a plain tuple (read it through ``trace_records``)."""
        self.spans: list[Span] = []
        """Every span of the run (run, personas, steps, user spans), in start order."""
        self.tracing_enabled = trace_llm
        self.parent: Run | None = None if parent is None else parent.run
        """The run this one was opened in (its usage counts against that run's
        scopes too), or None for a top-level run."""
        self.parent_run_id: str | None = None
        """The enclosing run's id, when that run is recorded (not a default run)."""
        self.parent_span_id: int | None = None
        if parent is not None and not parent.run.is_default:
            self.parent_run_id = parent.run.id
            self.parent_span_id = parent.span_id
        # One lock for a run and the runs nested in it: a usage record updates
        # ledgers of both, atomically with every pre-flight hold on them.
        self.lock: threading.Lock = threading.Lock() if parent is None else parent.run.lock
        if retain is not None and (
            isinstance(retain, bool) or not isinstance(retain, int) or retain < 1
        ):
            raise ValueError(f"run `{self.name}`: retain must be a positive int, got {retain!r}")
        self.retain = retain
        """How many of each record (spans, ended steps, events, LLM calls) the run
        keeps in memory; None keeps everything. Older records are dropped in
        batches once twice as many are held (see ``trim``)."""
        self.trim_at = _NEVER if retain is None else 2 * retain
        self.dropped = {"spans": 0, "steps": 0, "events": 0, "llm_calls": 0}
        """Records dropped by retention (the ledger totals still count them)."""
        self.dropped_statuses: Counter[str] = Counter()
        # Where each list starts in its whole record: readers keep absolute
        # positions, so trimming the front never shifts what they read next.
        self.readers: weakref.WeakSet[RunReader] = weakref.WeakSet()
        """Readers of this run's records (store writer, exporters): retention
        never drops a record one of them has not read yet."""
        self.backpressure: list[Callable[[], object]] = []
        """Called (on the run's thread) when readers lag so far behind that
        retention cannot drop anything: each waits for its reader to catch up."""
        self.spans_base = 0
        self.steps_base = 0
        self.events_base = 0
        self.trace_base = 0
        self.late_calls = 0
        """LLM calls recorded after the scope they were made in had ended."""
        self.amended_steps: list[_context.StepFrame] = []
        """Ended steps whose ledger row changed after they ended (late usage)."""
        self._token: Any = None
        self.ended_steps: list[_context.StepFrame] = []
        """Ended step frames, in order; ``completed_steps`` is built from them."""
        self.ledger_rows: dict[int, CompletedStep] = {}
        """Ledger rows already built, by span id."""
        self.ledger = Ledger("run", self.name, *_context.budget_limits(self.budget))
        self.root = _context.Frame(
            self.name,
            SpanKind.RUN,
            parent,
            self,
            self.ledger,
            {"run.name": self.name},
            self.shared_budgets,
        )
        # A nested run's calls are its own record, not rows of the step around it.
        self.root.step = None
        if self.parent_run_id is not None:
            self.root.metadata["steptrace.parent_run_id"] = self.parent_run_id
        elif parent is not None:
            self.root.parent_id = None  # the enclosing default run is not recorded
        if _continues is not None:
            # The root hangs under the span that called inject() in the other process.
            self.root.parent_id = _continues.parent_span_id
            self.root.metadata["steptrace.continuation"] = True
        self.ledger.owner = self.root
        self.opened(self.root)

    # -- appending to the record ------------------------------------------------
    #
    # The record's lists (spans, ended_steps, events with event_span_ids,
    # raw_trace, amended_steps) are appended to only by the methods below,
    # and only at their end; ``trim`` and the ``take_*`` swaps change them
    # under the lock. Events and LLM calls are appended under the lock (a
    # reader must see an event and its span id together, and a call together
    # with the ledgers it updated); spans and ended steps by one
    # ``list.append``, atomic under the GIL. Readers therefore take each
    # length once, under the lock, and read up to it (see ``_run_reader``).
    # The plain step call inlines ``add_span`` and ``step_ended``
    # (``_wrappers._wrap_sync_step``). The trace log and the event log have
    # no method here: ``record_llm_usage`` appends a call's ``TraceRecord``
    # fields to ``raw_trace`` itself, in the critical section that updates its
    # ledgers, and ``tracing.emit_event`` appends an event with its span id.

    def add_span(self, frame: _context.Frame) -> None:
        """Record a frame just created in this run."""
        spans = self.spans
        spans.append(frame)
        if len(spans) > self.trim_at:
            self.trim()

    def opened(self, frame: _context.Frame) -> None:
        """Record a frame just created in this run and show it to span processors."""
        self.add_span(frame)
        notify_start(frame)

    def step_ended(self, frame: _context.StepFrame) -> None:
        """File an ended step in the completed-step ledger."""
        self.ended_steps.append(frame)

    def amended(self, step: _context.StepFrame) -> None:
        """Note that an ended step's ledger row changed (late usage); the
        caller holds the run's lock."""
        self.ledger_rows.pop(step.span_id, None)
        self.amended_steps.append(step)

    def take_trace(self) -> list[TraceRecord]:
        """Return the LLM trace log and start a new one."""
        with self.lock:
            raw, self.raw_trace = self.raw_trace, []
            self.trace_base = 0
        return [_trace_record(fields) for fields in raw]

    def trace_records(self) -> list[TraceRecord]:
        """The LLM trace log, as records (a copy)."""
        with self.lock:
            raw = list(self.raw_trace)
        return [_trace_record(fields) for fields in raw]

    def take_events(self) -> list[AgentEvent]:
        """Return the agent events and start a new log."""
        with self.lock:
            events, self.events = self.events, []
            self.event_span_ids = []
            self.events_base = 0
        return events

    def trim(self) -> None:
        """Drop the oldest records beyond ``retain`` of each kind, counting them.

        Called when a list reaches twice ``retain`` (so trimming is amortized
        to a slice deletion every ``retain`` records). Never drops what a
        registered reader (the store writer, an exporter) has not read yet: a
        reader that falls behind holds the records until it catches up. Under
        the lock, so a reader holding it sees each list and its base
        consistently; appends that take no lock (spans, ended steps) land at
        the end, untouched."""
        keep = self.retain
        if keep is None:
            return
        with self.lock:
            unread_steps = unread_events = unread_trace = _NEVER
            for reader in self.readers:  # see _run_reader for the invariant
                steps, events, trace = reader.read_upto()
                unread_steps = min(unread_steps, steps)
                unread_events = min(unread_events, events)
                unread_trace = min(unread_trace, trace)
            dropped = self.dropped
            excess = len(self.spans) - keep
            if excess > 0:
                del self.spans[:excess]
                self.spans_base += excess
                dropped["spans"] += excess
            ended = self.ended_steps
            excess = min(len(ended) - keep, unread_steps)
            if excess > 0:
                rows = self.ledger_rows
                statuses = self.dropped_statuses
                for frame in ended[:excess]:
                    statuses[frame.outcome or "completed"] += 1
                    rows.pop(frame.span_id, None)
                del ended[:excess]
                self.steps_base += excess
                dropped["steps"] += excess
            excess = min(len(self.events) - keep, unread_events)
            if excess > 0:
                del self.events[:excess]
                del self.event_span_ids[:excess]
                self.events_base += excess
                dropped["events"] += excess
            excess = min(len(self.raw_trace) - keep, unread_trace)
            if excess > 0:
                del self.raw_trace[:excess]
                self.trace_base += excess
                dropped["llm_calls"] += excess
            behind = max(len(ended), len(self.events), len(self.raw_trace)) > 2 * self.trim_at
        if behind and not _catching_up.get():
            # A reader pins records four times the retention: the run waits
            # for it rather than grow without bound (the store writer's flush).
            token = _catching_up.set(True)
            try:
                for wait in list(self.backpressure):
                    wait()
            finally:
                _catching_up.reset(token)
            self.trim()

    def events_by_span(self) -> list[tuple[int, AgentEvent]]:
        """``(span id, event)`` for every event, in order (for exporters)."""
        with self.lock:
            return list(zip(self.event_span_ids, self.events, strict=True))

    @property
    def llm_trace(self) -> list[LlmTraceEntry]:
        """The LLM call trace log (a copy)."""
        return trace_entries(self.trace_records())

    @property
    def completed_steps(self) -> list[CompletedStep]:
        """The completed-step ledger, in the order steps ended."""
        return [ledger_row(frame) for frame in list(self.ended_steps)]

    # -- context management -----------------------------------------------------

    def __enter__(self) -> Run:
        if self._token is not None or self.ended_at is not None:
            raise RuntimeError(f"run `{self.name}` has already been entered")
        self._token = _context.set_frame(self.root)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            _context.reset_frame(self._token)
        except ValueError:
            # Exited in another context (a generator finalized elsewhere): the
            # frame there is not ours to restore, the record still closes.
            pass
        self.finish(exc)

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def finish(self, error: BaseException | None = None) -> None:
        """Close the run record (called on leaving the ``with`` block)."""
        if self.ended_at is not None:
            return
        pending = _context.pending_hold.get()
        if pending is not None and pending.frame.run is self:
            pending.release()  # a pre-flight hold whose call never reported back
        with self.lock:
            self.ended_at = time.time()
            if error is not None:
                self.status = "failed"
                self.error = describe_error(error)  # credentials redacted
            else:
                self.status = "over_budget" if over_limit(self.ledger) else "completed"
            usage = self.ledger.usage()
        span = self.root
        span.metadata.update(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=usage.cost_usd,
            llm_calls=usage.llm_calls,
            status=self.status,
        )
        if usage.unpriced_calls:
            span.metadata["unpriced_calls"] = usage.unpriced_calls
        end_span(span, error)

    # -- reading the record -----------------------------------------------------

    @property
    def duration_ms(self) -> float:
        end = time.time() if self.ended_at is None else self.ended_at
        return (end - self.started_at) * 1000.0

    def usage(self) -> Usage:
        """Usage of the whole run so far."""
        with self.lock:
            return self.ledger.usage()

    def summary(self) -> dict[str, Any]:
        """Totals, step statuses, budget, and the seed's agent trace summary."""
        from .events import summarize_events  # deferred: see the note in __init__

        usage = self.usage()
        statuses = Counter(step.status for step in self.completed_steps)
        statuses.update(self.dropped_statuses)
        summary = {
            "run_id": self.id,
            "name": self.name,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "llm_calls": usage.llm_calls,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cost_usd": usage.cost_usd,
            "unpriced_calls": usage.unpriced_calls,
            "steps": {s: statuses.get(s, 0) for s in _STATUSES},
            "budget": None if self.budget is None else self.budget.to_dict(),
            "agent": summarize_events(self.events),
        }
        if self.retain is not None:
            # The totals and step counts above are exact; ``agent`` rolls up
            # the events still held.
            summary["retention"] = {"retain": self.retain, "dropped": dict(self.dropped)}
        return summary

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, name={self.name!r}, status={self.status!r})"


def over_limit(ledger: Ledger) -> bool:
    """Whether a scope's usage is strictly over one of its limits."""
    return (
        ledger.max_tokens is not None
        and ledger.input_tokens + ledger.output_tokens > ledger.max_tokens
    ) or (ledger.max_pico is not None and ledger.cost_pico > ledger.max_pico)


def amend_late(frame: _context.Frame) -> None:
    """File usage recorded after its scope ended: counted on the run, the ended
    step's ledger row rebuilt, the run's status ``over_budget`` when it had
    ended within its limits and no longer is, and processors told."""
    run = frame.run
    step = frame.step
    with run.lock:
        run.late_calls += 1
        if step is not None and step.end_ns is not None:
            run.amended(step)
        if run.ended_at is not None and run.status == "completed" and over_limit(run.ledger):
            run.status = "over_budget"
            run.root.metadata["status"] = "over_budget"
        if run.ended_at is not None:
            usage = run.ledger.usage()
            run.root.metadata.update(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_usd=usage.cost_usd,
                llm_calls=usage.llm_calls,
            )
            if usage.unpriced_calls:
                run.root.metadata["unpriced_calls"] = usage.unpriced_calls
    notify_amended(run.root)


_STATUSES = ("completed", "failed", "skipped", "escalated")
_NEVER = 2**62

_catching_up: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "steptrace_catching_up", default=False
)

DEFAULT_RETAIN = 10_000
"""What a default run keeps of each record: it lives as long as its thread,
which in a service is the whole process."""


def trace_entries(raw: list[TraceRecord]) -> list[LlmTraceEntry]:
    """The seed's trace entries of recorded calls."""
    return [record.entry() for record in raw]


def ledger_row(frame: _context.StepFrame) -> CompletedStep:
    # Built on first request and kept: the hot path only appends the frame.
    rows = frame.run.ledger_rows
    row = rows.get(frame.span_id)
    if row is None:
        definition = frame.definition
        row = rows[frame.span_id] = CompletedStep(
            definition.name,
            definition.function,
            frame.last_model or definition.model,
            frame.own_input_tokens,
            frame.own_output_tokens,
            frame.own_cost_pico / PICO_PER_USD,
            frame.own_llm_calls,
            frame.outcome or "completed",
            frame.error,
            frame.persona_name,
            frame.span_id,
            frame.parent_id,
            frame.start_ns,
            frame.end_ns or frame.start_ns,
            definition.max_tokens,
            definition.max_usd,
            frame.own_unpriced_calls,
        )
    assert isinstance(row, CompletedStep)
    return row


def run(
    name: str | None = None,
    *,
    budget: BudgetSpec = None,
    metadata: Mapping[str, Any] | None = None,
    detached: bool = False,
    retain: int | None = None,
) -> Run:
    """Open a run: ``with steptrace.run("nightly", budget={"max_usd": 2}) as r:``.

    The run's budget caps everything inside it; usage counts against it as well
    as against every enclosing step and persona budget. ``budget`` may also be a
    ``SharedBudget`` or a list of one local budget and shared ones.

    A run opened inside another run (or inside a step or persona) is its child:
    its usage counts against every enclosing scope, and the store shows it under
    its parent. ``detached=True`` opens an independent top-level run instead,
    whose usage no enclosing budget sees: an explicit choice, for work that is
    not the caller's to pay for.

    ``retain`` bounds what the run keeps in memory (spans, ended steps, events,
    LLM calls: that many of each, the oldest dropped and counted); None, the
    default, keeps everything. A store recording the run has been handed each
    record long before it is dropped.
    """
    if not isinstance(detached, bool):
        raise TypeError(f"run: detached must be True or False, got {detached!r}")
    parent = None if detached else _context.get_frame()
    if parent is not None and parent.run.is_default and parent is parent.run.root:
        parent = None  # no scope around: a top-level run
    return Run(name, budget=budget, metadata=metadata, _parent=parent, retain=retain)


def active_frame() -> _context.Frame:
    """The innermost frame of this context, creating the default run if needed."""
    frame = _context.get_frame()
    if frame is None:
        frame = Run(_default=True, trace_llm=False, retain=DEFAULT_RETAIN).root
        _context.set_frame(frame)
    return frame


def current_run() -> Run:
    """The run of this context: the open ``run()``, else this context's default run."""
    return active_frame().run


def new_default_run() -> Run:
    """Replace this context's state with a fresh default run (see ``reset``)."""
    fresh = Run(_default=True, trace_llm=False, retain=DEFAULT_RETAIN)
    _context.set_frame(fresh.root)
    return fresh
