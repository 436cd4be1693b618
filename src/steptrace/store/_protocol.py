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
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .._run import CompletedStep
    from ..events import AgentEvent, LlmTraceEntry

__all__ = [
    "AGGREGATE_KEYS",
    "Aggregate",
    "AggregateKey",
    "BatchRejected",
    "CallLog",
    "EventRow",
    "LlmCallRow",
    "RunRow",
    "RunStore",
    "SpanRow",
    "StepRow",
    "StoredRun",
    "TranscriptRow",
    "WriteBatch",
]

RUN_STATUSES = ("running", "completed", "over_budget", "failed", "interrupted")
"""Every status a stored run can have."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRow:
    """A run's header and totals (one row of ``runs``)."""

    id: str
    name: str
    status: str
    """``running``, ``completed``, ``failed``, ``over_budget`` (it ended with
    usage over a limit, e.g. recorded late) or ``interrupted`` (its process
    died before the run ended)."""
    started_at: float
    ended_at: float | None = None
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    llm_calls: int = 0
    pid: int | None = None
    host: str | None = None
    """The process (and machine) writing the run while it runs."""
    heartbeat_at: float | None = None
    """When that process last said it was alive (``time.time()``)."""
    parent_run_id: str | None = None
    """The run this one was opened in (a child run), ``None`` for a top-level
    run. A parent's totals include its children's usage."""
    parent_span_id: int | None = None
    """The span of the parent run the child was opened under."""
    replay_of: str | None = None
    """The run this one replays (``steptrace replay``). Written from the
    ``replay_of`` key of the metadata when not given. Replays are left out of
    spend totals."""
    write_errors: int = 0
    """Rows of this run the store refused (a value it cannot hold): counted by
    the store, never written from a ``RunRow``."""
    write_error: str | None = None
    """The last of those refusals, saying which row and why."""

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at

    @property
    def is_top_level(self) -> bool:
        return self.parent_run_id is None


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
    context: dict[str, Any] = field(default_factory=dict)
    """What the live frame knew (``steptrace._span_context.span_context``)."""


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


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmCallRow:
    """The ``seq``-th entry of a run's LLM call trace log, with where it was
    charged (``span_id`` of the recording step, persona or run span; the
    innermost step's and persona's names) and its wall time ``at``."""

    run_id: str
    seq: int
    span_id: int | None
    step: str | None
    persona: str | None
    model: str
    input_tokens: int
    output_tokens: int
    cache_tokens: int
    cost_usd: float | None
    """``None`` when no price was known."""
    duration_ms: int
    at: float

    def entry(self) -> LlmTraceEntry:
        """The seed's trace log entry for this row."""
        from ..events import LlmTraceEntry

        return LlmTraceEntry(
            self.model,
            self.input_tokens,
            self.output_tokens,
            self.duration_ms,
            self.cost_usd,
            self.cache_tokens,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptRow:
    """The content of one ``llm_call`` request, keyed by its ``chat`` span.

    ``request`` is ``LlmRequest.fingerprint_data()`` and ``response`` the
    cassette's response shape, both with credentials redacted; both are
    ``None`` when the writer was told to store no content."""

    run_id: str
    span_id: int
    request: dict[str, Any] | None
    response: dict[str, Any] | None


@dataclass(slots=True)
class WriteBatch:
    """Rows to write in one transaction. A row whose key exists replaces it.

    ``heartbeats`` are ``(run id, time)``: set the run's ``heartbeat_at`` if it
    is still ``running`` (nothing else of the row changes). ``write_errors``
    are ``(run id, rows, message)``: add ``rows`` to the run's ``write_errors``
    and make ``message`` its ``write_error`` (a run header written later keeps
    both)."""

    runs: list[RunRow] = field(default_factory=list)
    spans: list[SpanRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    steps: list[StepRow] = field(default_factory=list)
    llm_calls: list[LlmCallRow] = field(default_factory=list)
    transcripts: list[TranscriptRow] = field(default_factory=list)
    heartbeats: list[tuple[str, float]] = field(default_factory=list)
    write_errors: list[tuple[str, int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.runs)
            + len(self.spans)
            + len(self.events)
            + len(self.steps)
            + len(self.llm_calls)
            + len(self.transcripts)
            + len(self.heartbeats)
            + len(self.write_errors)
        )


class BatchRejected(Exception):
    """The store refused a batch because of its data (a value its columns
    cannot hold, text it cannot encode, JSON that cannot be encoded), not
    because of its own state: the same rows will be refused again, other rows
    can still be written. The driver's error is the ``__cause__``.
    ``StoreWriter`` then writes the batch run by run and row by row
    (``_isolation.write_isolated``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFilter:
    """The filters of ``list_runs``/``count_runs`` (``None`` means any), as
    backends pass them to ``_queries.run_filter_clause``."""

    name: str | None = None
    status: str | None = None
    persona: str | None = None
    started_after: float | None = None
    started_before: float | None = None
    top_level: bool = False
    parent_run_id: str | None = None


AggregateKey = Literal["model", "persona", "step", "day"]
AGGREGATE_KEYS: tuple[AggregateKey, ...] = ("model", "persona", "step", "day")


class Aggregate(NamedTuple):
    """Usage summed over LLM calls sharing one key (a model, a persona, a step
    name, or a UTC day ``YYYY-MM-DD``; ``None`` for calls outside any persona
    or step)."""

    key: str | None
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    """What the calls of known price cost."""
    unpriced_calls: int = 0
    """Calls of unknown price, left out of ``cost_usd`` (never counted as $0)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredRun:
    """One run read back from a store."""

    run: RunRow
    spans: list[SpanRow]
    """Ended spans, in start order; ``parent_id`` links the tree."""
    events: Sequence[AgentEvent]
    """The agent events, in order. Read back from a store, each is built
    from its row when first read (``_stored_events.BuiltOnRead``, equal to
    the list of them); one whose row cannot be read raises ``ValueError``
    naming the run and the row."""
    event_span_ids: list[int | None]
    """For each event, the span it was emitted in."""
    completed_steps: list[CompletedStep]
    llm_calls: Sequence[LlmCallRow]
    """The LLM call trace log, in order (read back from a store, each row is
    built when first read, as ``events``)."""
    summary: dict[str, Any]
    """``Run.summary()``'s keys, recomputed from the stored rows."""
    child_run_ids: list[str] = field(default_factory=list)
    """The runs opened inside this one (its children), in start order."""

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def status(self) -> str:
        return self.run.status

    @property
    def llm_trace(self) -> list[LlmTraceEntry]:
        """The seed's LLM call trace log, as ``Run.llm_trace`` gave it."""
        return [row.entry() for row in self.llm_calls]

    def children(self, span_id: int | None) -> list[SpanRow]:
        """The spans whose parent is ``span_id`` (``None``: the roots)."""
        return [s for s in self.spans if s.parent_id == span_id]


_STEP_STATUSES = ("completed", "failed", "skipped", "escalated")


class CallLog(NamedTuple):
    """The columns of a run's LLM call log ``summarize`` reads, in log order."""

    input_tokens: Sequence[int] = ()
    output_tokens: Sequence[int] = ()
    cost_usd: Sequence[float | None] = ()


def summarize(
    run: RunRow,
    agent: dict[str, Any],
    steps: Sequence[CompletedStep],
    calls: CallLog,
) -> dict[str, Any]:
    """``Run.summary()`` rebuilt from stored rows (``duration_ms`` is ``None``
    while the run has no end), with ``agent``, the events' summary
    (``summarize_events``'s dict).

    The run row holds the totals of the process that opened the run; when
    other processes continued it (``steptrace.extract``), their calls are in
    the LLM call log too, and the totals are summed from the log instead."""
    from ..budget import PICO_PER_USD

    statuses = Counter(step.status for step in steps)
    duration = None if run.ended_at is None else round((run.ended_at - run.started_at) * 1000, 3)
    llm_calls, input_tokens, output_tokens = run.llm_calls, run.input_tokens, run.output_tokens
    cost_usd = run.cost_usd
    # Calls of unknown cost are stored with cost NULL (the log is complete
    # unless tracing was off or retention trimmed it).
    unpriced_calls = sum(1 for cost in calls.cost_usd if cost is None)
    if len(calls.cost_usd) > run.llm_calls:
        llm_calls = len(calls.cost_usd)
        input_tokens = sum(calls.input_tokens)
        output_tokens = sum(calls.output_tokens)
        # Summed in picodollars, as the ledgers do, so the total is exact.
        pico = sum(round((cost or 0.0) * PICO_PER_USD) for cost in calls.cost_usd)
        cost_usd = pico / PICO_PER_USD
    return {
        "run_id": run.id,
        "name": run.name,
        "status": run.status,
        "duration_ms": duration,
        "llm_calls": llm_calls,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": cost_usd,
        "unpriced_calls": unpriced_calls,
        "steps": {s: statuses.get(s, 0) for s in _STEP_STATUSES},
        "budget": run.budget,
        "agent": agent,
    }


@runtime_checkable
class RunStore(Protocol):
    """Where runs are kept. Implementations: ``SQLiteStore``, ``PostgresStore``.

    Contract: thread-safe; ``write`` applies a whole batch in one transaction
    or nothing of it (and raises: ``BatchRejected`` when the batch's data is at
    fault), so a failure never damages what is already stored; reads never see
    half a batch. Opening a store applies pending
    migrations and marks runs whose process died ``interrupted``.
    """

    def write(self, batch: WriteBatch) -> None:
        """Insert or replace every row of ``batch`` in one transaction."""
        ...

    def list_runs(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        persona: str | None = None,
        started_after: float | None = None,
        started_before: float | None = None,
        top_level: bool = False,
        parent_run_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRow]:
        """Runs matching every filter given, newest start first, one page.

        ``persona``: runs with a span of that persona. ``started_after``
        (inclusive) and ``started_before`` (exclusive) bound ``started_at``
        in ``time.time()`` seconds. ``top_level``: one row an execution, the
        runs opened outside any other; each is listed when it or one of its
        child runs matches the filters. ``parent_run_id``: the children of
        that run."""
        ...

    def count_runs(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        persona: str | None = None,
        started_after: float | None = None,
        started_before: float | None = None,
        top_level: bool = False,
        parent_run_id: str | None = None,
    ) -> int:
        """How many runs match the filters (as ``list_runs``), for paging."""
        ...

    def get_run(self, run_id: str) -> StoredRun | None:
        """One run with its spans, events, ledger, trace log and summary;
        ``None`` if unknown."""
        ...

    def run_ids(self, prefix: str = "", *, limit: int = 50) -> list[str]:
        """Ids of runs starting with ``prefix``, newest first (to resolve a
        shortened id or suggest near matches)."""
        ...

    def events(
        self,
        run_id: str,
        *,
        types: Sequence[str] | None = None,
        after_seq: int = -1,
        limit: int = 1000,
    ) -> list[EventRow]:
        """One page of a run's events in order: those after ``after_seq`` whose
        ``type`` is in ``types`` (any when ``None``). Page on with the last
        row's ``seq``."""
        ...

    def event_counts(self, run_id: str) -> dict[str, int]:
        """How many events of each type the run has."""
        ...

    def transcripts(
        self, run_id: str, span_ids: Sequence[int] | None = None
    ) -> list[TranscriptRow]:
        """The run's LLM call transcripts (those of ``span_ids`` only, if given),
        in span order."""
        ...

    def aggregate(
        self,
        by: AggregateKey,
        *,
        run_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[Aggregate]:
        """LLM usage summed by ``by`` over every stored call (one run's with
        ``run_id``; ``since`` inclusive and ``until`` exclusive bound the call
        time), most expensive first. Each call is counted once, in the run
        that made it (a parent's own calls do not include its children's);
        without ``run_id``, replays' calls are left out: they spent nothing."""
        ...

    def mark_interrupted(self, *, stale_after: float = ...) -> list[str]:
        """Mark ``running`` runs whose process is gone ``interrupted`` and return
        their ids: a process on this host that no longer exists, or any run
        whose heartbeat is older than ``stale_after`` seconds."""
        ...

    def close(self) -> None:
        """Release the store's connections; further use raises."""
        ...
