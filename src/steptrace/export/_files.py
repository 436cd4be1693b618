"""Offline files of one run: steptrace's JSON lines and OTLP/JSON traces.

Standard library only, so ``export_run`` works without the ``otel`` extra.
This module owns both file formats; the names and attributes of spans in the
OTLP file come from ``_semconv``, the same mapping the live bridge uses. A run
may be a live ``Run`` or one read back from the run store (``StoredRun``,
which carries each span's frame facts): both give the same file.

``jsonl``: one JSON object a line, each with a ``type``: first the run
(``{"type": "run", "version": 1, ...run.summary(), "started_at", "ended_at",
"error", "metadata"}``), then every span (``{"type": "span",
...span.to_dict()}``, in start order), every agent event with the span it was
emitted under (``{"type": "event", "span_id": 7, "event": {...}}``), every
completed-step ledger row (``{"type": "completed_step", ...row.to_dict()}``)
and every LLM trace log entry (``{"type": "llm_trace", ...entry.to_dict()}``).
Values JSON cannot hold are written as their ``str()``.

``otlp-json``: the OTLP/JSON encoding of a trace export request
(``resourceSpans`` -> ``scopeSpans`` -> ``spans``), readable by an
OpenTelemetry Collector's ``otlpjsonfile`` receiver and by anything that
takes OTLP over HTTP with JSON. Ids are derived, so exporting a run twice
gives the same file: the trace id is the first 16 bytes of
``sha256("steptrace trace <run id>")`` and a span's id the first 8 bytes of
``sha256("steptrace span <run id> <span id>")``, in lowercase hex. Times are
decimal strings of Unix nanoseconds. A span still open at export (the default
run's root, say) ends at the export time and carries ``steptrace.open =
true``. Agent events have no clock of their own: each is stamped with the end
of its span.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from .._propagation import span_id_hex, trace_id_hex
from .._run import Run
from .._span_context import span_context
from ._semconv import AttributeValue, describe_parts, event_attributes, event_name

if TYPE_CHECKING:
    from .._run import CompletedStep
    from ..events import AgentEvent, LlmTraceEntry

__all__ = ["export_run", "jsonl_records", "otlp_json", "otlp_span_id", "otlp_trace_id"]

ExportFormat = Literal["jsonl", "otlp-json"]
JSONL_VERSION = 1

_SPAN_KIND_INTERNAL = 1
_SPAN_KIND_CLIENT = 3
_STATUS_UNSET = 0
_STATUS_ERROR = 2


class _StoredSpan(Protocol):
    @property
    def span_id(self) -> int: ...
    @property
    def parent_id(self) -> int | None: ...
    @property
    def run_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def start_ns(self) -> int: ...
    @property
    def end_ns(self) -> int | None: ...
    @property
    def status(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    @property
    def context(self) -> dict[str, Any]: ...


class _StoredHeader(Protocol):
    @property
    def started_at(self) -> float: ...
    @property
    def ended_at(self) -> float | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def metadata(self) -> dict[str, Any]: ...


class StoredRunLike(Protocol):
    """What ``export_run`` reads of a run from the store (``StoredRun``)."""

    @property
    def id(self) -> str: ...
    @property
    def run(self) -> _StoredHeader: ...
    @property
    def spans(self) -> Sequence[_StoredSpan]: ...
    @property
    def events(self) -> Sequence[AgentEvent]: ...
    @property
    def event_span_ids(self) -> Sequence[int | None]: ...
    @property
    def completed_steps(self) -> Sequence[CompletedStep]: ...
    @property
    def llm_trace(self) -> list[LlmTraceEntry]: ...
    @property
    def summary(self) -> dict[str, Any]: ...


class _SpanView(NamedTuple):
    span_id: int
    parent_id: int | None
    run_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int | None
    status: str
    error: str | None
    metadata: Mapping[str, Any]
    context: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        data = self._asdict()
        del data["context"]
        data["metadata"] = dict(self.metadata)
        return data


class _RunView(NamedTuple):
    """A live or stored run, as the file formats read it."""

    id: str
    summary: dict[str, Any]
    started_at: float
    ended_at: float | None
    error: str | None
    metadata: dict[str, Any]
    spans: list[_SpanView]
    events: list[tuple[int | None, AgentEvent]]
    completed_steps: Sequence[CompletedStep]
    llm_trace: list[LlmTraceEntry]
    root_span_id: int | None


def _view(run: Run | StoredRunLike) -> _RunView:
    if isinstance(run, Run):
        spans = [
            _SpanView(
                s.span_id,
                s.parent_id,
                s.run_id,
                s.name,
                s.kind.value,
                s.start_ns,
                s.end_ns,
                s.status,
                s.error,
                s.metadata,
                span_context(s),
            )
            for s in list(run.spans)
        ]
        return _RunView(
            run.id,
            run.summary(),
            run.started_at,
            run.ended_at,
            run.error,
            dict(run.metadata),
            spans,
            list(run.events_by_span()),
            run.completed_steps,
            run.llm_trace,
            run.root.span_id,
        )
    stored = [
        _SpanView(
            s.span_id,
            s.parent_id,
            s.run_id,
            s.name,
            s.kind,
            s.start_ns,
            s.end_ns,
            s.status,
            s.error,
            s.metadata,
            s.context,
        )
        for s in run.spans
    ]
    roots = [s.span_id for s in stored if s.kind == "run" and s.parent_id is None]
    header = run.run
    return _RunView(
        run.id,
        run.summary,
        header.started_at,
        header.ended_at,
        header.error,
        dict(header.metadata),
        stored,
        list(zip(run.event_span_ids, run.events, strict=True)),
        run.completed_steps,
        run.llm_trace,
        roots[0] if roots else None,
    )


def export_run(
    run: Run | StoredRunLike,
    path: str | os.PathLike[str],
    format: ExportFormat = "jsonl",
    *,
    service_name: str = "steptrace",
) -> Path:
    """Write ``run`` (a live ``Run`` or a ``StoredRun`` from the run store) to
    ``path`` as ``jsonl`` or ``otlp-json``; return the path.

    ``service_name`` is the OTLP resource's ``service.name``. A run still
    going is written as it stands. See the module docstring for both formats.
    """
    if format not in ("jsonl", "otlp-json"):
        raise ValueError(f"export_run: format must be 'jsonl' or 'otlp-json', got {format!r}")
    target = Path(path)
    with target.open("w", encoding="utf-8", newline="\n") as out:
        if format == "jsonl":
            for record in jsonl_records(run):
                out.write(_dumps(record))
                out.write("\n")
        else:
            out.write(_dumps(otlp_json(run, service_name=service_name)))
            out.write("\n")
    return target


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def jsonl_records(run: Run | StoredRunLike) -> Iterator[dict[str, Any]]:
    """The records of the ``jsonl`` format, in file order."""
    view = _view(run)
    yield {
        "type": "run",
        "version": JSONL_VERSION,
        **view.summary,
        "started_at": view.started_at,
        "ended_at": view.ended_at,
        "error": view.error,
        "metadata": view.metadata,
    }
    for span in view.spans:
        yield {"type": "span", **span.to_dict()}
    for span_id, event in view.events:
        yield {"type": "event", "span_id": span_id, "event": event.to_dict()}
    for row in view.completed_steps:
        yield {"type": "completed_step", **row.to_dict()}
    for entry in view.llm_trace:
        yield {"type": "llm_trace", **entry.to_dict()}


otlp_trace_id = trace_id_hex
"""The OTLP trace id (32 hex digits) of a run's file export: the first 16 bytes
of ``sha256("steptrace trace <run id>")`` (the core's ``trace_id_hex``, which
``steptrace.inject`` also uses)."""

otlp_span_id = span_id_hex
"""The OTLP span id (16 hex digits) of a steptrace span in a file export: the
first 8 bytes of ``sha256("steptrace span <run id> <span id>")``."""


def otlp_json(run: Run | StoredRunLike, *, service_name: str = "steptrace") -> dict[str, Any]:
    """The run as an OTLP/JSON ``ExportTraceServiceRequest`` (a JSON-ready dict)."""
    from .. import __version__

    view = _view(run)
    spans = view.spans
    known = {span.span_id for span in spans}
    events: dict[int | None, list[AgentEvent]] = {}
    for span_id, event in view.events:
        # An event under a span the run does not hold goes to the run's root.
        owner = span_id if span_id in known else view.root_span_id
        events.setdefault(owner, []).append(event)
    trace_id = otlp_trace_id(view.id)
    now = time.time_ns()
    encoded: list[dict[str, Any]] = []
    for span in spans:
        described = describe_parts(
            kind=span.kind,
            name=span.name,
            span_id=span.span_id,
            run_id=span.run_id,
            metadata=span.metadata,
            status=span.status,
            error=span.error,
            context=span.context,
        )
        attributes = dict(described.attributes)
        end_ns = span.end_ns
        if end_ns is None:
            end_ns = max(now, span.start_ns)
            attributes["steptrace.open"] = True
        item: dict[str, Any] = {
            "traceId": trace_id,
            "spanId": otlp_span_id(view.id, span.span_id),
        }
        if span.parent_id is not None and span.parent_id in known:
            item["parentSpanId"] = otlp_span_id(view.id, span.parent_id)
        item.update(
            name=described.name,
            kind=_SPAN_KIND_CLIENT if described.client else _SPAN_KIND_INTERNAL,
            startTimeUnixNano=str(span.start_ns),
            endTimeUnixNano=str(end_ns),
            attributes=_key_values(attributes),
            events=[
                {
                    "timeUnixNano": str(end_ns),
                    "name": event_name(event),
                    "attributes": _key_values(event_attributes(event)),
                }
                for event in events.get(span.span_id, ())
            ],
            status=(
                {"code": _STATUS_UNSET}
                if described.error is None
                else {"code": _STATUS_ERROR, "message": described.error}
            ),
        )
        encoded.append(item)
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _key_values({"service.name": service_name})},
                "scopeSpans": [
                    {"scope": {"name": "steptrace", "version": __version__}, "spans": encoded}
                ],
            }
        ]
    }


def _key_values(attributes: dict[str, AttributeValue]) -> list[dict[str, Any]]:
    return [{"key": key, "value": _any_value(value)} for key, value in attributes.items()]


def _any_value(value: AttributeValue | str | bool | int | float) -> dict[str, Any]:
    """An OTLP ``AnyValue`` in the JSON mapping (int64 as a decimal string)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"doubleValue": value}
        return {
            "doubleValue": "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        }
    if isinstance(value, str):
        return {"stringValue": value}
    return {"arrayValue": {"values": [_any_value(item) for item in value]}}
