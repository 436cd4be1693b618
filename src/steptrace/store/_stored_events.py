"""A stored run's rows read back: JSON decoded at once, objects built on first read.

``get_run`` of a run of 100,000 events spent most of its time building typed
events and call log rows before returning (about 4 µs an event, and the
garbage collector's passes over them), though ``steptrace show`` pages events
from the store and reads the summary. Now the events' JSON texts are decoded
in one call of the C decoder (``decode_rows``), the summary's ``agent``
figures are added up from those dicts (``agent_summary``, by the same
``Tally`` and ``rolled_up`` as ``summarize_events``; a property test holds
the two equal), and the events and call log rows are ``BuiltOnRead``: each
built the first time it is read (an event by ``event_from_dict``, which
checks it), then kept.

A row that cannot be read (its text is not one JSON value, its value is not
an event) costs only itself: reading that event raises ``ValueError`` naming
the run and the row's ``seq``, the cause chained; every other event reads as
it would. The summary leaves out a row that does not say what it counts.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, overload

from ..events import Tally, event_from_dict, rolled_up

if TYPE_CHECKING:
    from ..events import AgentEvent

__all__ = [
    "BuiltOnRead",
    "Unreadable",
    "agent_summary",
    "decode_rows",
    "stored_events",
    "unreadable",
]

_T = TypeVar("_T")


class Unreadable(NamedTuple):
    """Stands for a row whose text ``decode_rows`` could not decode."""

    error: Exception


def decode_rows(texts: Sequence[Any]) -> list[Any]:
    """Each row's JSON text decoded, in order.

    One ``json.loads`` of the texts joined as an array, at the C decoder's
    pace: each text is one whole JSON value, as the store writes them. Should
    that fail, or give another number of values than rows (a text cut short,
    or ``1,2``, which would shift every later row), the rows are decoded one
    by one and a row that does not decode stands as ``Unreadable``. (Texts
    edited to split and merge values in step would pass the count; a store
    edited so can as well say anything.)"""
    try:
        values = json.loads("[" + ",".join(texts) + "]")
    except (TypeError, ValueError):  # a text that is not a str, or bad JSON
        values = None
    if isinstance(values, list) and len(values) == len(texts):
        return values
    return [_decode(text) for text in texts]


def _decode(text: Any) -> Any:
    if type(text) is not str:  # as the joined decoding: bytes are not JSON text
        return Unreadable(TypeError(f"expected JSON text, got {type(text).__name__}"))
    try:
        return json.loads(text)
    except ValueError as exc:
        return Unreadable(exc)


def unreadable(where: str, exc: Exception) -> ValueError:
    """The error saying which row of which run cannot be read (``where``), and why."""
    return ValueError(f"{where} cannot be read: {type(exc).__name__}: {exc}")


class BuiltOnRead(Sequence[_T]):
    """The list ``[build(row) for row in rows]``, each item built the first
    time it is read, then kept (see the module docstring).

    Thread-safe: an item is built once, under a lock, and every reader gets
    that one object. Compares equal to a list of the same items; copies and
    pickles as that list. Reading an item whose row ``build`` fails on (or
    that ``decode_rows`` left ``Unreadable``) raises ``ValueError`` saying
    ``where(index)``, which row of which run, with the cause chained; the
    other items read as ever. ``rows`` becomes the sequence's own: a row is
    dropped once its item is built."""

    __slots__ = ("_build_one", "_complete", "_items", "_lock", "_rows", "_unbuilt", "_where")

    def __init__(
        self, build: Callable[[Any], _T], rows: list[Any], where: Callable[[int], str]
    ) -> None:
        self._build_one = build
        self._rows = rows
        """Each item's row until the item is built (then ``None``)."""
        self._where = where
        self._items: list[_T | None] = [None] * len(rows)
        self._unbuilt = len(rows)
        self._complete = False
        """Whether every item that can be built is (``_build_all``)."""
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> _T: ...
    @overload
    def __getitem__(self, index: slice) -> list[_T]: ...
    def __getitem__(self, index: int | slice) -> _T | list[_T]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self._items)))]
        item = self._items[index]  # IndexError as a list's
        return self._build(index) if item is None else item

    def __iter__(self) -> Iterator[_T]:
        if not self._complete:
            self._build_all()
        if not self._unbuilt:
            return iter(self._items)  # type: ignore[arg-type]  # no None left
        return self._each()

    def _each(self) -> Iterator[_T]:
        for index, item in enumerate(self._items):
            # None only for a row that cannot be built: _build raises for it.
            yield self._build(index) if item is None else item

    def _build(self, index: int) -> _T:
        with self._lock:
            item = self._items[index]
            if item is not None:  # built by another thread meanwhile
                return item
            try:
                item = self._one(self._rows[index])
            except Exception as exc:
                where = self._where(index % len(self._items))
                raise unreadable(where, exc) from exc
            self._items[index] = item
            self._rows[index] = None
            self._unbuilt -= 1
            return item

    def _one(self, row: Any) -> _T:
        if isinstance(row, Unreadable):  # decode_rows could not decode it
            raise row.error
        return self._build_one(row)

    def _build_all(self) -> None:
        """Every item that can be built, in one pass (for a reader of them all)."""
        with self._lock:
            rows, build = self._rows, self._build_one
            if self._unbuilt == len(rows):  # none built yet: in one C-level pass
                try:
                    self._items = list(map(build, rows))
                except Exception:
                    pass  # some row cannot be built: one at a time, below
                else:
                    self._rows, self._unbuilt, self._complete = [None] * len(rows), 0, True
                    return
            items = self._items
            for index, row in enumerate(rows):
                if items[index] is None:
                    try:
                        items[index] = self._one(row)
                    except Exception:
                        continue  # _build says why when the item is read
                    rows[index] = None
                    self._unbuilt -= 1
            self._complete = True

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BuiltOnRead | list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # as a list's

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))

    def __repr__(self) -> str:
        try:
            return repr(list(self))
        except ValueError:
            return f"<{len(self)} items, some of which cannot be read>"


def stored_events(run_id: str, seqs: Sequence[int], rows: list[Any]) -> BuiltOnRead[AgentEvent]:
    """A run's events from their ``decode_rows`` dicts, each built with
    ``event_from_dict`` (which checks it) when read."""
    return BuiltOnRead(event_from_dict, rows, lambda index: f"run {run_id}: event {seqs[index]}")


_OTHERS = frozenset({"tool_rejected", "loop_intervention", "context_compaction", "phase_change"})
"""The kinds of loop event counted by type alone (a phase change counts
nothing but, as any loop event, opens a loop)."""
_CALL = itemgetter("iteration", "input_tokens", "output_tokens", "duration_ms")
_CALL_TYPES = (int, int, int, int)
_TOOL = itemgetter("tool_name", "duration_ms")
_TOOL_TYPES = (str, int)
_COMPLETE = itemgetter("status", "iterations", "total_duration_ms")
_COMPLETE_TYPES = (str, int, int)


def agent_summary(rows: Sequence[Any]) -> dict[str, Any]:
    """``summarize_events`` of the events the decoded ``rows`` are, from the
    fields it counts. A row that is not an event of a known type, or whose
    counted fields are missing or not of their type, is left out.

    The stream is cut where loops end (``loop_complete``), as
    ``summarize_events`` cuts it; each part's calls and tools are gathered,
    then checked and added up a part at a time (``_part``), in C-level passes
    over them: a run of 100,000 events is mostly calls and tools."""
    total, outside = Tally(), Tally()
    loops: list[Tally] = []
    calls: list[dict[str, Any]] = []  # of the current part
    tools: list[dict[str, Any]] = []
    others: list[str] = []
    for row in rows:
        kind = row.get("type") if type(row) is dict else None
        if kind == "llm_call":
            calls.append(row)
        elif kind == "tool_execution":
            tools.append(row)
        elif kind in _OTHERS:
            others.append(kind)
        elif kind == "loop_complete":
            ended = _figures(_COMPLETE, [row], _COMPLETE_TYPES)
            if ended:  # else not a loop's end: its fields are not what it says
                _part(total, outside, loops, calls, tools, others, ended[0])
                calls, tools, others = [], [], []
    _part(total, outside, loops, calls, tools, others, None)
    return rolled_up(total, outside, loops)


def _part(
    total: Tally,
    outside: Tally,
    loops: list[Tally],
    calls: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    others: list[str],
    ended: tuple[Any, ...] | None,
) -> None:
    """Add up one part of the stream: the events after the previous loop's
    end up to this one's (``ended``: its status, iterations and duration) or
    to the stream's end (``None``). Calls at iteration 0 are outside any loop;
    any other event opens the part's loop."""
    figures = _figures(_CALL, calls, _CALL_TYPES)
    solo = [f for f in figures if f[0] == 0]
    _add_calls((total, outside), solo)
    in_loop = [f for f in figures if f[0] != 0] if solo else figures
    used = _figures(_TOOL, tools, _TOOL_TYPES)
    if not (in_loop or used or others or ended):
        return
    loop = Tally()
    loops.append(loop)
    _add_calls((total, loop), in_loop)
    if used:
        ms = sum(map(itemgetter(1), used))
        names = dict.fromkeys(map(itemgetter(0), used))  # first-use order
        for tally in (total, loop):
            tally.add("tool_execution", len(used), duration_ms=ms)
            tally.tools_used.update(names)
    for kind in others:
        total.add(kind, 1)
        loop.add(kind, 1)
    if ended is not None:
        loop.complete(*ended)


def _add_calls(tallies: tuple[Tally, Tally], figures: list[tuple[Any, ...]]) -> None:
    if figures:
        sums = [sum(map(itemgetter(i), figures)) for i in (1, 2, 3)]
        for tally in tallies:
            tally.add("llm_call", len(figures), *sums)


def _figures(
    get: Callable[[Any], Any], rows: list[dict[str, Any]], types: tuple[type, ...]
) -> list[tuple[Any, ...]]:
    """``get(row)`` of each row that has the fields, each of exactly its type
    in ``types`` (an ``int``, not a ``bool``) and not negative when an int, as
    ``event_from_dict`` takes them. Checked a column at a time; row by row
    only when some row is not so."""
    if not rows:
        return []
    try:
        got: list[tuple[Any, ...]] = list(map(get, rows))
    except KeyError:
        pass
    else:
        if all(_column(list(map(itemgetter(i), got)), t) for i, t in enumerate(types)):
            return got
    return [f for f in map(_fields(get), rows) if f is not None and _row(f, types)]


def _column(values: list[Any], kind: type) -> bool:
    return set(map(type, values)) == {kind} and (kind is not int or min(values) >= 0)


def _row(figures: tuple[Any, ...], types: tuple[type, ...]) -> bool:
    return tuple(map(type, figures)) == types and all(
        v >= 0 for v, t in zip(figures, types, strict=True) if t is int
    )


def _fields(get: Callable[[Any], Any]) -> Callable[[dict[str, Any]], tuple[Any, ...] | None]:
    def fields(row: dict[str, Any]) -> tuple[Any, ...] | None:
        try:
            return get(row)  # type: ignore[no-any-return]
        except KeyError:
            return None

    return fields
