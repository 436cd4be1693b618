"""The ``RunStore`` protocol and the plain rows every backend reads and writes.

This module owns the contract between the writer (``StoreWriter``, which turns
live runs into rows) and the backends (``SQLiteStore`` today): rows are
frozen, already JSON-shaped data, so a backend only maps them to its tables.
``StoredRun`` is what a backend gives back for one run, with its events and
ledger rebuilt as steptrace's own types and the summary recomputed from the
stored rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .._run import CompletedStep
    from ..events import AgentEvent

__all__ = [
    "EventRow",
    "RunRow",
    "RunStore",
    "SpanRow",
    "StepRow",
    "StoredRun",
    "WriteBatch",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRow:
    """A run's header and totals (one row of ``runs``)."""

    id: str
    name: str
    status: str
    """``running``, ``completed`` or ``failed``."""
    started_at: float
    ended_at: float | None = None
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    llm_calls: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanRow:
    """One ended span: the fields of ``Span.to_dict()``."""

    run_id: str
    span_id: int
    parent_id: int | None
    name: str
    kind: str
    start_ns: int
    end_ns: int | None
    status: str
    error: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRow:
    """The ``seq``-th agent event of a run, as ``event.to_dict()``."""

    run_id: str
    seq: int
    span_id: int | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRow:
    """The ``seq``-th row of a run's completed-step ledger, as ``to_dict()``."""

    run_id: str
    seq: int
    data: dict[str, Any]


@dataclass(slots=True)
class WriteBatch:
    """Rows to write in one transaction. A row whose key exists replaces it."""

    runs: list[RunRow] = field(default_factory=list)
    spans: list[SpanRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    steps: list[StepRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.runs) + len(self.spans) + len(self.events) + len(self.steps)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredRun:
    """One run read back from a store."""

    run: RunRow
    spans: list[SpanRow]
    """Ended spans, in start order; ``parent_id`` links the tree."""
    events: list[AgentEvent]
    event_span_ids: list[int | None]
    """For each event, the span it was emitted in."""
    completed_steps: list[CompletedStep]
    summary: dict[str, Any]
    """``Run.summary()``'s keys, recomputed from the stored rows."""

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def status(self) -> str:
        return self.run.status

    def children(self, span_id: int | None) -> list[SpanRow]:
        """The spans whose parent is ``span_id`` (``None``: the roots)."""
        return [s for s in self.spans if s.parent_id == span_id]


_STEP_STATUSES = ("completed", "failed", "skipped", "escalated")


def summarize(
    run: RunRow, events: Sequence[AgentEvent], steps: Sequence[CompletedStep]
) -> dict[str, Any]:
    """``Run.summary()`` rebuilt from stored rows (``duration_ms`` is ``None``
    while the run has no end)."""
    from ..events import summarize_events

    statuses = Counter(step.status for step in steps)
    duration = None if run.ended_at is None else round((run.ended_at - run.started_at) * 1000, 3)
    return {
        "run_id": run.id,
        "name": run.name,
        "status": run.status,
        "duration_ms": duration,
        "llm_calls": run.llm_calls,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cost_usd": run.cost_usd,
        "steps": {s: statuses.get(s, 0) for s in _STEP_STATUSES},
        "budget": run.budget,
        "agent": summarize_events(events),
    }


@runtime_checkable
class RunStore(Protocol):
    """Where runs are kept. Implementations: ``SQLiteStore``.

    Contract: thread-safe; ``write`` applies a whole batch in one transaction
    or nothing of it (and raises), so a failure never damages what is already
    stored; reads never see half a batch.
    """

    def write(self, batch: WriteBatch) -> None:
        """Insert or replace every row of ``batch`` in one transaction."""
        ...

    def list_runs(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRow]:
        """Runs, newest start first, optionally filtered, one page."""
        ...

    def get_run(self, run_id: str) -> StoredRun | None:
        """One run with its spans, events, ledger and summary; ``None`` if unknown."""
        ...

    def close(self) -> None:
        """Release the store's connections; further use raises."""
        ...
