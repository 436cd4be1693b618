"""``steptrace._json``: each prebuilt encoder gives ``json.dumps``'s output with
the same options, text and exception alike, for any value, hostile ones
included (control characters, NUL, lone surrogates, ints too long to write,
NaN and infinities allowed or refused, values and keys JSON cannot hold,
cycles); and so does every place that uses one, against the ``json.dumps``
call it replaced."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steptrace import _json
from steptrace.agent._compaction import _arguments
from steptrace.agent._loop_detection import LoopTracker, canonical_arguments
from steptrace.agent._tools import _jsonable, render
from steptrace.llm import LlmRequest, Message, ToolCall, ToolSpec, estimate_input_tokens
from steptrace.llm._call import _json_chars
from steptrace.store._encode import _chunks, encode
from steptrace.store._queries import dumps as store_dumps

HUGE_INT = 10**5000  # past int's 4,300-digit limit: str() refuses it

hostile_text = st.text(
    # Every code point, surrogates and control characters included.
    alphabet=st.characters(blacklist_categories=()),
    max_size=8,
) | st.sampled_from(["\x00", "\ud800", "\udfff", "a\ud83d", "\x1b[31m", "\u2028", '"\\'])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([-(2**200), 2**63])
    | st.just(0).map(lambda _: HUGE_INT)  # (hypothesis cannot show it as a literal)
    | st.floats()  # NaN and the infinities included
    | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e300])
    | hostile_text
)
keys = hostile_text | st.integers() | st.floats() | st.booleans() | st.none()
odd_values = st.sampled_from([object(), {1, 2}, b"x\x00", 1j, (1, "a"), frozenset(), range(2)])
odd_keys = st.sampled_from([(1, 2), b"k", frozenset()])

json_like = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(keys, inner, max_size=3)
    ),
    max_leaves=10,
)
hostile = st.recursive(
    scalars | odd_values,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys | odd_keys, inner, max_size=3),
    max_leaves=10,
)
options = st.fixed_dictionaries(
    {},
    optional={
        "default": st.sampled_from([None, str, repr]),
        "sort_keys": st.booleans(),
        "separators": st.sampled_from([(", ", ": "), (",", ":"), (" , ", " : ")]),
        "ensure_ascii": st.booleans(),
        "allow_nan": st.booleans(),
    },
)


def outcome(dumps: Callable[[Any], str], value: Any) -> tuple[str, Any]:
    """What a call gives: its text, or its exception's type and message."""
    try:
        return "text", dumps(value)
    except Exception as exc:
        return type(exc).__name__, str(exc)


def cyclic() -> dict[str, Any]:
    value: dict[str, Any] = {"a": [1]}
    value["a"].append(value)
    return value


@given(options, json_like | hostile)
def test_an_encoder_gives_what_json_dumps_gives(opts: dict[str, Any], value: Any) -> None:
    encoder = _json.encoder(**opts)
    expected = outcome(lambda v: json.dumps(v, **opts), value)
    assert outcome(encoder, value) == expected
    assert outcome(encoder, value) == expected  # nothing left behind by the first call


@given(options, json_like)
def test_the_c_encoder_alone_gives_the_same_text(opts: dict[str, Any], value: Any) -> None:
    chunks = _json.chunks(**opts)
    expected = outcome(lambda v: json.dumps(v, **opts), value)
    got = outcome(lambda v: "".join(chunks(v, 0)), value)
    # Without markers, json.dumps's errors come out as the same type (a value it
    # refuses) with the same message; only a cycle differs (see below).
    assert got == expected


@pytest.mark.parametrize(
    "opts", [{}, {"sort_keys": True, "default": str}, {"separators": (",", ":"), "default": str}]
)
def test_a_cycle_raises_what_json_dumps_raises(opts: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Circular reference detected"):
        _json.encoder(**opts)(cyclic())
    with pytest.raises(RecursionError):  # the C encoder alone, without markers
        _json.chunks(**opts)(cyclic(), 0)
    assert _json.encoder(**opts)({"a": [1, {"b": 2}]}).startswith('{"a"')


def test_nan_is_written_or_refused_as_json_dumps_does() -> None:
    assert _json.encoder()([math.nan, -math.inf]) == "[NaN, -Infinity]"
    with pytest.raises(ValueError, match="Out of range float"):
        _json.encoder(allow_nan=False)({"x": math.inf})
    with pytest.raises(ValueError, match="Out of range float"):
        _json.chunks(allow_nan=False)([math.nan], 0)


def test_a_value_json_cannot_hold_is_refused_as_json_dumps_refuses_it() -> None:
    with pytest.raises(TypeError, match="Object of type bytes is not JSON serializable"):
        _json.encoder()({"a": b"x"})
    with pytest.raises(TypeError, match="Object of type bytes is not JSON serializable"):
        _json.chunks()({"a": b"x"}, 0)
    with pytest.raises(ValueError, match="4300"):
        _json.encoder()([HUGE_INT])


# -- each place that uses one, against the json.dumps call it replaced ----------------


@given(json_like | hostile)
def test_the_stores_encoding_is_its_dumps(value: Any) -> None:
    expected = outcome(store_dumps, value)
    assert outcome(encode, value) == expected
    if expected[0] == "text":
        assert "".join(_chunks(value, 0)) == expected[1]


arguments = st.dictionaries(hostile_text, json_like | hostile, max_size=4) | st.dictionaries(
    keys, json_like, max_size=3
)


def canonical_before(args: dict[Any, Any]) -> str:
    try:
        return json.dumps(args, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(sorted(args.items(), key=lambda item: str(item[0])))


@given(arguments)
def test_loop_detection_keys_by_sorted_json_with_str_for_the_rest(args: dict[Any, Any]) -> None:
    expected = outcome(canonical_before, args)
    assert outcome(canonical_arguments, args) == expected
    assert outcome(lambda a: LoopTracker._key("t", a)[1], args) == expected


def test_loop_detection_keys_a_cycle_by_its_repr() -> None:
    value = cyclic()
    assert canonical_arguments(value) == canonical_before(value)
    assert LoopTracker._key("t", value) == ("t", canonical_before(value))


@given(arguments)
def test_compactions_summary_writes_arguments_as_before(args: dict[Any, Any]) -> None:
    def before(a: dict[Any, Any]) -> str:
        try:
            text = json.dumps(a, sort_keys=True, default=str)
        except (TypeError, ValueError):
            text = repr(a)
        return _arguments_before(text)

    assert outcome(_arguments, args) == outcome(before, args)


def _arguments_before(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= 200 else flat[:200] + "…"


@given(json_like | hostile)
def test_a_tool_result_renders_as_before(value: Any) -> None:
    def before(v: Any) -> str:
        if isinstance(v, str):
            return v
        if v is None:
            return ""
        try:
            return json.dumps(v, default=_jsonable, ensure_ascii=False)
        except (TypeError, ValueError):
            return str(v)

    assert outcome(render, value) == outcome(before, value)


@given(arguments, hostile_text)
def test_the_estimate_measures_a_tool_call_as_json_dumps_does(
    args: dict[Any, Any], name: str
) -> None:
    call = ToolCall(id="c", name=name, arguments=args)
    assert outcome(lambda c: str(_json_chars(c)), call) == outcome(
        lambda c: str(len(c.name) + len(json.dumps(dict(c.arguments)))), call
    )


@given(st.dictionaries(hostile_text, json_like, max_size=4), hostile_text)
def test_the_estimate_measures_tools_and_schemas_as_json_dumps_does(
    parameters: dict[str, Any], description: str
) -> None:
    spec = ToolSpec(name="t", description=description, parameters=parameters)
    request = LlmRequest(
        model="m", messages=(Message(role="user", content="hi"),), response_schema=parameters
    )
    before_spec = outcome(lambda p: str(1 + len(description) + len(json.dumps(p))), parameters)
    assert outcome(lambda s: str(_json_chars(s)), spec) == before_spec
    chars = 2 + len(json.dumps(parameters)) if before_spec[0] == "text" else None
    if chars is not None:
        assert estimate_input_tokens(request) == math.ceil(chars / 3) + 4


def test_the_estimate_of_cyclic_arguments_raises_what_json_dumps_raised() -> None:
    call = ToolCall(id="c", name="t", arguments=cyclic())
    request = LlmRequest(model="m", messages=(Message(role="assistant", tool_calls=(call,)),))
    with pytest.raises(ValueError, match="Circular reference detected"):
        estimate_input_tokens(request)
