"""The store's tables, each written once: its columns in order, key and JSON columns.

``TABLES`` is the one place a table's column order is written. From it come
the insert statements (``_queries.UPSERTS``), the values a ``WriteBatch`` row
gives in that order (``values``) and the reading of a result row back into
its row object by column name (``reader``), so a column added to a table is
added here and nowhere else. JSON columns hold the row's dict (or list)
encoded; a few columns are computed from the row when written (an event's
``type`` from its data).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from ._protocol import EventRow, LlmCallRow, RunRow, SpanRow, StepRow, TranscriptRow

__all__ = [
    "CALLS",
    "EVENTS",
    "RUNS",
    "SPANS",
    "STEPS",
    "TABLES",
    "TRANSCRIPTS",
    "Table",
    "dumps",
    "loads_all",
    "reader",
]

_R = TypeVar("_R")

# One encoder for every row: json.dumps with options builds a new one per call.
# Metadata is user data: anything JSON cannot encode is stored as its str().
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def loads_all(texts: Iterable[str]) -> list[Any]:
    """Each JSON text decoded, in one ``json.loads`` of them joined as an array:
    a big run's events decode at the C decoder's pace, not one Python call each.
    Every text is one whole JSON value (the store wrote it with ``dumps``)."""
    return json.loads("[" + ",".join(texts) + "]")  # type: ignore[no-any-return]


def _replay_of(row: RunRow) -> str | None:
    """The run a run replays: its own field, else as ``steptrace replay`` names
    it in the metadata."""
    if row.replay_of is not None:
        return row.replay_of
    metadata = row.metadata
    original = metadata.get("replay_of") if isinstance(metadata, dict) else None
    return original if isinstance(original, str) else None


class Table(NamedTuple):
    """One table a ``WriteBatch`` fills."""

    name: str
    columns: tuple[str, ...]
    """What the writer writes, in the table's order; each is the row's field of
    that name unless ``computed``."""
    key: tuple[str, ...]
    json: frozenset[str] = frozenset()
    """Columns holding the JSON text of the field's value."""
    nullable: frozenset[str] = frozenset()
    """JSON columns where a ``None`` value is NULL (not the text ``null``)."""
    computed: Mapping[str, Callable[[Any], Any]] = MappingProxyType({})
    """Columns whose value is computed from the row when written."""
    kept: tuple[str, ...] = ()
    """Columns the store keeps itself: read back, never written from a row."""

    @property
    def read_columns(self) -> tuple[str, ...]:
        return self.columns + self.kept

    def select(self, only: Sequence[str] | None = None) -> str:
        """``a, b, c``: the columns a row is read from (or ``only`` those)."""
        return ", ".join(self.read_columns if only is None else only)

    def values(self, rows: Iterable[Any]) -> list[tuple[Any, ...]]:
        """Each row's values in column order, JSON columns encoded."""
        get = operator.attrgetter(*(c for c in self.columns if c not in self.computed))
        # In column order: a computed value is inserted where its column is.
        fixes = [
            (i, self.computed.get(c), c in self.nullable)
            for i, c in enumerate(self.columns)
            if c in self.computed or c in self.json
        ]
        out: list[tuple[Any, ...]] = []
        for row in rows:
            values = list(get(row)) if len(self.columns) - len(self.computed) > 1 else [get(row)]
            for i, compute, nullable in fixes:
                if compute is not None:
                    values.insert(i, compute(row))
                elif not (nullable and values[i] is None):
                    values[i] = dumps(values[i])
            out.append(tuple(values))
        return out


RUNS = Table(
    "runs",
    (
        "id",
        "name",
        "status",
        "started_at",
        "ended_at",
        "error",
        "metadata",
        "budget",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "llm_calls",
        "pid",
        "host",
        "heartbeat_at",
        "parent_run_id",
        "parent_span_id",
        "replay_of",
    ),
    ("id",),
    json=frozenset({"metadata", "budget"}),
    nullable=frozenset({"budget"}),
    computed=MappingProxyType({"replay_of": _replay_of}),
    kept=("write_errors", "write_error"),
)
SPANS = Table(
    "spans",
    (
        "run_id",
        "span_id",
        "parent_id",
        "name",
        "kind",
        "start_ns",
        "end_ns",
        "status",
        "error",
        "metadata",
        "context",
    ),
    ("run_id", "span_id"),
    json=frozenset({"metadata", "context"}),
)
EVENTS = Table(
    "events",
    ("run_id", "seq", "span_id", "type", "data"),
    ("run_id", "seq"),
    json=frozenset({"data"}),
    computed=MappingProxyType({"type": lambda e: str(e.data.get("type"))}),
)
STEPS = Table(
    "completed_steps", ("run_id", "seq", "data"), ("run_id", "seq"), json=frozenset({"data"})
)
CALLS = Table(
    "llm_calls",
    (
        "run_id",
        "seq",
        "span_id",
        "step",
        "persona",
        "model",
        "input_tokens",
        "output_tokens",
        "cache_tokens",
        "cost_usd",
        "duration_ms",
        "at",
    ),
    ("run_id", "seq"),
)
TRANSCRIPTS = Table(
    "transcripts",
    ("run_id", "span_id", "request", "response"),
    ("run_id", "span_id"),
    json=frozenset({"request", "response"}),
    nullable=frozenset({"request", "response"}),
)

TABLES: dict[str, Table] = {t.name: t for t in (RUNS, SPANS, EVENTS, STEPS, CALLS, TRANSCRIPTS)}
"""Every table a ``WriteBatch`` fills, in the order a batch is written."""

_ROWS: dict[str, type] = {
    "runs": RunRow,
    "spans": SpanRow,
    "events": EventRow,
    "completed_steps": StepRow,
    "llm_calls": LlmCallRow,
    "transcripts": TranscriptRow,
}


def reader(table: Table, columns: Sequence[str] | None = None) -> Callable[[Sequence[Any]], Any]:
    """A function reading one result row of ``table.select(columns)`` into the
    table's row object, by column name, JSON columns decoded.

    The row objects are frozen dataclasses with slots and no ``__post_init__``:
    the reader fills the slots directly, as their ``__init__`` would, at a
    fraction of the cost (a big run has many rows). It is compiled for the
    table, one line a slot, as ``collections.namedtuple`` compiles its class:
    a loop over the columns cost a quarter more per row. Columns that are not
    a field of the row (an event's ``type``) are skipped; every field must be
    among the columns read."""
    cls = _ROWS[table.name]
    names = table.read_columns if columns is None else tuple(columns)
    field_names = {f.name for f in fields(cls)}
    missing = field_names - set(names)
    if missing:
        raise ValueError(f"{table.name}: reading {cls.__name__} needs {sorted(missing)}")
    scope: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_loads": json.loads}
    lines = ["def read(row):", "    made = _new(_cls)"]
    for i, name in enumerate(names):
        if name not in field_names:
            continue
        scope[f"_fill_{name}"] = getattr(cls, name).__set__
        value = f"row[{i}]"
        if name in table.json:
            decoded = f"_loads({value})"
            value = f"None if {value} is None else {decoded}" if name in table.nullable else decoded
        lines.append(f"    _fill_{name}(made, {value})")
    lines.append("    return made")
    # The source is made of the table's own column names, never of data.
    exec("\n".join(lines), scope)
    return scope["read"]  # type: ignore[no-any-return]
