"""Reading a live run's record: the one reader the store writer and exporters share.

A run's record grows on the run's threads (``ended_steps``; ``events`` with
``event_span_ids``; ``raw_trace``) and retention trims each list at its front
(``Run.trim``). ``RunReader.read()`` returns what was appended since its last
read, all three kinds in one acquisition of the run's lock. The invariant,
stated once here and kept by ``Run.trim``:

- positions are absolute: a list's ``*_base`` plus the index, so trimming the
  front never makes a reader skip or repeat a record;
- each length is read once, under the run's lock: a record appended meanwhile
  is read next time, never skipped (an event is whole once both of its lists
  have it);
- nothing unread is trimmed: each reader is registered in ``run.readers`` and
  retention drops only what every reader has read (``RunReader.read_upto``).
  Records gone before a reader saw them (it was made late, or
  ``take_trace``/``take_agent_trace`` swapped in fresh lists, on which reading
  starts over) are counted in ``lost``.

A reader belongs to one consumer, which serializes its own reads. ``read``
takes the run's lock: never call it while holding that lock. It holds its
run weakly: a consumer keeping readers by run (a ``WeakKeyDictionary``) never
keeps an ended run alive through them.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ._context import StepFrame
    from ._run import Run
    from .events import AgentEvent

__all__ = ["News", "RunReader"]

_NEVER = 2**62


class News(NamedTuple):
    """What a run recorded since the reader's last ``read()``."""

    steps_at: int
    """The absolute ledger position of ``steps[0]`` (every step the run ended
    counts, trimmed ones too)."""
    steps: list[StepFrame]
    """Steps ended since, in the order they ended."""
    amended: list[tuple[int, StepFrame]]
    """Steps read before whose ledger row changed since (late usage), each
    with its absolute ledger position."""
    event_span_ids: list[int]
    """For each of ``events``, the span that was current when it was emitted."""
    events: list[AgentEvent]
    trace: list[tuple[Any, ...]]
    """Raw LLM trace records (``Run.raw_trace``'s tuples)."""


_NOTHING: list[Any] = []


class RunReader:
    """Reads one run's new steps, events and LLM trace records (see the module
    docstring). ``steps``, ``events``, ``trace``: which kinds this reader
    reads; a kind it does not read is never held back from retention for it.
    """

    __slots__ = (
        "__weakref__",
        "_amended",
        "_events",
        "_events_at",
        "_run",
        "_steps_at",
        "_trace",
        "_trace_at",
        "lost",
        "reads_events",
        "reads_steps",
        "reads_trace",
    )

    def __init__(
        self, run: Run, *, steps: bool = True, events: bool = True, trace: bool = True
    ) -> None:
        self._run = weakref.ref(run)
        self.reads_steps = steps
        self.reads_events = events
        self.reads_trace = trace
        self._steps_at = 0
        self._amended = 0
        self._events: list[AgentEvent] | None = None
        self._events_at = 0
        self._trace: list[tuple[Any, ...]] | None = None
        self._trace_at = 0
        self.lost = 0
        """Records trimmed or taken before this reader read them."""
        run.readers.add(self)

    def read_upto(self) -> tuple[int, int, int]:
        """How many of the run's current ended steps, events and trace records
        this reader has read (``2**62`` for a kind it does not read): what
        retention may drop for it. Called by ``Run.trim`` under the run's lock."""
        run = self._run()
        if run is None:  # pragma: no cover - the run calls this, so it is alive
            return (_NEVER, _NEVER, _NEVER)
        return (
            self._steps_at - run.steps_base if self.reads_steps else _NEVER,
            (self._events_at - run.events_base if run.events is self._events else 0)
            if self.reads_events
            else _NEVER,
            (self._trace_at - run.trace_base if run.raw_trace is self._trace else 0)
            if self.reads_trace
            else _NEVER,
        )

    def read(self) -> News:
        """Everything recorded since the last call (see ``News``); nothing once
        the run is gone."""
        run = self._run()
        steps = amended = ids = events = trace = _NOTHING
        steps_at = 0
        if run is None:
            return News(steps_at, steps, amended, ids, events, trace)
        with run.lock:
            if self.reads_steps:
                ended, base = run.ended_steps, run.steps_base
                start = self._steps_at - base
                if start < 0:
                    self.lost -= start
                    start = 0
                count = len(ended)
                steps_at = base + start
                self._steps_at = base + count
                if count > start:
                    steps = ended[start:count]
                changed = run.amended_steps
                if len(changed) > self._amended:
                    amended = self._read_amended(changed, ended, base)
            if self.reads_events:
                events_now, ids_now, base = run.events, run.event_span_ids, run.events_base
                if self._events is not events_now:
                    self._events, self._events_at = events_now, 0
                start = self._events_at - base
                if start < 0:
                    self.lost -= start
                    start = 0
                count = min(len(events_now), len(ids_now))  # whole once both are in
                self._events_at = base + count
                if count > start:
                    ids = ids_now[start:count]
                    events = events_now[start:count]
            if self.reads_trace:
                trace_now, base = run.raw_trace, run.trace_base
                if self._trace is not trace_now:
                    self._trace, self._trace_at = trace_now, 0
                start = self._trace_at - base
                if start < 0:
                    self.lost -= start
                    start = 0
                count = len(trace_now)
                self._trace_at = base + count
                if count > start:
                    trace = trace_now[start:count]
        return News(steps_at, steps, amended, ids, events, trace)

    def _read_amended(
        self, changed: list[StepFrame], ended: list[StepFrame], base: int
    ) -> list[tuple[int, StepFrame]]:
        read: list[tuple[int, StepFrame]] = []
        count = len(changed)
        for index in range(self._amended, count):
            frame = changed[index]
            try:
                read.append((base + ended.index(frame), frame))
            except ValueError:
                self.lost += 1  # trimmed since: its row stays as first written
        self._amended = count
        return read
