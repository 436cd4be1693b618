"""The portal's JSON API: one function per endpoint, from query to JSON-ready dict.

Handlers are plain blocking functions over the store's ``PagedReads`` (the app
runs them in worker threads); this module only checks parameters and shapes
the answers. Bad input raises ``ApiError`` with the HTTP status and a
message naming the parameter and what was wrong; an unknown run or span is a
404 naming it. Span ids travel as strings (JavaScript numbers hold only 53
bits), span times as milliseconds from the run's start. A run's page may name
it as the CLI does (``resolve_run``): an id, a unique prefix, ``last`` or a
run name (its latest run).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..store import (
    SORT_KEYS,
    EventRow,
    PagedReads,
    RunFilters,
    RunRow,
    RunStructure,
    SearchHit,
    SortKey,
    SpanRow,
)

__all__ = ["ENDPOINTS", "ApiError", "Query"]

EVENT_TYPES = (
    "llm_call",
    "tool_execution",
    "tool_rejected",
    "loop_intervention",
    "context_compaction",
    "phase_change",
    "loop_complete",
    "schema_retry",
)
AGGREGATE_BY = ("model", "persona", "step", "day")
MAX_PAGE = 1000
MAX_QUERY = 200
"""The longest text a search accepts, in characters."""


class ApiError(Exception):
    """An answer other than 200: ``status``, a short ``code`` and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


Query = Mapping[str, str]
"""The request's query parameters (the last value of each name)."""


# -- parameters ----------------------------------------------------------------------


def _int_param(query: Query, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(
            400, "bad_parameter", f"`{name}` must be an integer from {low} to {high}, got {raw!r}"
        )
    return value


def _choice(query: Query, name: str, choices: Sequence[str], default: str | None) -> str | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise ApiError(
            400, "bad_parameter", f"`{name}` must be one of {', '.join(choices)}, got {raw!r}"
        )
    return raw


def _text(query: Query, name: str) -> str | None:
    raw = query.get(name)
    return raw if raw else None


def _types(query: Query) -> list[str] | None:
    raw = query.get("types")
    if raw is None:
        return None
    types = [t for t in raw.split(",") if t]
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise ApiError(
            400,
            "bad_parameter",
            f"`types`: unknown event type(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(EVENT_TYPES)}",
        )
    return types


_MAX_SPAN_ID = 2**63 - 1  # what a store's integer column holds


def _span_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= _MAX_SPAN_ID:
        raise ApiError(
            400,
            "bad_parameter",
            f"span id must be an integer from 0 to {_MAX_SPAN_ID}, got {raw[:40]!r}",
        )
    return value


# -- shapes --------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity (stored metadata may): those become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def run_json(
    run: RunRow, personas: Sequence[str] | None = None, unpriced: int | None = None
) -> dict[str, Any]:
    """A run's header as JSON; ``unpriced``: its calls of unknown price (see
    ``unpriced_calls``), when asked for."""
    duration = run.duration_s
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "duration_ms": None if duration is None else round(duration * 1000, 3),
        "error": run.error,
        "metadata": _finite(run.metadata),
        "budget": _finite(run.budget),
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cost_usd": run.cost_usd,
        "llm_calls": run.llm_calls,
        "host": run.host,
        "pid": run.pid,
        "heartbeat_at": run.heartbeat_at,
        "parent_run_id": run.parent_run_id,
        "parent_span_id": None if run.parent_span_id is None else str(run.parent_span_id),
        "replay_of": run.replay_of,
        "write_errors": run.write_errors,
        "write_error": run.write_error,
        **({} if personas is None else {"personas": list(personas)}),
        **({} if unpriced is None else {"unpriced_calls": unpriced}),
    }


def unpriced_calls(reads: PagedReads, run_id: str) -> int:
    """How many calls of the run and of the runs opened inside it have no known
    price: its cost (which holds its child runs') leaves them out, and the
    page says so (``$0.1500 + 2 unknown``), as ``steptrace show`` does."""
    count, todo, seen = 0, [run_id], {run_id}
    while todo:
        current = todo.pop()
        count += sum(a.unpriced_calls for a in reads.aggregate("model", run_id=current))
        for child in reads.child_runs(current):
            if child.id not in seen:  # a store edited into a cycle ends here
                seen.add(child.id)
                todo.append(child.id)
    return count


def _ms(ns: int | None, origin: int) -> float | None:
    return None if ns is None else round((ns - origin) / 1e6, 3)


def span_json(span: SpanRow, origin: int, leaf_count: int = 0) -> dict[str, Any]:
    return {
        "id": str(span.span_id),
        "parent_id": None if span.parent_id is None else str(span.parent_id),
        "name": span.name,
        "kind": span.kind,
        "status": span.status,
        "error": span.error,
        "start_ms": _ms(span.start_ns, origin),
        "end_ms": _ms(span.end_ns, origin),
        "metadata": _finite(span.metadata),
        "context": _finite(getattr(span, "context", {})),
        "leaf_count": leaf_count,
    }


def event_json(row: EventRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "span_id": None if row.span_id is None else str(row.span_id),
        "type": row.data.get("type"),
        "data": _finite(row.data),
    }


def hit_json(hit: SearchHit) -> dict[str, Any]:
    return {
        "kind": hit.kind,
        "span_id": None if hit.span_id is None else str(hit.span_id),
        "seq": hit.seq,
        "path": hit.path,
        "snippet": hit.snippet,
    }


def llm_call_json(span: SpanRow, origin: int) -> dict[str, Any]:
    """An ``llm_call`` span as a row of the LLM calls table."""
    meta = span.metadata
    duration = None if span.end_ns is None else round((span.end_ns - span.start_ns) / 1e6, 3)
    return {
        "span_id": str(span.span_id),
        "parent_id": None if span.parent_id is None else str(span.parent_id),
        "name": span.name,
        "status": span.status,
        "error": span.error,
        "start_ms": _ms(span.start_ns, origin),
        "duration_ms": duration,
        "model": meta.get("gen_ai.response.model") or meta.get("gen_ai.request.model"),
        "system": meta.get("gen_ai.system"),
        "input_tokens": meta.get("gen_ai.usage.input_tokens"),
        "output_tokens": meta.get("gen_ai.usage.output_tokens"),
        "cache_read_tokens": meta.get("steptrace.cache_read_tokens"),
        "cost_usd": _finite(meta.get("steptrace.cost_usd")),
        "iteration": meta.get("steptrace.agent.iteration"),
        "finish_reasons": meta.get("gen_ai.response.finish_reasons"),
        "metadata": _finite(meta),
    }


def origin_ns(run: RunRow) -> int:
    """The run's start in nanoseconds: span times are shown relative to it."""
    return round(run.started_at * 1e9)


def _structure_json(structure: RunStructure, origin: int) -> dict[str, Any]:
    return {
        "spans": [
            span_json(s, origin, structure.leaf_counts.get(s.span_id, 0)) for s in structure.spans
        ],
        "span_count": structure.span_count,
        "complete": structure.complete,
        "truncated": structure.truncated,
        "origin_ns": str(origin),
    }


# -- endpoints -----------------------------------------------------------------------


def so_far(reads: PagedReads, run: RunRow) -> RunRow:
    """``run`` with a running run's usage from its call log and its child
    runs': the store writes a run's totals only when it ends, so its header
    says 0 until then."""
    if run.ended_at is not None:
        return run
    usage = [
        a
        for run_id in (run.id, *(child.id for child in reads.child_runs(run.id)))
        for a in reads.aggregate("model", run_id=run_id)
    ]
    return dataclasses.replace(
        run,
        input_tokens=sum(a.input_tokens for a in usage),
        output_tokens=sum(a.output_tokens for a in usage),
        cost_usd=sum(a.cost_usd for a in usage),
        llm_calls=sum(a.llm_calls for a in usage),
    )


def _need_run(reads: PagedReads, run_id: str) -> RunRow:
    run = reads.header(run_id)
    if run is None:
        raise ApiError(404, "run_not_found", f"no run with id {run_id!r} in this store")
    return so_far(reads, run)


def _need_structure(reads: PagedReads, run_id: str) -> RunStructure:
    structure = reads.structure(run_id)
    if structure is None:
        raise ApiError(404, "run_not_found", f"no run with id {run_id!r} in this store")
    return structure


def runs(reads: PagedReads, query: Query) -> dict[str, Any]:
    """``GET /api/runs``: a page of runs with the filters' totals (what the
    matching runs spent, each call once: replays and children whose parent
    matches too are left out of the sums)."""
    filters = RunFilters(
        name=_text(query, "name"),
        status=_text(query, "status"),
        persona=_text(query, "persona"),
    )
    sort: SortKey = _choice(query, "sort", SORT_KEYS, "started")  # type: ignore[assignment]
    order = _choice(query, "order", ("asc", "desc"), "desc")
    limit = _int_param(query, "limit", 50, 1, 500)
    offset = _int_param(query, "offset", 0, 0, 10**9)
    rows, total = reads.runs_page(filters, sort, order == "desc", limit, offset)
    personas = reads.personas([r.id for r in rows])
    totals = reads.totals(filters)
    return {
        "runs": [run_json(so_far(reads, r), personas.get(r.id, [])) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
        "sort": sort,
        "order": order,
        "filters": {"name": filters.name, "status": filters.status, "persona": filters.persona},
        "totals": {
            "runs": totals.runs,
            "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens,
            "cost_usd": totals.cost_usd,
            "llm_calls": totals.llm_calls,
        },
    }


def facets(reads: PagedReads, query: Query) -> dict[str, Any]:
    """``GET /api/facets``: the values the runs list can be filtered by."""
    return reads.facets()


def aggregates(reads: PagedReads, query: Query) -> dict[str, Any]:
    """``GET /api/aggregates?by=model|persona|step|day``: cost over every run."""
    by = _choice(query, "by", AGGREGATE_BY, None)
    if by is None:
        raise ApiError(400, "bad_parameter", f"`by` is required: one of {', '.join(AGGREGATE_BY)}")
    rows = reads.aggregate(by)  # type: ignore[arg-type]
    return {
        "by": by,
        "rows": [
            {
                "key": a.key,
                "llm_calls": a.llm_calls,
                "input_tokens": a.input_tokens,
                "output_tokens": a.output_tokens,
                "cost_usd": a.cost_usd,
            }
            for a in rows
        ],
    }


_LATEST = ("last", "latest")
_AMBIGUOUS_SHOWN = 10


def resolve_run(reads: PagedReads, ref: str) -> str:
    """The id of the run ``ref`` names, as the CLI reads it: an id, ``last``
    (or ``latest``), a unique id prefix, or a run name (its latest run)."""
    ref = ref.strip()
    if ref and reads.header(ref) is not None:
        return ref
    if ref.lower() in _LATEST:
        newest = reads.store.list_runs(limit=1)
        if not newest:
            raise ApiError(404, "run_not_found", "the store holds no runs yet")
        return newest[0].id
    if ref:
        matches = reads.store.run_ids(ref, limit=_AMBIGUOUS_SHOWN + 1)
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ApiError(
                409,
                "ambiguous_run",
                f"run id prefix {ref!r} matches several runs: {', '.join(matches[:10])}"
                + (" and more" if len(matches) > _AMBIGUOUS_SHOWN else ""),
            )
        named = reads.store.list_runs(name=ref, limit=1)
        if named:
            return named[0].id
    raise ApiError(
        404,
        "run_not_found",
        f"no run {ref!r} in this store (not an id, an id prefix, `last` or a run name)",
    )


def run(reads: PagedReads, query: Query, run_id: str) -> dict[str, Any]:
    """``GET /api/runs/{ref}``: what the run's first screen shows (no events);
    ``ref`` as ``resolve_run`` reads it (the answer's ``run.id`` is the id)."""
    run_id = resolve_run(reads, run_id)
    structure = _need_structure(reads, run_id)
    head = _need_run(reads, run_id)
    counts = reads.event_counts(run_id)
    ledger = reads.ledger(run_id)
    statuses = dict.fromkeys(("completed", "failed", "skipped", "escalated"), 0)
    for row in ledger:
        statuses[row.get("status", "")] = statuses.get(row.get("status", ""), 0) + 1
    parent = None if head.parent_run_id is None else reads.header(head.parent_run_id)
    return {
        "run": run_json(
            head, reads.personas([run_id]).get(run_id, []), unpriced_calls(reads, run_id)
        ),
        "parent": None if parent is None else {"id": parent.id, "name": parent.name},
        "child_runs": [
            run_json(so_far(reads, child), unpriced=unpriced_calls(reads, child.id))
            for child in reads.child_runs(run_id)
        ],
        **_structure_json(structure, origin_ns(head)),
        "ledger": [
            {
                **_finite(row),
                "span_id": _str_id(row.get("span_id")),
                "parent_span_id": _str_id(row.get("parent_span_id")),
            }
            for row in ledger
        ],
        "event_counts": counts,
        "event_total": sum(counts.values()),
        "steps": statuses,
    }


def _str_id(value: Any) -> str | None:
    return None if value is None else str(value)


def live(reads: PagedReads, query: Query, run_id: str) -> dict[str, Any]:
    """``GET /api/runs/{id}/live``: the few numbers a running run's page polls."""
    head = reads.live_header(run_id)
    if head is None:
        raise ApiError(404, "run_not_found", f"no run with id {run_id!r} in this store")
    counts = reads.event_counts(run_id)
    return {
        "run": run_json(so_far(reads, head), unpriced=unpriced_calls(reads, run_id)),
        "event_total": sum(counts.values()),
        "event_counts": counts,
        "span_count": reads.span_count(run_id),
        "now": time.time(),
    }


def summary(reads: PagedReads, query: Query, run_id: str) -> dict[str, Any]:
    """``GET /api/runs/{id}/summary``: ``Run.summary()``'s keys, from the store."""
    head = _need_run(reads, run_id)
    agent = reads.agent_summary(run_id)
    statuses = dict.fromkeys(("completed", "failed", "skipped", "escalated"), 0)
    for row in reads.ledger(run_id):
        status = row.get("status")
        if status in statuses:
            statuses[status] += 1
    duration = head.duration_s
    return {
        "run_id": head.id,
        "name": head.name,
        "status": head.status,
        "duration_ms": None if duration is None else round(duration * 1000, 3),
        "llm_calls": head.llm_calls,
        "input_tokens": head.input_tokens,
        "output_tokens": head.output_tokens,
        "cost_usd": head.cost_usd,
        "steps": statuses,
        "budget": _finite(head.budget),
        "agent": agent,
    }


def events(reads: PagedReads, query: Query, run_id: str) -> dict[str, Any]:
    """``GET /api/runs/{id}/events``: a page by position (``offset``) or after a
    ``seq`` (``after``, for a running run's new events); ``types`` filters."""
    _need_run(reads, run_id)
    types = _types(query)
    limit = _int_param(query, "limit", 200, 1, MAX_PAGE)
    if "after" in query:
        after = _int_param(query, "after", -1, -1, 2**62)
        rows = reads.events_after(run_id, types, after, limit)
        offset = None
    else:
        offset = _int_param(query, "offset", 0, 0, 10**9)
        rows = reads.events_page(run_id, types, offset, limit)
    return {
        "events": [event_json(r) for r in rows],
        "offset": offset,
        "limit": limit,
        "types": types,
        "last_seq": rows[-1].seq if rows else None,
    }


def event(reads: PagedReads, query: Query, run_id: str, seq: str) -> dict[str, Any]:
    """``GET /api/runs/{id}/events/{seq}``: one event and its position in the
    run's stream (``offset``: how the page scrolls to it)."""
    _need_run(reads, run_id)
    number = _span_id(seq)
    found = reads.event_at(run_id, number)
    if found is None:
        raise ApiError(404, "event_not_found", f"run {run_id!r} has no event #{seq}")
    row, offset = found
    return {"event": event_json(row), "offset": offset}


def search(reads: PagedReads, query: Query, run_id: str) -> dict[str, Any]:
    """``GET /api/runs/{id}/search?q=TEXT``: where TEXT is in the run's prompts,
    responses, tool arguments and results, errors, spans and events (see
    ``_search``), in the order they happened within each kind."""
    _need_run(reads, run_id)
    needle = query.get("q", "")
    if not needle.strip():
        raise ApiError(400, "bad_parameter", "`q` is required: the text to find")
    if "\x00" in needle:  # no store can hold it (PostgreSQL text cannot)
        raise ApiError(400, "bad_parameter", "`q` may not contain a NUL character")
    if len(needle) > MAX_QUERY:
        raise ApiError(400, "bad_parameter", f"`q` is at most {MAX_QUERY} characters long")
    limit = _int_param(query, "limit", 100, 1, 500)
    found, more = reads.search(run_id, needle, limit)
    return {"q": needle, "hits": [hit_json(hit) for hit in found], "more": more, "limit": limit}


def children(reads: PagedReads, query: Query, run_id: str, span: str) -> dict[str, Any]:
    """``GET /api/runs/{id}/spans/{span}/children``: a page of a span's children."""
    origin = origin_ns(_need_run(reads, run_id))
    parent_id = _span_id(span)
    if reads.span(run_id, parent_id) is None:
        raise ApiError(404, "span_not_found", f"run {run_id!r} has no span {span}")
    limit = _int_param(query, "limit", 100, 1, MAX_PAGE)
    offset = _int_param(query, "offset", 0, 0, 10**9)
    leaves_only = _choice(query, "leaves", ("0", "1"), "0") == "1"
    rows, total = reads.children(run_id, parent_id, offset, limit, leaves_only=leaves_only)
    return {
        "spans": [span_json(s, origin) for s in rows],
        "total": total,
        "offset": offset,
        "limit": limit,
    }


def llm_calls(reads: PagedReads, query: Query, run_id: str) -> dict[str, Any]:
    """``GET /api/runs/{id}/llm-calls``: a page of the run's LLM calls (its
    ``llm_call`` spans, each with model, tokens, cost, duration)."""
    origin = origin_ns(_need_run(reads, run_id))
    limit = _int_param(query, "limit", 50, 1, MAX_PAGE)
    offset = _int_param(query, "offset", 0, 0, 10**9)
    rows, total = reads.llm_spans(run_id, offset, limit)
    return {
        "calls": [llm_call_json(s, origin) for s in rows],
        "total": total,
        "offset": offset,
        "limit": limit,
    }


def llm_call(reads: PagedReads, query: Query, run_id: str, span: str) -> dict[str, Any]:
    """``GET /api/runs/{id}/llm-calls/{span}``: one call with its prompt and
    response (the stored transcript; ``null`` when content was not captured)."""
    origin = origin_ns(_need_run(reads, run_id))
    span_id = _span_id(span)
    row = reads.span(run_id, span_id)
    if row is None or row.kind != "llm_call":
        raise ApiError(404, "llm_call_not_found", f"run {run_id!r} has no LLM call span {span}")
    transcript = reads.transcript(run_id, span_id)
    return {
        "call": llm_call_json(row, origin),
        "transcript": None
        if transcript is None
        else {"request": _finite(transcript.request), "response": _finite(transcript.response)},
    }


Handler = Callable[..., dict[str, Any]]

ENDPOINTS: tuple[tuple[tuple[str, ...], Handler], ...] = (
    (("runs",), runs),
    (("facets",), facets),
    (("aggregates",), aggregates),
    (("runs", "*"), run),
    (("runs", "*", "live"), live),
    (("runs", "*", "summary"), summary),
    (("runs", "*", "events"), events),
    (("runs", "*", "events", "*"), event),
    (("runs", "*", "search"), search),
    (("runs", "*", "spans", "*", "children"), children),
    (("runs", "*", "llm-calls"), llm_calls),
    (("runs", "*", "llm-calls", "*"), llm_call),
)
"""Path segments after ``/api/`` (``*`` one captured segment) and handlers."""
