"""The store's paged reads: ``PagedReads``, the questions a viewer asks of a store.

``RunStore.get_run`` loads a whole run; a page showing a run of 100,000
events needs only a part of it at a time: its header, its structure (the run,
persona, step and custom spans, with a count of the LLM-call and tool spans
under each), its ledger and event counts, then events, leaf spans and LLM
calls a page at a time; and over many runs, a sorted page of runs, their
totals and the values the filters can take. ``PagedReads`` is that read API,
answered in SQL for the SQLite and PostgreSQL stores (``_paged_sql``) and by
loading runs through the ``RunStore`` protocol for any other store
(``LoadedReads``); ``paged_reads(store)`` picks the fastest for a store. Both
give the same answers (a test holds them equal). This module owns the
protocol and the values it answers with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from ._protocol import Aggregate, AggregateKey, EventRow, RunRow, RunStore, SpanRow, TranscriptRow
from ._search import SearchHit

__all__ = [
    "INLINE_SPAN_LIMIT",
    "LEAF_KINDS",
    "SORT_KEYS",
    "STRUCTURE_LIMIT",
    "PagedReads",
    "RunFilters",
    "RunStructure",
    "RunTotals",
    "SortKey",
    "sort_value",
    "structure_of",
]

SortKey = Literal["started", "name", "status", "duration", "tokens", "cost"]
SORT_KEYS: tuple[SortKey, ...] = ("started", "name", "status", "duration", "tokens", "cost")

LEAF_KINDS = ("llm_call", "tool")
"""Span kinds that come in pages under their parent: a run has one per call."""
INLINE_SPAN_LIMIT = 1000
"""A run with at most this many spans gives them all with its structure."""
STRUCTURE_LIMIT = 5000
"""At most this many run/persona/step/custom spans in a run's structure."""


@dataclass(frozen=True, slots=True)
class RunFilters:
    """Filters of a runs page (``None``: any): exact name, status, persona."""

    name: str | None = None
    status: str | None = None
    persona: str | None = None

    def store_kwargs(self) -> dict[str, Any]:
        """As ``RunStore.list_runs`` takes them."""
        return {"name": self.name, "status": self.status, "persona": self.persona}


@dataclass(frozen=True, slots=True)
class RunTotals:
    """Sums over every run matching a filter."""

    runs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    llm_calls: int = 0


@dataclass(frozen=True, slots=True)
class RunStructure:
    """A run's spans for its first screen.

    ``spans`` are in start order: every span when ``complete``, else the
    run/persona/step/custom spans (at most ``STRUCTURE_LIMIT``, ``truncated``
    beyond) and the leaf spans some of them sit under. ``leaf_counts`` gives,
    per parent span id, how many LLM-call and tool spans it has."""

    spans: list[SpanRow]
    leaf_counts: dict[int, int]
    span_count: int
    complete: bool
    truncated: bool = False


def sort_value(run: RunRow, key: SortKey) -> Any:
    """The value ``key`` sorts ``run`` by (``None``, sorted last, for a run
    without a duration)."""
    if key == "name":
        return run.name
    if key == "status":
        return run.status
    if key == "duration":
        return run.duration_s
    if key == "tokens":
        return run.input_tokens + run.output_tokens
    if key == "cost":
        return run.cost_usd
    return run.started_at


def structure_of(spans: Sequence[SpanRow]) -> RunStructure:
    """``RunStructure`` from every span of a run (in start order)."""
    leaf_counts: dict[int, int] = {}
    for span in spans:
        if span.kind in LEAF_KINDS and span.parent_id is not None:
            leaf_counts[span.parent_id] = leaf_counts.get(span.parent_id, 0) + 1
    if len(spans) <= INLINE_SPAN_LIMIT:
        return RunStructure(list(spans), leaf_counts, len(spans), True)
    structural = [s for s in spans if s.kind not in LEAF_KINDS]
    truncated = len(structural) > STRUCTURE_LIMIT
    kept = structural[:STRUCTURE_LIMIT]
    by_id = {s.span_id: s for s in spans}
    kept_ids = {s.span_id for s in kept}
    # A step started inside a tool sits under a leaf span: bring its ancestors.
    for span in list(kept):
        parent = span.parent_id
        while parent is not None and parent not in kept_ids and parent in by_id:
            kept_ids.add(parent)
            parent = by_id[parent].parent_id
    shown = [s for s in spans if s.span_id in kept_ids]
    return RunStructure(shown, leaf_counts, len(spans), False, truncated)


@runtime_checkable
class PagedReads(Protocol):
    """A store read a page at a time (see the module docstring).

    Contract: thread-safe; every answer is what the rows of ``store`` say at
    the time of the call (a running run's answers move); an unknown run is
    ``None`` (or empty), never an error. ``close`` releases what the reader
    opened itself; the store stays open."""

    @property
    def store(self) -> RunStore:
        """The store read."""
        ...

    def close(self) -> None: ...

    # -- runs ---------------------------------------------------------------------

    def runs_page(
        self, filters: RunFilters, sort: SortKey, descending: bool, limit: int, offset: int
    ) -> tuple[list[RunRow], int]:
        """One page of the runs matching ``filters`` in ``sort`` order (ties and
        runs without the value last, newest first), and how many match."""
        ...

    def totals(self, filters: RunFilters) -> RunTotals:
        """The matching runs, and what they spent: each call counted once (a
        child run whose parent matches too is in its parent's totals) and no
        replay (its calls are the original's)."""
        ...

    def child_runs(self, run_id: str) -> list[RunRow]:
        """The runs opened inside ``run_id``, in start order."""
        ...

    def personas(self, run_ids: Sequence[str]) -> dict[str, list[str]]:
        """Each run's personas (every persona span, not only those that called
        a model), in the order they started."""
        ...

    def facets(self) -> dict[str, list[str]]:
        """The ``names``, ``statuses`` and ``personas`` the filters can take."""
        ...

    def aggregate(self, by: AggregateKey, *, run_id: str | None = None) -> list[Aggregate]:
        """``RunStore.aggregate`` over every run, or one run's calls."""
        ...

    # -- one run ------------------------------------------------------------------

    def header(self, run_id: str) -> RunRow | None: ...

    def live_header(self, run_id: str) -> RunRow | None:
        """The header as it is now (a running run's totals move)."""
        ...

    def structure(self, run_id: str) -> RunStructure | None: ...

    def children(
        self, run_id: str, parent_id: int, offset: int, limit: int, *, leaves_only: bool = False
    ) -> tuple[list[SpanRow], int]:
        """One page of the spans directly under ``parent_id`` (only the LLM-call
        and tool spans with ``leaves_only``) in start order, and their count."""
        ...

    def span(self, run_id: str, span_id: int) -> SpanRow | None: ...

    def span_count(self, run_id: str) -> int: ...

    def ledger(self, run_id: str) -> list[dict[str, Any]]:
        """The run's completed-step ledger, as ``CompletedStep.to_dict()``."""
        ...

    def llm_spans(self, run_id: str, offset: int, limit: int) -> tuple[list[SpanRow], int]:
        """One page of the run's ``llm_call`` spans in start order, and their count."""
        ...

    def event_counts(self, run_id: str) -> dict[str, int]: ...

    def events_page(
        self, run_id: str, types: Sequence[str] | None, offset: int, limit: int
    ) -> list[EventRow]:
        """Events ``offset`` to ``offset + limit`` of the run's stream (only
        ``types``, if given)."""
        ...

    def events_after(
        self, run_id: str, types: Sequence[str] | None, after_seq: int, limit: int
    ) -> list[EventRow]:
        """At most ``limit`` events after ``after_seq`` (only ``types``, if given)."""
        ...

    def event_at(self, run_id: str, seq: int) -> tuple[EventRow, int] | None:
        """The event ``seq`` and its position in the run's whole stream."""
        ...

    def agent_summary(self, run_id: str) -> dict[str, Any] | None:
        """``summarize_events`` over the run's events (the summary's ``agent``)."""
        ...

    def search(self, run_id: str, needle: str, limit: int) -> tuple[list[SearchHit], bool]:
        """Where ``needle`` is in the run (prompts, responses, tool arguments
        and results, errors, spans, events): at most ``limit`` hits, and
        whether there may be more."""
        ...

    def transcript(self, run_id: str, span_id: int) -> TranscriptRow | None:
        """The prompt and response of the LLM call span ``span_id``."""
        ...
