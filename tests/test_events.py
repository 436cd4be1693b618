"""Agent events: the seed's serde shape, reading it back, and the rolled-up summary."""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steptrace import (
    AgentEvent,
    ContextCompaction,
    LlmCall,
    LoopComplete,
    LoopIntervention,
    PhaseChange,
    SchemaRetry,
    ToolExecution,
    ToolRejected,
    event_from_dict,
    summarize_events,
)

SUMMARY_KEYS = [
    "status",
    "iterations",
    "total_duration_ms",
    "llm_calls",
    "tool_executions",
    "tool_rejections",
    "interventions",
    "compactions",
    "total_input_tokens",
    "total_output_tokens",
    "total_llm_duration_ms",
    "total_tool_duration_ms",
    "tools_used",
]

# Each event with the exact (ordered) items of the seed's serde output.
SHAPES: list[tuple[AgentEvent, list[tuple[str, Any]]]] = [
    (
        LlmCall(
            call_id="c1",
            model="gpt-x",
            input_tokens=10,
            output_tokens=20,
            cache_tokens=3,
            duration_ms=150,
            iteration=1,
        ),
        [
            ("type", "llm_call"),
            ("call_id", "c1"),
            ("model", "gpt-x"),
            ("input_tokens", 10),
            ("output_tokens", 20),
            ("cache_tokens", 3),
            ("duration_ms", 150),
            ("iteration", 1),
        ],
    ),
    (
        ToolExecution(
            tool_name="read",
            tool_use_id="t1",
            duration_ms=7,
            status="ok",
            classification="read_only",
            iteration=2,
        ),
        [
            ("type", "tool_execution"),
            ("tool_name", "read"),
            ("tool_use_id", "t1"),
            ("duration_ms", 7),
            ("status", "ok"),
            ("classification", "read_only"),
            ("iteration", 2),
        ],
    ),
    (
        ToolRejected(tool_name="rm", reason="destructive", iteration=3),
        [
            ("type", "tool_rejected"),
            ("tool_name", "rm"),
            ("reason", "destructive"),
            ("iteration", 3),
        ],
    ),
    (
        LoopIntervention(tool_name="read", kind="warn", count=4, iteration=5),
        [
            ("type", "loop_intervention"),
            ("tool_name", "read"),
            ("kind", "warn"),
            ("count", 4),
            ("iteration", 5),
        ],
    ),
    (
        ContextCompaction(archived_messages=12, new_summary_len=300, iteration=6),
        [
            ("type", "context_compaction"),
            ("archived_messages", 12),
            ("new_summary_len", 300),
            ("iteration", 6),
        ],
    ),
    (
        PhaseChange(from_phase="plan", to_phase="act", iteration=7),
        [("type", "phase_change"), ("from_phase", "plan"), ("to_phase", "act"), ("iteration", 7)],
    ),
    (
        LoopComplete(
            status="done",
            iterations=8,
            total_duration_ms=9000,
            tools_used=("read", "write"),
            successful_tools=("read",),
        ),
        [
            ("type", "loop_complete"),
            ("status", "done"),
            ("iterations", 8),
            ("total_duration_ms", 9000),
            ("tools_used", ["read", "write"]),
            ("successful_tools", ["read"]),
        ],
    ),
    (
        SchemaRetry(attempt=1, errors=("missing key 'a'",), nudge_used=True),
        [
            ("type", "schema_retry"),
            ("attempt", 1),
            ("errors", ["missing key 'a'"]),
            ("nudge_used", True),
        ],
    ),
]


@pytest.mark.parametrize(("event", "expected"), SHAPES, ids=lambda v: type(v).__name__)
def test_to_dict_is_the_seed_serde_shape(
    event: AgentEvent, expected: list[tuple[str, Any]]
) -> None:
    data = event.to_dict()
    assert list(data.items()) == expected
    for key, value in data.items():
        if isinstance(value, list | tuple):
            assert type(value) is list, key  # serde writes Vec as a JSON array
    assert json.loads(json.dumps(data)) == dict(expected)
    assert event_from_dict(data) == event


def test_shapes_cover_all_eight_events() -> None:
    assert {type(e) for e, _ in SHAPES} == set(AgentEvent.__args__)
    assert len(SHAPES) == 8


def test_events_are_frozen_and_keyword_only() -> None:
    event = PhaseChange(from_phase="a", to_phase="b", iteration=0)
    with pytest.raises(AttributeError):
        event.iteration = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        PhaseChange("a", "b", 0)  # type: ignore[call-arg]


# -- round trip -------------------------------------------------------------------

_count = st.integers(min_value=0, max_value=2**63 - 1)
_text = st.text(max_size=20)
_names = st.lists(_text, max_size=5).map(tuple)

EVENTS: st.SearchStrategy[AgentEvent] = st.one_of(
    st.builds(
        LlmCall,
        call_id=_text,
        model=_text,
        input_tokens=_count,
        output_tokens=_count,
        cache_tokens=_count,
        duration_ms=_count,
        iteration=_count,
    ),
    st.builds(
        ToolExecution,
        tool_name=_text,
        tool_use_id=_text,
        duration_ms=_count,
        status=st.sampled_from(["ok", "error", "rejected"]),
        classification=_text,
        iteration=_count,
    ),
    st.builds(ToolRejected, tool_name=_text, reason=_text, iteration=_count),
    st.builds(
        LoopIntervention,
        tool_name=_text,
        kind=st.sampled_from(["warn", "block", "skip"]),
        count=_count,
        iteration=_count,
    ),
    st.builds(
        ContextCompaction, archived_messages=_count, new_summary_len=_count, iteration=_count
    ),
    st.builds(PhaseChange, from_phase=_text, to_phase=_text, iteration=_count),
    st.builds(
        LoopComplete,
        status=_text,
        iterations=_count,
        total_duration_ms=_count,
        tools_used=_names,
        successful_tools=_names,
    ),
    st.builds(SchemaRetry, attempt=_count, errors=_names, nudge_used=st.booleans()),
)


@given(EVENTS)
def test_event_round_trips_through_json(event: AgentEvent) -> None:
    data = event.to_dict()
    assert next(iter(data)) == "type"
    back = event_from_dict(json.loads(json.dumps(data)))
    assert back == event
    assert type(back) is type(event)
    assert back.to_dict() == data


@given(EVENTS)
def test_event_init_is_the_dataclass_init(event: AgentEvent) -> None:
    """Events are built by a generated slot-filling ``__init__`` (the dataclass
    one costs twice as much): the same signature, and the same event for the
    same arguments, defaults included."""
    cls = type(event)
    reference = cls._dataclass_init  # type: ignore[union-attr]
    assert inspect.signature(cls.__init__) == inspect.signature(reference)
    given_fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    built = object.__new__(cls)
    reference(built, **given_fields)
    assert cls(**given_fields) == built == event
    required = {
        name: value
        for name, value in given_fields.items()
        if next(f for f in dataclasses.fields(event) if f.name == name).default
        is dataclasses.MISSING
    }
    defaulted = object.__new__(cls)
    reference(defaulted, **required)
    assert cls(**required) == defaulted


def test_event_init_rejects_what_the_dataclass_init_rejects() -> None:
    fields = SHAPES[0][0].to_dict()
    del fields["type"]
    for bad in ({**fields, "unknown": 1}, {k: v for k, v in fields.items() if k != "model"}):
        with pytest.raises(TypeError, match=r"LlmCall.__init__\(\)"):
            LlmCall(**bad)
    with pytest.raises(TypeError):
        LlmCall(*fields.values())  # type: ignore[call-arg]


# -- rejection --------------------------------------------------------------------


def _llm_call_dict(**changes: Any) -> dict[str, Any]:
    data = SHAPES[0][0].to_dict()
    data.update(changes)
    return data


def test_from_dict_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match=r"unknown type 'llm_request'") as info:
        event_from_dict(_llm_call_dict(type="llm_request"))
    assert "llm_call" in str(info.value)  # lists the valid ones
    with pytest.raises(ValueError, match="unknown type None"):
        event_from_dict({"iteration": 1})
    with pytest.raises(ValueError, match="unknown type"):
        event_from_dict({"type": "LlmCall"})  # the Python class name is not the tag


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(TypeError, match="mapping"):
        event_from_dict([("type", "llm_call")])  # type: ignore[arg-type]


def test_from_dict_rejects_missing_field() -> None:
    data = _llm_call_dict()
    del data["cache_tokens"]
    with pytest.raises(ValueError, match=r"llm_call: missing field 'cache_tokens'"):
        event_from_dict(data)


def test_from_dict_rejects_missing_list_field() -> None:
    data = SHAPES[6][0].to_dict()
    del data["successful_tools"]
    with pytest.raises(ValueError, match=r"loop_complete: missing field 'successful_tools'"):
        event_from_dict(data)


def test_from_dict_rejects_extra_field() -> None:
    with pytest.raises(ValueError, match=r"llm_call: unexpected field\(s\) \['cost_usd'\]"):
        event_from_dict(_llm_call_dict(cost_usd=0.1))


@pytest.mark.parametrize(
    ("event_index", "field", "value", "error"),
    [
        (0, "input_tokens", "10", TypeError),
        (0, "input_tokens", 1.0, TypeError),
        (0, "input_tokens", None, TypeError),
        (0, "input_tokens", -1, ValueError),
        (0, "duration_ms", -5, ValueError),
        (0, "iteration", True, TypeError),
        (0, "cache_tokens", False, TypeError),
        (0, "model", 3, TypeError),
        (0, "call_id", None, TypeError),
        (1, "status", ["ok"], TypeError),
        (3, "count", -1, ValueError),
        (4, "archived_messages", 2.5, TypeError),
        (6, "tools_used", "read", TypeError),
        (6, "successful_tools", ["a", 1], TypeError),
        (6, "iterations", True, TypeError),
        (7, "nudge_used", 1, TypeError),
        (7, "nudge_used", "true", TypeError),
        (7, "errors", None, TypeError),
        (7, "attempt", -2, ValueError),
    ],
)
def test_from_dict_rejects_wrong_values(
    event_index: int, field: str, value: Any, error: type[Exception]
) -> None:
    event = SHAPES[event_index][0]
    data = event.to_dict()
    data[field] = value
    with pytest.raises(error) as info:
        event_from_dict(data)
    assert f"{event.type}.{field}" in str(info.value)


# -- summary ----------------------------------------------------------------------


def _call(call_id: str, tokens_in: int, tokens_out: int, ms: int) -> LlmCall:
    return LlmCall(
        call_id=call_id,
        model="m",
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cache_tokens=tokens_in // 2,
        duration_ms=ms,
        iteration=1,
    )


def _tool(name: str, ms: int, status: str) -> ToolExecution:
    return ToolExecution(
        tool_name=name,
        tool_use_id=f"{name}-{ms}",
        duration_ms=ms,
        status=status,
        classification="other",
        iteration=1,
    )


def test_summary_of_a_mixed_stream() -> None:
    events: list[AgentEvent] = [
        PhaseChange(from_phase="", to_phase="plan", iteration=0),
        _call("a", 100, 20, 300),
        _tool("search", 40, "ok"),
        _tool("write", 60, "error"),
        LoopComplete(status="interrupted", iterations=1, total_duration_ms=5, tools_used=("x",)),
        ToolRejected(tool_name="rm", reason="destructive", iteration=2),
        SchemaRetry(attempt=1, errors=("bad",), nudge_used=False),
        _tool("search", 1, "rejected"),
        LoopIntervention(tool_name="search", kind="block", count=3, iteration=2),
        ContextCompaction(archived_messages=10, new_summary_len=99, iteration=3),
        ContextCompaction(archived_messages=4, new_summary_len=50, iteration=4),
        _call("b", 7, 3, 200),
        PhaseChange(from_phase="plan", to_phase="done", iteration=4),
        LoopComplete(
            status="done",
            iterations=4,
            total_duration_ms=1234,
            tools_used=("search", "write"),
            successful_tools=("search",),
        ),
    ]
    summary = summarize_events(events)
    assert list(summary) == [*SUMMARY_KEYS, "loops", "outside_loops"]
    # Two loops: the roll-up sums their iterations and durations; they ended
    # differently, so the status says so.
    assert {k: summary[k] for k in SUMMARY_KEYS} == {
        "status": "mixed",
        "iterations": 5,
        "total_duration_ms": 1239,
        "llm_calls": 2,
        "tool_executions": 3,
        "tool_rejections": 1,
        "interventions": 1,
        "compactions": 2,
        "total_input_tokens": 107,
        "total_output_tokens": 23,
        "total_llm_duration_ms": 500,
        "total_tool_duration_ms": 101,
        "tools_used": ["search", "write"],
    }
    first, second = summary["loops"]
    assert first == {
        "status": "interrupted",
        "iterations": 1,
        "total_duration_ms": 5,
        "llm_calls": 1,
        "tool_executions": 2,
        "tool_rejections": 0,
        "interventions": 0,
        "compactions": 0,
        "total_input_tokens": 100,
        "total_output_tokens": 20,
        "total_llm_duration_ms": 300,
        "total_tool_duration_ms": 100,
        "tools_used": ["search", "write"],
    }
    assert list(first) == SUMMARY_KEYS
    assert (second["status"], second["iterations"], second["tools_used"]) == ("done", 4, ["search"])
    assert (second["tool_rejections"], second["compactions"], second["llm_calls"]) == (1, 2, 1)
    assert summary["outside_loops"] == {
        "llm_calls": 0,
        "total_input_tokens": 0,
        "total_output_tokens": 0,
        "total_llm_duration_ms": 0,
    }
    # Only the kinds the seed ignores: nothing changes.
    ignored: list[AgentEvent] = [e for e in events if isinstance(e, PhaseChange | SchemaRetry)]
    assert summarize_events([e for e in events if e not in ignored]) == summary


def test_summary_of_an_empty_stream() -> None:
    summary = summarize_events([])
    assert summary.pop("loops") == []
    assert summary.pop("outside_loops") == {
        "llm_calls": 0,
        "total_input_tokens": 0,
        "total_output_tokens": 0,
        "total_llm_duration_ms": 0,
    }
    assert list(summary) == SUMMARY_KEYS
    assert summary == {
        "status": "unknown",
        "iterations": 0,
        "total_duration_ms": 0,
        "llm_calls": 0,
        "tool_executions": 0,
        "tool_rejections": 0,
        "interventions": 0,
        "compactions": 0,
        "total_input_tokens": 0,
        "total_output_tokens": 0,
        "total_llm_duration_ms": 0,
        "total_tool_duration_ms": 0,
        "tools_used": [],
    }


def test_summary_accepts_any_iterable() -> None:
    events = (PhaseChange(from_phase="a", to_phase="b", iteration=i) for i in range(3))
    assert summarize_events(events)["status"] == "unknown"


@given(st.lists(EVENTS, max_size=40))
def test_summary_equals_independent_computation(events: list[AgentEvent]) -> None:
    llm = [e for e in events if isinstance(e, LlmCall)]
    tools = [e for e in events if isinstance(e, ToolExecution)]
    completes = [e for e in events if isinstance(e, LoopComplete)]
    first_use: list[str] = []
    for tool in tools:
        if tool.tool_name not in first_use:
            first_use.append(tool.tool_name)
    statuses = list(dict.fromkeys(e.status for e in completes))
    expected = {
        "status": "unknown" if not statuses else statuses[0] if len(statuses) == 1 else "mixed",
        "iterations": sum(e.iterations for e in completes),
        "total_duration_ms": sum(e.total_duration_ms for e in completes),
        "llm_calls": len(llm),
        "tool_executions": len(tools),
        "tool_rejections": sum(isinstance(e, ToolRejected) for e in events),
        "interventions": sum(isinstance(e, LoopIntervention) for e in events),
        "compactions": sum(isinstance(e, ContextCompaction) for e in events),
        "total_input_tokens": sum(e.input_tokens for e in llm),
        "total_output_tokens": sum(e.output_tokens for e in llm),
        "total_llm_duration_ms": sum(e.duration_ms for e in llm),
        "total_tool_duration_ms": sum(e.duration_ms for e in tools),
        "tools_used": first_use,
    }
    summary = summarize_events(events)
    assert {k: summary[k] for k in SUMMARY_KEYS} == expected
    assert list(summary) == [*SUMMARY_KEYS, "loops", "outside_loops"]
    assert json.loads(json.dumps(summary)) == summary
    # The loops and the calls outside them partition the stream's counts.
    loops, outside = summary["loops"], summary["outside_loops"]
    assert [loop["status"] for loop in loops if loop["status"] != "unknown"] == [
        e.status for e in completes if e.status != "unknown"
    ]
    for key in ("llm_calls", "total_input_tokens", "total_output_tokens"):
        assert sum(loop[key] for loop in loops) + outside[key] == summary[key]
    for key in ("tool_executions", "tool_rejections", "interventions", "compactions"):
        assert sum(loop[key] for loop in loops) == summary[key]
    assert outside["llm_calls"] == sum(e.iteration == 0 for e in llm)


# -- the fast path ----------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.lists(st.text(max_size=3), max_size=2),
)


def _outcome(read: Any, data: Any) -> Any:
    try:
        event = read(data)
    except (TypeError, ValueError) as error:
        return type(error), str(error)
    return type(event), event, repr(event), event.to_dict()


@given(
    event=EVENTS
    | st.builds(
        LlmCall,
        call_id=_text,
        model=_text,
        input_tokens=_count,
        output_tokens=_count,
        cache_tokens=_count,
        duration_ms=_count,
        iteration=_count,
        estimated=st.booleans(),
    ),
    change=st.one_of(
        st.none(),
        st.tuples(st.just("set"), st.integers(0, 9), _SCALARS),
        st.tuples(st.just("drop"), st.integers(0, 9), st.none()),
        st.tuples(st.just("add"), st.sampled_from(["extra", "estimated", "type"]), _SCALARS),
        st.tuples(st.just("reverse"), st.none(), st.none()),
    ),
)
def test_the_fast_path_reads_exactly_what_the_checked_path_reads(
    event: AgentEvent, change: Any
) -> None:
    # event_from_dict checks a dict of the exact shape to_dict() writes in a
    # few comparisons; any dict, well formed or not, reads the same as through
    # the field-by-field path, or fails the same way.
    from steptrace.events import _checked_from_dict

    data: dict[str, Any] = json.loads(json.dumps(event.to_dict()))
    if change is not None:
        how, where, value = change
        keys = list(data)
        if how == "set":
            data[keys[where % len(keys)]] = value
        elif how == "drop":
            del data[keys[where % len(keys)]]
        elif how == "add":
            data[where] = value
        else:
            data = dict(reversed(data.items()))
    assert _outcome(event_from_dict, data) == _outcome(_checked_from_dict, data)
