"""The paged reads over any ``RunStore``: ``LoadedReads``, the fallback.

The ``RunStore`` protocol has no way to read part of a run's spans or its
header by id, so ``LoadedReads`` answers ``PagedReads``' questions by loading
the run with ``get_run`` and keeping the last few ended runs (an ended run
never changes); events come in pages through ``RunStore.events``. The SQLite
and PostgreSQL stores are read in SQL instead (``_paged_sql``), so a run of
100,000 events opens without loading it; ``paged_reads`` chooses.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..events import summarize_events
from . import _search
from ._paged import (
    LEAF_KINDS,
    RunFilters,
    RunStructure,
    RunTotals,
    SortKey,
    sort_value,
    structure_of,
)
from ._protocol import (
    Aggregate,
    AggregateKey,
    EventRow,
    RunRow,
    RunStore,
    SpanRow,
    StoredRun,
    TranscriptRow,
)
from ._stored_events import BuiltOnRead

__all__ = ["LoadedReads"]

_ENDED_RUNS_KEPT = 4
_PAGE = 5000


@dataclass(slots=True)
class _EventCheckpoints:
    """For one (run, types) stream: the seq just before some offsets, so the
    protocol path can page to an offset without walking from the start."""

    before: dict[int, int] = field(default_factory=lambda: {0: -1})


class LoadedReads:
    """``PagedReads`` over any ``RunStore`` (see the module docstring)."""

    def __init__(self, store: RunStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._ended: OrderedDict[str, StoredRun] = OrderedDict()
        self._checkpoints: dict[tuple[str, tuple[str, ...] | None], _EventCheckpoints] = {}

    @property
    def store(self) -> RunStore:
        return self._store

    def close(self) -> None:
        """Nothing to release: the store stays open."""

    # -- runs -------------------------------------------------------------------------

    def _all_runs(self, filters: RunFilters) -> list[RunRow]:
        rows: list[RunRow] = []
        while True:
            page = self.store.list_runs(**filters.store_kwargs(), limit=_PAGE, offset=len(rows))
            rows.extend(page)
            if len(page) < _PAGE:
                return rows

    def runs_page(
        self, filters: RunFilters, sort: SortKey, descending: bool, limit: int, offset: int
    ) -> tuple[list[RunRow], int]:
        """One page of the runs matching ``filters`` in ``sort`` order, and how
        many match in all."""
        if sort == "started" and descending:
            rows = self.store.list_runs(**filters.store_kwargs(), limit=limit, offset=offset)
            return rows, self.store.count_runs(**filters.store_kwargs())
        every = self._all_runs(filters)
        known = [r for r in every if sort_value(r, sort) is not None]
        unknown = [r for r in every if sort_value(r, sort) is None]
        # Ties keep the store's order (newest first); unknown values go last.
        known.sort(key=lambda r: sort_value(r, sort), reverse=descending)
        ordered = known + unknown
        return ordered[offset : offset + limit], len(ordered)

    def totals(self, filters: RunFilters) -> RunTotals:
        """The matching runs, and what they spent: each call counted once (a
        child run whose parent matches too is in its parent's totals) and no
        replay (its calls are the original's)."""
        rows = self._all_runs(filters)
        ids = {r.id for r in rows}
        spent = [r for r in rows if r.replay_of is None and r.parent_run_id not in ids]
        return RunTotals(
            runs=len(rows),
            input_tokens=sum(r.input_tokens for r in spent),
            output_tokens=sum(r.output_tokens for r in spent),
            cost_usd=sum(r.cost_usd for r in spent),
            llm_calls=sum(r.llm_calls for r in spent),
        )

    def child_runs(self, run_id: str) -> list[RunRow]:
        """The runs opened inside ``run_id``, in start order."""
        rows = self.store.list_runs(parent_run_id=run_id, limit=_PAGE)
        return sorted(rows, key=lambda r: (r.started_at, r.id))

    def personas(self, run_ids: Sequence[str]) -> dict[str, list[str]]:
        """Each run's personas (every persona span, not only those that called a
        model, as the store's ``persona`` filter reads them), in the order they
        started. The protocol has no query for them: this loads each run."""
        found: dict[str, list[str]] = {}
        for run_id in run_ids:
            stored = self._stored(run_id)
            spans = [] if stored is None else stored.spans
            names = [s.name for s in sorted(spans, key=lambda s: s.start_ns) if s.kind == "persona"]
            found[run_id] = list(dict.fromkeys(names))
        return found

    def facets(self) -> dict[str, list[str]]:
        """The names, statuses and personas the filters can choose from."""
        rows = self._all_runs(RunFilters())
        personas = self.personas([r.id for r in rows])
        return {
            "names": sorted({r.name for r in rows}),
            "statuses": sorted({r.status for r in rows}),
            "personas": sorted({p for names in personas.values() for p in names}),
        }

    def aggregate(self, by: AggregateKey, *, run_id: str | None = None) -> list[Aggregate]:
        return self.store.aggregate(by, run_id=run_id)

    # -- one run ----------------------------------------------------------------------

    def _stored(self, run_id: str) -> StoredRun | None:
        with self._lock:
            cached = self._ended.get(run_id)
            if cached is not None:
                self._ended.move_to_end(run_id)
                return cached
        stored = self.store.get_run(run_id)
        if stored is not None and stored.status != "running":
            with self._lock:
                self._ended[run_id] = stored
                while len(self._ended) > _ENDED_RUNS_KEPT:
                    self._ended.popitem(last=False)
        return stored

    def header(self, run_id: str) -> RunRow | None:
        stored = self._stored(run_id)
        return None if stored is None else stored.run

    def live_header(self, run_id: str) -> RunRow | None:
        """The header as it is now (a running run's totals move)."""
        for row in self.store.list_runs(status="running", limit=_PAGE):
            if row.id == run_id:
                return row
        return self.header(run_id)

    def structure(self, run_id: str) -> RunStructure | None:
        stored = self._stored(run_id)
        return None if stored is None else structure_of(stored.spans)

    def children(
        self, run_id: str, parent_id: int, offset: int, limit: int, *, leaves_only: bool = False
    ) -> tuple[list[SpanRow], int]:
        """One page of the spans directly under ``parent_id`` (only the LLM-call
        and tool spans with ``leaves_only``), and their count."""
        stored = self._stored(run_id)
        rows = [] if stored is None else stored.children(parent_id)
        if leaves_only:
            rows = [s for s in rows if s.kind in LEAF_KINDS]
        return rows[offset : offset + limit], len(rows)

    def span(self, run_id: str, span_id: int) -> SpanRow | None:
        stored = self._stored(run_id)
        if stored is None:
            return None
        return next((s for s in stored.spans if s.span_id == span_id), None)

    def span_count(self, run_id: str) -> int:
        stored = self._stored(run_id)
        return 0 if stored is None else len(stored.spans)

    def ledger(self, run_id: str) -> list[dict[str, Any]]:
        stored = self._stored(run_id)
        return [] if stored is None else [step.to_dict() for step in stored.completed_steps]

    def llm_spans(self, run_id: str, offset: int, limit: int) -> tuple[list[SpanRow], int]:
        """One page of the run's ``llm_call`` spans in start order, and their count."""
        stored = self._stored(run_id)
        rows = [] if stored is None else [s for s in stored.spans if s.kind == "llm_call"]
        return rows[offset : offset + limit], len(rows)

    def event_counts(self, run_id: str) -> dict[str, int]:
        return self.store.event_counts(run_id)

    def events_page(
        self, run_id: str, types: Sequence[str] | None, offset: int, limit: int
    ) -> list[EventRow]:
        """Events ``offset`` to ``offset + limit`` of the run's stream (only
        ``types``, if given), walking from the nearest known offset."""
        key = (run_id, None if types is None else tuple(types))
        with self._lock:
            marks = self._checkpoints.setdefault(key, _EventCheckpoints())
            start = max(o for o in marks.before if o <= offset)
            after = marks.before[start]
        while start < offset:
            step = min(_PAGE, offset - start)
            skipped = self.store.events(run_id, types=types, after_seq=after, limit=step)
            if not skipped:
                return []
            start += len(skipped)
            after = skipped[-1].seq
            with self._lock:
                marks.before[start] = after
        rows = self.store.events(run_id, types=types, after_seq=after, limit=limit)
        if rows:
            with self._lock:
                marks.before[offset + len(rows)] = rows[-1].seq
        return rows

    def events_after(
        self, run_id: str, types: Sequence[str] | None, after_seq: int, limit: int
    ) -> list[EventRow]:
        return self.store.events(run_id, types=types, after_seq=after_seq, limit=limit)

    def agent_summary(self, run_id: str) -> dict[str, Any] | None:
        """``summarize_events`` over the run's events (the summary's ``agent``).

        A run a store read back from its rows (events ``BuiltOnRead``) had it
        added up from the decoded rows when read (``stored_run``): taken as
        it is, without building an event object. Events a store holds as
        objects are added up from them."""
        stored = self._stored(run_id)
        if stored is None:
            return None
        if isinstance(stored.events, BuiltOnRead):
            agent: dict[str, Any] = copy.deepcopy(stored.summary["agent"])  # the cache's own
            return agent
        return summarize_events(stored.events)

    def event_at(self, run_id: str, seq: int) -> tuple[EventRow, int] | None:
        """The event ``seq`` and its position in the run's whole stream."""
        after, offset = -1, 0
        while True:
            page = self.store.events(run_id, after_seq=after, limit=_PAGE)
            for row in page:
                if row.seq == seq:
                    return row, offset
                if row.seq > seq:
                    return None
                offset += 1
            if len(page) < _PAGE:
                return None
            after = page[-1].seq

    def search(self, run_id: str, needle: str, limit: int) -> tuple[list[_search.SearchHit], bool]:
        """Where ``needle`` is in the run (see ``_search``), at most ``limit``
        hits, and whether there may be more."""
        stored = self._stored(run_id)
        if stored is None:
            return [], False
        events: list[EventRow] = []
        while True:
            after = events[-1].seq if events else -1
            page = self.store.events(run_id, after_seq=after, limit=_PAGE)
            events.extend(page)
            if len(page) < _PAGE:
                break
        rows = _search.scan_rows(stored, self.store.transcripts(run_id), events, needle, limit)
        found = _search.hits(rows, needle, limit)
        return found, rows.full or len(found) >= limit

    def transcript(self, run_id: str, span_id: int) -> TranscriptRow | None:
        rows = self.store.transcripts(run_id, [span_id])
        return rows[0] if rows else None
