"""Writing a batch whose data the store refused: one bad value costs one row.

A batch is one transaction, so a single value the store cannot hold (an
integer past 64 bits, text that is not valid Unicode, metadata JSON cannot
encode) used to roll back every row of every run in it. ``write_isolated``
writes the batch whole when it can; when the store raises ``BatchRejected``
(its data at fault; any other failure propagates, since the same rows would
fail again for another reason), it writes the batch again run by run, and
within a run the store still refuses, in halves down to the rows at fault
(a few more transactions for one bad row among many, never one a row). Rows
keep their order, so a run's end header still follows its start.

A refused row is left out and counted on its own run: the store adds it to
the run's ``write_errors`` and keeps the refusal as ``write_error``. A refused
run header is written again with the values it can hold (``safe_header``), so
a run never stays ``running`` or vanishes because of one value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

from ._protocol import BatchRejected, RunRow, RunStore, WriteBatch
from ._queries import dumps

__all__ = ["Rejection", "safe_header", "write_isolated"]

_INT64 = (-(2**63), 2**63 - 1)
_MESSAGE_LIMIT = 500

# The tables of a WriteBatch, in the order the backends write them.
_TABLES = (
    "runs",
    "spans",
    "events",
    "steps",
    "llm_calls",
    "transcripts",
    "heartbeats",
    "write_errors",
)

_Item = tuple[str, Any]
"""One row of a batch: the ``WriteBatch`` field it goes in, and the row."""


class Rejection(NamedTuple):
    """A row the store refused: its run, which row, and the driver's error."""

    run_id: str
    row: str
    error: BaseException

    def message(self) -> str:
        """One line saying which row and why (driver messages can quote the
        data: control characters are shown as escapes)."""
        text = safe_text(f"{self.row}: {type(self.error).__name__}: {self.error}")
        return text.translate(_CONTROLS)[:_MESSAGE_LIMIT]


_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(32), *range(127, 160))}


def write_isolated(store: RunStore, batch: WriteBatch) -> list[Rejection]:
    """Write ``batch``, every row the store accepts, and return the rows it
    refused (see the module docstring). Raises what ``store.write`` raises for
    anything but a refusal of the data."""
    try:
        store.write(batch)
        return []
    except BatchRejected as exc:
        failed = exc
    runs: dict[str, list[_Item]] = {}
    for table in _TABLES:
        for row in getattr(batch, table):
            runs.setdefault(_run_id(table, row), []).append((table, row))
    rejected: list[Rejection] = []
    for run_id, items in runs.items():
        # A batch of one run is known to fail: straight to its halves.
        found = _write_part(store, items, failed if len(runs) == 1 else None)
        if found:
            rejected += found
            store.write(WriteBatch(write_errors=[(run_id, len(found), found[-1].message())]))
    return rejected


def _write_part(
    store: RunStore, items: list[_Item], failed: BatchRejected | None = None
) -> list[Rejection]:
    """Write ``items`` (``failed``: the store already refused them all);
    split in halves while the store refuses them."""
    if failed is None:
        try:
            store.write(_batch(items))
            return []
        except BatchRejected as exc:
            failed = exc
    if len(items) == 1:
        return [_refused(store, items[0], failed)]
    middle = len(items) // 2
    return _write_part(store, items[:middle]) + _write_part(store, items[middle:])


def _refused(store: RunStore, item: _Item, exc: BatchRejected) -> Rejection:
    table, row = item
    error = exc.__cause__ or exc
    if table != "runs":
        return Rejection(_run_id(table, row), _describe(table, row), error)
    header, changed = safe_header(row)
    what = "run header"
    try:
        store.write(WriteBatch(runs=[header]))
        what += f" (stored without {', '.join(changed)})" if changed else ""
    except BatchRejected:
        what += " (not stored)"
    return Rejection(row.id, what, error)


def _batch(items: list[_Item]) -> WriteBatch:
    batch = WriteBatch()
    for table, row in items:
        getattr(batch, table).append(row)
    return batch


def _run_id(table: str, row: Any) -> str:
    if table == "runs":
        return str(row.id)
    if table in ("heartbeats", "write_errors"):
        return str(row[0])
    return str(row.run_id)


def _describe(table: str, row: Any) -> str:
    if table == "spans":
        return f"span {row.span_id}"
    if table == "transcripts":
        return f"transcript of span {row.span_id}"
    if table in ("heartbeats", "write_errors"):
        return table[:-1].replace("_", " ")
    noun = {"events": "event", "steps": "ledger row", "llm_calls": "LLM call"}[table]
    return f"{noun} {row.seq}"


# -- a header the store can hold -------------------------------------------------------


def safe_text(value: Any) -> str:
    """``value`` as text any store holds: lone surrogates and NUL characters
    (PostgreSQL refuses both) shown as escapes."""
    text = value if isinstance(value, str) else _str(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


def _str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"


def safe_header(row: RunRow) -> tuple[RunRow, list[str]]:
    """``row`` with every value made one the store can hold, and the names of
    the fields that had to change: integers beyond 64 bits saturate, non-finite
    or non-numeric amounts become 0, text loses what it cannot encode, and
    metadata or a budget JSON cannot encode is replaced by a note."""
    changed: list[str] = []
    values: dict[str, Any] = {}
    for field in dataclasses.fields(RunRow):
        name = field.name
        value = getattr(row, name)
        fixed: Any
        if name in _TEXT:
            fixed = None if value is None else safe_text(value)
        elif name in _FLOAT:
            fixed = None if value is None else _float(value)
        elif name in _INT:
            fixed = None if value is None else _int(value)
        elif name in ("metadata", "budget"):
            fixed = _json(value, name)
        else:  # the id (the run's identity, made by steptrace) and the store's own fields
            fixed = value
        if fixed is not value and (type(fixed) is not type(value) or fixed != value):
            changed.append(name)
        values[name] = fixed
    return RunRow(**values), changed


_TEXT = frozenset(("name", "status", "error", "host", "parent_run_id", "replay_of"))
_FLOAT = frozenset(("started_at", "ended_at", "heartbeat_at", "cost_usd"))
_INT = frozenset(("input_tokens", "output_tokens", "llm_calls", "pid", "parent_span_id"))


def _int(value: Any) -> int:
    try:
        number = int(value)
    except Exception:
        return 0
    return min(max(number, _INT64[0]), _INT64[1])


def _float(value: Any) -> float:
    try:
        number = float(value)
    except Exception:
        return 0.0
    return number if math.isfinite(number) else 0.0


def _json(value: Any, name: str) -> Any:
    if value is None:
        return None
    try:
        dumps(value)
    except Exception as exc:
        return {"steptrace.write_error": safe_text(f"{name} could not be encoded: {exc!r}")}
    return value
