"""Turning a live run's records into rows: the writer's encoding, fast and reference.

Each record kind has one function giving its row's values from the run's own
objects (an ended span, an event with its span id, a ledger position and step
frame, a raw LLM trace record), in its table's column order (``_queries``):
``span_values``, ``event_values``, ``step_values``, ``call_values``. Two ways
use them:

- the reference: ``*Row`` objects in a ``WriteBatch``, the ``RunStore``
  protocol every store accepts (``add_rows``);
- the fast path, for the SQL stores whose ``write`` goes through
  ``_queries.batch_rows``: an ``EncodedBatch`` carrying the parameter tuples
  themselves, JSON fields already encoded by one precompiled encoder, events
  encoded from their slots without ``to_dict`` (``add_encoded``). No row
  object is built. A record the fast path cannot encode (metadata JSON
  cannot hold) goes into the batch as a reference row instead, so the store
  refuses it as it would any other and the batch is isolated
  (``EncodedBatch.as_rows``).

Both must give the same stored rows; ``tests/store/test_encoding.py`` holds
them to it.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _json
from .._context import Frame, StepFrame
from .._run import CompletedStep, ledger_row
from .._span_context import span_context
from ..spans import SpanKind
from ._protocol import EventRow, LlmCallRow, SpanRow, StepRow, WriteBatch
from ._queries import span_row

if TYPE_CHECKING:
    from ..events import AgentEvent
    from ..spans import Span

__all__ = ["EncodedBatch", "add_encoded", "add_rows", "encodes"]

# What _queries.dumps does (JSONEncoder(default=str, separators=(",", ":"))),
# minus the two Python layers and the encoder built around the C encoder on
# every call. No circular check: a cycle raises RecursionError, and the record
# goes the reference way, which refuses it as before.
_DUMPS_OPTIONS: dict[str, Any] = {"default": str, "separators": (",", ":")}
_chunks = _json.chunks(**_DUMPS_OPTIONS)
_join = "".join

encode = _json.encoder(**_DUMPS_OPTIONS)
"""``_queries.dumps(value)``, faster (the hot loops inline ``_chunks`` instead)."""


# -- each record's values, in its table's column order ----------------------------------


_KINDS = {kind: kind.value for kind in SpanKind}  # .value is a slow descriptor


def span_values(span: Span) -> tuple[Any, ...]:
    """``SPAN_COLUMNS``, metadata and context as dicts."""
    kind = span.kind
    return (
        span.run_id,
        span.span_id,
        span.parent_id,
        span.name,
        _KINDS[kind] if isinstance(kind, SpanKind) else str(kind),
        span.start_ns,
        span.end_ns,
        span.status,
        span.error,
        dict(span.metadata),
        span_context(span),
    )


def call_values(run_id: str, seq: int, entry: tuple[Any, ...]) -> tuple[Any, ...]:
    """``CALL_COLUMNS`` of a raw trace record (``Run.raw_trace``)."""
    model, input_tokens, output_tokens, duration_ms, cost_usd, cache_tokens, frame, at, _ = entry
    assert isinstance(frame, Frame)
    step = frame.step
    persona = frame.persona
    return (
        run_id,
        seq,
        frame.span_id,
        None if step is None else step.name,
        None if persona is None else persona.name,
        model,
        input_tokens,
        output_tokens,
        cache_tokens,
        cost_usd,
        duration_ms,
        at,
    )


_STEP_KEYS = CompletedStep._fields


def step_data(frame: StepFrame) -> dict[str, Any]:
    """The ledger row's ``to_dict()``, without the method call per key."""
    return dict(zip(_STEP_KEYS, ledger_row(frame), strict=True))


_Shape = tuple[Callable[[Any], tuple[Any, ...]], tuple[str, ...], tuple[tuple[str, Any], ...]]
_SHAPES: dict[type, _Shape] = {}


def _shape(cls: type) -> _Shape:
    """How to read an event class's ``to_dict()`` keys and values at once:
    one ``attrgetter`` for ``type`` and every field, and the fields beyond the
    seed's, left out when they hold their default (as ``to_dict`` does)."""
    from ..events import _BEYOND_SEED  # deferred: events is only needed once a run has some

    fields = dataclasses.fields(cls)
    keys = ("type", *(f.name for f in fields))
    omitted = tuple((f.name, f.default) for f in fields if f.metadata.get(_BEYOND_SEED))
    shape = _SHAPES[cls] = (operator.attrgetter(*keys), keys, omitted)
    return shape


# -- the reference: row objects -----------------------------------------------------------


def add_rows(
    batch: WriteBatch,
    run_id: str,
    spans: list[Span],
    events: tuple[int, list[int], list[AgentEvent]],
    steps: list[tuple[int, StepFrame]],
    calls: tuple[int, list[tuple[Any, ...]]],
) -> None:
    """Add row objects for ended ``spans``, ``events`` (first seq, span ids,
    events), ``steps`` (seq, frame) and ``calls`` (first seq, raw records)."""
    for span in spans:
        batch.spans.append(SpanRow(**dict(zip(_SPAN_FIELDS, span_values(span), strict=True))))
    seq, ids, items = events
    for span_id, event in zip(ids, items, strict=True):
        batch.events.append(EventRow(run_id=run_id, seq=seq, span_id=span_id, data=event.to_dict()))
        seq += 1
    for seq, frame in steps:
        batch.steps.append(StepRow(run_id=run_id, seq=seq, data=ledger_row(frame).to_dict()))
    seq, entries = calls
    for entry in entries:
        values = call_values(run_id, seq, entry)
        batch.llm_calls.append(LlmCallRow(**dict(zip(_CALL_FIELDS, values, strict=True))))
        seq += 1


_SPAN_FIELDS = tuple(f.name for f in dataclasses.fields(SpanRow))
_CALL_FIELDS = tuple(f.name for f in dataclasses.fields(LlmCallRow))


# -- the fast path: parameter tuples ----------------------------------------------------


class EncodedBatch(WriteBatch):
    """A ``WriteBatch`` whose span, event, ledger and call rows are already
    parameter tuples (``encoded``, by table, in ``_queries.TABLES`` column
    order), for a store writing through ``_queries.batch_rows``; rows it could
    not encode are in the ordinary row lists."""

    __slots__ = ("encoded",)

    def __init__(self) -> None:
        super().__init__()
        self.encoded: dict[str, list[tuple[Any, ...]]] = {
            "spans": [],
            "events": [],
            "completed_steps": [],
            "llm_calls": [],
        }

    def __len__(self) -> int:
        return super().__len__() + sum(len(rows) for rows in self.encoded.values())

    def as_rows(self) -> WriteBatch:
        """The same rows as a plain ``WriteBatch`` of row objects (for writing
        a refused batch row by row)."""
        plain = WriteBatch(
            runs=list(self.runs),
            transcripts=list(self.transcripts),
            heartbeats=list(self.heartbeats),
            write_errors=list(self.write_errors),
        )
        loads = json.loads
        encoded = self.encoded
        plain.spans = [span_row(values) for values in encoded["spans"]] + self.spans
        plain.events = [
            EventRow(run_id=r, seq=s, span_id=i, data=loads(d))
            for r, s, i, _, d in encoded["events"]
        ] + self.events
        plain.steps = [
            StepRow(run_id=r, seq=s, data=loads(d)) for r, s, d in encoded["completed_steps"]
        ] + self.steps
        plain.llm_calls = [
            LlmCallRow(**dict(zip(_CALL_FIELDS, values, strict=True)))
            for values in encoded["llm_calls"]
        ] + self.llm_calls
        return plain


def add_encoded(
    batch: EncodedBatch,
    run_id: str,
    spans: list[Span],
    events: tuple[int, list[int], list[AgentEvent]],
    steps: list[tuple[int, StepFrame]],
    calls: tuple[int, list[tuple[Any, ...]]],
) -> None:
    """``add_rows``, as parameter tuples (see the module docstring)."""
    # encode() inlined, and each event's to_dict() as JSON sees it (tuples stay
    # tuples: JSON writes both as arrays), built from its slots at once.
    chunks, join, shapes = _chunks, _join, _SHAPES
    encoded = batch.encoded
    rows = encoded["spans"]
    for span in spans:
        values = span_values(span)
        try:
            rows.append((*values[:9], join(chunks(values[9], 0)), join(chunks(values[10], 0))))
        except Exception:  # refused by the store, and isolated, the reference way
            batch.spans.append(SpanRow(**dict(zip(_SPAN_FIELDS, values, strict=True))))
    seq, ids, items = events
    rows = encoded["events"]
    for span_id, event in zip(ids, items, strict=True):
        try:
            shape = shapes.get(type(event)) or _shape(type(event))
            data = dict(zip(shape[1], shape[0](event), strict=True))
            for name, default in shape[2]:
                if data[name] is default:
                    del data[name]
            rows.append((run_id, seq, span_id, event.type, join(chunks(data, 0))))
        except Exception:
            batch.events.append(
                EventRow(run_id=run_id, seq=seq, span_id=span_id, data=event.to_dict())
            )
        seq += 1
    rows = encoded["completed_steps"]
    for seq, frame in steps:
        data = step_data(frame)
        try:
            rows.append((run_id, seq, join(chunks(data, 0))))
        except Exception:
            batch.steps.append(StepRow(run_id=run_id, seq=seq, data=data))
    seq, entries = calls
    rows = encoded["llm_calls"]
    for entry in entries:
        rows.append(call_values(run_id, seq, entry))  # no JSON: nothing to refuse here
        seq += 1


def encodes(store: object) -> bool:
    """Whether ``store`` writes through ``_queries.batch_rows`` (so it takes an
    ``EncodedBatch``): the SQL stores, unless a subclass rewrote ``write``."""
    from ._sqlite import SQLiteStore  # deferred: the writer imports this module early

    writes: list[object] = [SQLiteStore.write]
    try:
        from ._postgres import PostgresStore
    except ImportError:  # pragma: no cover - psycopg is imported lazily, never here
        pass
    else:
        writes.append(PostgresStore.write)
    return getattr(type(store), "write", None) in writes
