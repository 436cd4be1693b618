"""Typed agent trace events, their JSON shape, and the rolled-up summary.

The eight events of the seed's ``AgentTraceEvent`` as frozen keyword-only
dataclasses. ``to_dict()`` gives the seed's serde shape exactly
(``{"type": "<snake_case>", ...fields in declaration order}``) and
``event_from_dict`` reads it back, rejecting unknown types, missing or extra
fields and wrongly typed values with an error naming the event and the field.
``summarize_events`` computes the seed's ``agent_trace_summary`` keys from any
sequence of events, as a roll-up over every loop with a stated meaning, and
beside them a summary per loop and the LLM calls made outside any loop. A
field added beyond the seed (``LlmCall.estimated``) is written only when it
differs from its default, so every event the seed could describe keeps the
seed's shape exactly. This module knows nothing about runs; the functions that
read and write the current run's event log live in ``tracing``.

The LLM call trace log entry (``LlmTraceEntry``) is here too: the seed's four
fields plus two optional ones.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple, TypeAlias

__all__ = [
    "AgentEvent",
    "ContextCompaction",
    "LlmCall",
    "LlmTraceEntry",
    "LoopComplete",
    "LoopIntervention",
    "PhaseChange",
    "SchemaRetry",
    "ToolExecution",
    "ToolRejected",
    "event_from_dict",
    "summarize_events",
]


class _Event:
    """Shared serialization for the event dataclasses (not public)."""

    __slots__ = ()
    type: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """The seed's serde shape: ``type`` first, then the fields in order
        (a field beyond the seed's only when it is not its default)."""
        out: dict[str, Any] = {"type": self.type}
        # Field names are looked up once a class: exporters and the store call
        # this for every event.
        names = _FIELD_NAMES.get(type(self))
        if names is None:
            names = _FIELD_NAMES[type(self)] = tuple(
                (f.name, f.default if f.metadata.get(_BEYOND_SEED) else _ALWAYS)
                for f in dataclasses.fields(self)  # type: ignore[arg-type]
            )
        for name, omitted in names:
            value = getattr(self, name)
            if value is omitted:
                continue
            out[name] = list(value) if isinstance(value, tuple) else value
        return out


_FIELD_NAMES: dict[type, tuple[tuple[str, Any], ...]] = {}
_ALWAYS = object()
_BEYOND_SEED = "steptrace_beyond_seed"
"""Field metadata: not in the seed's event, written only when not the default."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LlmCall(_Event):
    type: ClassVar[Literal["llm_call"]] = "llm_call"
    call_id: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_tokens: int
    duration_ms: int
    iteration: int
    estimated: bool = field(default=False, metadata={_BEYOND_SEED: True})
    """The provider reported no usable token counts: they are steptrace's
    conservative estimate (written as ``"estimated": true``, absent otherwise)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolExecution(_Event):
    type: ClassVar[Literal["tool_execution"]] = "tool_execution"
    tool_name: str
    tool_use_id: str
    duration_ms: int
    status: str
    """``ok``, ``error`` or ``rejected``."""
    classification: str
    """The tool's declared mutation class (``read_only``, ...), ``other`` if none."""
    iteration: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolRejected(_Event):
    type: ClassVar[Literal["tool_rejected"]] = "tool_rejected"
    tool_name: str
    reason: str
    iteration: int


@dataclass(frozen=True, kw_only=True, slots=True)
class LoopIntervention(_Event):
    type: ClassVar[Literal["loop_intervention"]] = "loop_intervention"
    tool_name: str
    kind: str
    """``warn``, ``block`` or ``skip``."""
    count: int
    iteration: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ContextCompaction(_Event):
    type: ClassVar[Literal["context_compaction"]] = "context_compaction"
    archived_messages: int
    new_summary_len: int
    iteration: int


@dataclass(frozen=True, kw_only=True, slots=True)
class PhaseChange(_Event):
    type: ClassVar[Literal["phase_change"]] = "phase_change"
    from_phase: str
    to_phase: str
    iteration: int


@dataclass(frozen=True, kw_only=True, slots=True)
class LoopComplete(_Event):
    type: ClassVar[Literal["loop_complete"]] = "loop_complete"
    status: str
    iterations: int
    total_duration_ms: int
    tools_used: tuple[str, ...] = field(default=())
    successful_tools: tuple[str, ...] = field(default=())


@dataclass(frozen=True, kw_only=True, slots=True)
class SchemaRetry(_Event):
    """One per re-prompt after output failed its schema: the initial call is
    attempt 0 and emits nothing, the first retry is ``attempt=1``."""

    type: ClassVar[Literal["schema_retry"]] = "schema_retry"
    attempt: int
    errors: tuple[str, ...] = field(default=())
    nudge_used: bool


AgentEvent: TypeAlias = (
    LlmCall
    | ToolExecution
    | ToolRejected
    | LoopIntervention
    | ContextCompaction
    | PhaseChange
    | LoopComplete
    | SchemaRetry
)

_EVENT_TYPES: dict[str, type[_Event]] = {
    cls.type: cls
    for cls in (
        LlmCall,
        ToolExecution,
        ToolRejected,
        LoopIntervention,
        ContextCompaction,
        PhaseChange,
        LoopComplete,
        SchemaRetry,
    )
}


def _install_slot_init(cls: type[_Event]) -> None:
    """Give a frozen event dataclass an ``__init__`` that fills each slot through
    its member descriptor: the same keyword-only signature, defaults and
    values as the one ``dataclass`` generates, which calls
    ``object.__setattr__`` per field and costs twice as much. Events are built
    on every model call and agent iteration. The code is generated, as
    ``dataclass`` generates its own, from the class's field names only."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    namespace: dict[str, Any] = {}
    params, body = [], []
    for index, each in enumerate(fields):
        namespace[f"_set{index}"] = cls.__dict__[each.name].__set__
        if each.default is dataclasses.MISSING:
            params.append(each.name)
        else:
            namespace[f"_default{index}"] = each.default
            params.append(f"{each.name}=_default{index}")
        body.append(f"    _set{index}(self, {each.name})")
    exec(f"def __init__(self, *, {', '.join(params)}):\n" + "\n".join(body), namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = cls.__init__.__annotations__
    type.__setattr__(cls, "_dataclass_init", cls.__init__)  # the reference, for the tests
    type.__setattr__(cls, "__init__", init)


for _cls in _EVENT_TYPES.values():
    _install_slot_init(_cls)
del _cls


def _check_value(event_type: str, name: str, annotation: str, value: Any) -> Any:
    # The fast checks come first: the run store reads back many events.
    if annotation == "int":
        if type(value) is int and value >= 0:
            return value
        if type(value) is not int:
            raise TypeError(f"{event_type}.{name}: expected an integer, got {value!r}")
        raise ValueError(f"{event_type}.{name}: expected a non-negative integer, got {value}")
    if annotation == "str":
        if not isinstance(value, str):
            raise TypeError(f"{event_type}.{name}: expected a string, got {value!r}")
        return value
    if annotation == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"{event_type}.{name}: expected true or false, got {value!r}")
        return value
    # tuple[str, ...]: JSON gives a list.
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{event_type}.{name}: expected a list of strings, got {value!r}")
    return tuple(value)


_SCHEMAS: dict[type, tuple[tuple[tuple[str, str, bool], ...], frozenset[str]]] = {}
"""Per event class: its fields' (name, annotation, required) and the keys its
dict may have."""


def _schema(cls: type) -> tuple[tuple[tuple[str, str, bool], ...], frozenset[str]]:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        fields = tuple(
            (f.name, str(f.type), not f.metadata.get(_BEYOND_SEED)) for f in dataclasses.fields(cls)
        )
        schema = _SCHEMAS[cls] = (fields, frozenset(name for name, _, _ in fields) | {"type"})
    return schema


class _Shape(NamedTuple):
    """One exact dict shape ``to_dict()`` writes for an event class of scalar
    fields: its keys in order, the exact type of each value, and how to fill
    an instance's slots from the values in that order."""

    cls: type[_Event]
    types: tuple[type, ...]
    ints: Callable[[Mapping[str, Any]], Any] | None
    """The integer values, as a tuple (``None``: one or none)."""
    one_int: str | None
    """The one integer field, when there is exactly one."""
    setters: tuple[Callable[[Any, Any], None], ...]
    """The slot of each value after ``type``, in order."""
    defaults: tuple[tuple[Callable[[Any, Any], None], Any], ...]
    """The slots of the fields not written, and their defaults."""


def _shapes() -> dict[tuple[str, ...], _Shape]:
    """The shapes of every event class whose fields are all ``int``, ``str`` or
    ``bool``: with and without each field written only when not its default."""
    shapes: dict[tuple[str, ...], _Shape] = {}
    scalar = {"int": int, "str": str, "bool": bool}
    for cls in _EVENT_TYPES.values():
        fields, _ = _schema(cls)
        if any(annotation not in scalar for _, annotation, _ in fields):
            continue
        slot = {name: getattr(cls, name).__set__ for name, _, _ in fields}
        default = {f.name: f.default for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        optional = [name for name, _, required in fields if not required]
        for written in range(1 << len(optional)):
            present = [
                (name, annotation)
                for name, annotation, required in fields
                if required or written >> optional.index(name) & 1
            ]
            names = [name for name, _ in present]
            ints = [name for name, annotation in present if annotation == "int"]
            shapes[("type", *names)] = _Shape(
                cls,
                (str, *(scalar[annotation] for _, annotation in present)),
                operator.itemgetter(*ints) if len(ints) > 1 else None,
                ints[0] if len(ints) == 1 else None,
                tuple(slot[name] for name in names),
                tuple((slot[name], default[name]) for name in optional if name not in names),
            )
    return shapes


_SHAPES: dict[tuple[str, ...], _Shape] = {}
_new = object.__new__


def event_from_dict(data: Mapping[str, Any]) -> AgentEvent:
    """Read an event back from its ``to_dict()`` / JSON shape.

    Raises ``ValueError`` (unknown type, missing or unexpected field) or
    ``TypeError`` (wrongly typed value), naming the event type and the field.
    """
    # The run store reads back every event of a run: a dict with exactly the
    # keys ``to_dict()`` writes, each value of exactly its field's type, is
    # checked with a few C-level comparisons. Anything else, valid or not,
    # takes the field-by-field path below, which names what is wrong.
    if type(data) is dict:
        if not _SHAPES:
            _SHAPES.update(_shapes())
        shape = _SHAPES.get(tuple(data))
        if (
            shape is not None
            and data["type"] == shape.cls.type
            and tuple(map(type, data.values())) == shape.types
            and (
                min(shape.ints(data)) >= 0
                if shape.ints is not None
                else shape.one_int is None or data[shape.one_int] >= 0
            )
        ):
            # The values are already checked: filling the slots directly does
            # what the dataclass __init__ would (events have no __post_init__),
            # at half the cost.
            event = _new(shape.cls)
            values = iter(data.values())
            next(values)  # the type
            for fill, value in zip(shape.setters, values, strict=True):
                fill(event, value)
            for fill, value in shape.defaults:
                fill(event, value)
            return event  # type: ignore[return-value]
    return _checked_from_dict(data)


def _checked_from_dict(data: Mapping[str, Any]) -> AgentEvent:
    """``event_from_dict`` field by field."""
    if not isinstance(data, Mapping):
        raise TypeError(f"agent event: expected a mapping, got {type(data).__name__}")
    event_type = data.get("type")
    cls = _EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if cls is None or not isinstance(event_type, str):
        raise ValueError(
            f"agent event: unknown type {event_type!r}; expected one of {sorted(_EVENT_TYPES)}"
        )
    fields, allowed = _schema(cls)
    if not allowed.issuperset(data):
        raise ValueError(f"{event_type}: unexpected field(s) {sorted(set(data) - allowed)}")
    kwargs: dict[str, Any] = {}
    for name, annotation, required in fields:
        if name not in data:
            if not required:
                continue
            raise ValueError(f"{event_type}: missing field {name!r}")
        kwargs[name] = _check_value(event_type, name, annotation, data[name])
    return cls(**kwargs)  # type: ignore[return-value]


class Tally:
    """The seed's counts for one loop (or a whole stream): what
    ``summarize_events`` adds up event by event, and a store that grouped the
    events in SQL adds up a group at a time (``add``)."""

    __slots__ = (
        "compactions",
        "completed",
        "input_tokens",
        "interventions",
        "iterations",
        "llm_calls",
        "llm_duration_ms",
        "output_tokens",
        "rejections",
        "status",
        "tool_duration_ms",
        "tool_executions",
        "tools_used",
        "total_duration_ms",
    )

    def __init__(self) -> None:
        self.llm_calls = self.tool_executions = self.rejections = 0
        self.interventions = self.compactions = 0
        self.input_tokens = self.output_tokens = 0
        self.llm_duration_ms = self.tool_duration_ms = 0
        self.tools_used: dict[str, None] = {}
        self.status, self.iterations, self.total_duration_ms = "unknown", 0, 0
        self.completed = False

    def add_call(self, event: LlmCall) -> None:
        self.llm_calls += 1
        self.input_tokens += event.input_tokens
        self.output_tokens += event.output_tokens
        self.llm_duration_ms += event.duration_ms

    def add(
        self,
        kind: str,
        count: int,
        input_tokens: int = 0,
        output_tokens: int = 0,
        duration_ms: int = 0,
    ) -> None:
        """Add ``count`` events of type ``kind`` (``llm_call``, ...) at once,
        with their summed tokens and durations; other types count nothing."""
        if kind == "llm_call":
            self.llm_calls += count
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens
            self.llm_duration_ms += duration_ms
        elif kind == "tool_execution":
            self.tool_executions += count
            self.tool_duration_ms += duration_ms
        elif kind == "tool_rejected":
            self.rejections += count
        elif kind == "loop_intervention":
            self.interventions += count
        elif kind == "context_compaction":
            self.compactions += count

    def complete(self, status: str, iterations: int, total_duration_ms: int) -> None:
        """The loop's ``LoopComplete``."""
        self.completed = True
        self.status, self.iterations, self.total_duration_ms = (
            status,
            iterations,
            total_duration_ms,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "iterations": self.iterations,
            "total_duration_ms": self.total_duration_ms,
            "llm_calls": self.llm_calls,
            "tool_executions": self.tool_executions,
            "tool_rejections": self.rejections,
            "interventions": self.interventions,
            "compactions": self.compactions,
            "total_input_tokens": self.input_tokens,
            "total_output_tokens": self.output_tokens,
            "total_llm_duration_ms": self.llm_duration_ms,
            "total_tool_duration_ms": self.tool_duration_ms,
            "tools_used": list(self.tools_used),
        }


def summarize_events(events: Iterable[AgentEvent]) -> dict[str, Any]:
    """The seed's summary keys, rolled up over the whole stream, then ``loops``
    and ``outside_loops``.

    ``loops`` has one dict per agent loop with the seed's keys over that loop's
    events alone, in the order the loops ended (a loop still going or cut off
    last, status ``"unknown"``). A loop's events are those after the previous
    loop's ``LoopComplete`` up to its own, less the ``LlmCall``s made outside
    any loop (``iteration == 0``); loops run concurrently in one run are told
    apart only in the roll-up. ``outside_loops`` counts those outside calls
    (``llm_calls``, ``total_input_tokens``, ``total_output_tokens``,
    ``total_llm_duration_ms``).

    The roll-up (the seed's keys): every count, token and duration total and
    ``tools_used`` (first-use order) are over the whole stream, every loop and
    the calls outside them; ``iterations`` and ``total_duration_ms`` are the
    sums over the loops that completed; ``status`` is theirs when they all
    ended alike, ``"mixed"`` when they did not, ``"unknown"`` when none
    completed. For one loop, the seed's summary exactly.
    """
    total, outside = Tally(), Tally()
    loops: list[Tally] = []
    current: Tally | None = None
    for event in events:
        if isinstance(event, SchemaRetry):
            continue
        if isinstance(event, LlmCall) and event.iteration == 0:
            total.add_call(event)
            outside.add_call(event)
            continue
        if current is None:
            current = Tally()
            loops.append(current)
        match event:
            case LlmCall():
                total.add_call(event)
                current.add_call(event)
            case ToolExecution():
                for tally in (total, current):
                    tally.tool_executions += 1
                    tally.tool_duration_ms += event.duration_ms
                    tally.tools_used.setdefault(event.tool_name)
            case ToolRejected():
                total.rejections += 1
                current.rejections += 1
            case LoopIntervention():
                total.interventions += 1
                current.interventions += 1
            case ContextCompaction():
                total.compactions += 1
                current.compactions += 1
            case LoopComplete():
                current.complete(event.status, event.iterations, event.total_duration_ms)
                current = None
            case PhaseChange():
                pass
    return rolled_up(total, outside, loops)


def rolled_up(total: Tally, outside: Tally, loops: Sequence[Tally]) -> dict[str, Any]:
    """``summarize_events``'s dict from its tallies: ``total`` has every count
    and ``tools_used``, ``outside`` the calls outside any loop, ``loops`` one
    tally each, in the order they ended; the roll-up's status, iterations and
    duration are derived here from the loops that completed."""
    statuses: dict[str, None] = {}
    for loop in loops:
        if loop.completed:
            total.iterations += loop.iterations
            total.total_duration_ms += loop.total_duration_ms
            statuses.setdefault(loop.status)
    if statuses:
        total.status = next(iter(statuses)) if len(statuses) == 1 else "mixed"
    return {
        **total.as_dict(),
        "loops": [loop.as_dict() for loop in loops],
        "outside_loops": {
            "llm_calls": outside.llm_calls,
            "total_input_tokens": outside.input_tokens,
            "total_output_tokens": outside.output_tokens,
            "total_llm_duration_ms": outside.llm_duration_ms,
        },
    }


class LlmTraceEntry(NamedTuple):
    """One entry of the LLM call trace log: the seed's four fields, then the
    priced cost (``None`` when no price was known) and cached input tokens.

    A named tuple because one is built for every recorded call."""

    model: str
    input_tokens: int
    output_tokens: int
    duration_ms: int
    cost_usd: float | None = None
    cache_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()
