"""The loop's running transcript estimate: ``LoopState.tokens`` always equals
``estimate_tokens`` of the working transcript (which the compaction check used
to recompute from scratch every turn), through added messages, compactions and
reads at any point; and each model call sends the messages the full walk over
the transcript built, though it no longer walks the loop's (Hypothesis)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steptrace.agent._compaction import Compaction, compact, estimate_tokens
from steptrace.agent._state import LoopState
from steptrace.llm import Message, ToolCall, ToolSpec, estimate_input_tokens
from steptrace.llm._call import CheckedMessages, _Call, _tool_spec
from steptrace.testing import ScriptedProvider

SYSTEM = Message(role="system", content="You are careful.")
TASK = Message(role="user", content="Fix the failing test.")

_text = st.text(max_size=40)
_arguments = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.one_of(st.integers(), _text, st.booleans(), st.none(), st.lists(st.integers(), max_size=3)),
    max_size=3,
)
_call = st.builds(
    ToolCall,
    id=st.text(min_size=1, max_size=6),
    name=st.sampled_from(["read", "search", "write_file"]),
    arguments=_arguments,
    raw_arguments=st.one_of(st.just(""), _text),
)
_message = st.one_of(
    st.builds(Message, role=st.just("user"), content=_text),
    st.builds(
        Message,
        role=st.just("assistant"),
        content=_text,
        tool_calls=st.lists(_call, max_size=3).map(tuple),
    ),
    st.builds(Message, role=st.just("tool"), content=_text, tool_call_id=st.just("c")),
)
# An operation: add a message, read the estimate, or compact keeping the last n.
_operation = st.one_of(
    st.tuples(st.just("add"), _message),
    st.tuples(st.just("read"), st.none()),
    st.tuples(st.just("compact"), st.integers(min_value=0, max_value=4)),
)


@settings(max_examples=200)
@given(st.lists(_operation, max_size=40))
def test_running_estimate_equals_the_full_estimate(operations: list[tuple[str, Any]]) -> None:
    state = LoopState(messages=[SYSTEM, TASK], transcript=[SYSTEM, TASK], phases=[])
    assert state.tokens == estimate_tokens(state.messages)
    for kind, value in operations:
        if kind == "add":
            state.add(value)
        elif kind == "compact":
            outcome = compact(state.messages, Compaction(max_tokens=1, keep_last=value), "m")
            if outcome is not None:
                state.compacted(outcome.messages)
        else:
            assert state.tokens == estimate_tokens(state.messages)
    assert state.tokens == estimate_tokens(state.messages)
    assert state.transcript[:2] == [SYSTEM, TASK]


# -- the model call's transcript: the loop's messages taken as they are ----------------

PROVIDER = ScriptedProvider()
TOOL = ToolSpec(name="read", description="Read a file.", parameters={"type": "object"})


def walk_before(
    system: str | None, messages: Sequence[Any], prompt: str | None
) -> tuple[Message, ...]:
    """``_Call``'s messages as it built them before, walking every message every call."""
    built: list[Message] = []
    if system is not None:
        built.append(Message(role="system", content=system))
    for i, m in enumerate(messages or ()):
        built.append(m if type(m) is Message else Message.coerce(m, f"llm_call: messages[{i}]"))
    if prompt is not None:
        built.append(Message(role="user", content=prompt))
    if not any(m.role != "system" for m in built):
        raise ValueError("llm_call: nothing to send: pass a prompt or messages")
    return tuple(built)


def call_messages(
    system: str | None, messages: Sequence[Any], prompt: str | None
) -> tuple[Message, ...]:
    call = _Call(prompt, system, "m", messages, None, 0, None, None, PROVIDER, [TOOL], None)
    request = call.request()
    assert request.messages == call.messages
    # The pre-flight estimate, which measures a CheckedMessages by its running
    # count, is the full estimate; also for a schema retry's request.
    assert call.estimate(request) == estimate_input_tokens(request)
    call.messages += (Message(role="assistant", content="{"), Message(role="user", content="no"))
    retry = call.request()
    assert call.estimate(retry) == estimate_input_tokens(retry)
    return request.messages


def outcome(
    build: Any, system: str | None, messages: Sequence[Any], prompt: str | None
) -> tuple[str, Any]:
    """The messages built (each given one as the very object given, by its
    index), or the error."""
    try:
        built = build(system, messages, prompt)
    except (TypeError, ValueError) as exc:
        return type(exc).__name__, str(exc)
    given = {id(m): i for i, m in enumerate(messages)}
    return "messages", [(given.get(id(m)), m) for m in built]


_system = st.one_of(st.none(), _text)
_prompt = st.one_of(st.none(), _text)
_turn = st.tuples(st.just("turn"), st.tuples(_system, _prompt))


@settings(max_examples=200)
@given(st.lists(st.one_of(_operation, _turn), max_size=40))
def test_a_model_call_takes_the_loops_transcript_as_the_full_walk_would(
    operations: list[tuple[str, Any]],
) -> None:
    # The loop's working transcript goes to every model call as it is (checked
    # when made, then only appended Messages), through any sequence of turns,
    # added messages and compactions; the call sends what the old walk built.
    state = LoopState(messages=[SYSTEM, TASK], transcript=[SYSTEM, TASK], phases=[])
    for kind, value in operations:
        if kind == "add":
            state.add(value)
        elif kind == "compact":
            compacted = compact(state.messages, Compaction(max_tokens=1, keep_last=value), "m")
            if compacted is not None:
                state.compacted(compacted.messages)
        elif kind == "turn":
            system, prompt = value
            assert type(state.messages) is CheckedMessages
            expected = outcome(walk_before, system, list(state.messages), prompt)
            assert outcome(call_messages, system, state.messages, prompt) == expected


class _Note(Message):
    """A Message subclass: the walk kept such messages as they are."""


_entry = st.one_of(
    _message,
    st.builds(_Note, role=st.sampled_from(["system", "user"]), content=_text),
    st.builds(Message, role=st.just("system"), content=_text),
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool", "bot"])},
        optional={"content": st.one_of(_text, st.integers()), "name": _text},
    ),
    st.sampled_from([None, 3, "text"]),
)


@given(st.lists(_entry, max_size=8), _system, _prompt)
def test_a_model_call_builds_any_transcript_as_the_full_walk_did(
    messages: list[Any], system: str | None, prompt: str | None
) -> None:
    expected = outcome(walk_before, system, messages, prompt)
    assert outcome(call_messages, system, messages, prompt) == expected
    assert outcome(call_messages, system, tuple(messages), prompt) == expected
    if all(isinstance(m, Message) for m in messages):
        checked = CheckedMessages(messages)
        assert outcome(call_messages, system, checked, prompt) == expected
    else:
        with pytest.raises(TypeError, match="CheckedMessages: item"):
            CheckedMessages(messages)


def test_a_stale_call_estimates_its_own_messages() -> None:
    # A call whose CheckedMessages grew after it was made (not something the
    # loop does) measures the messages it sends, not the list's new count.
    messages = CheckedMessages([SYSTEM, TASK])
    call = _Call(None, None, "m", messages, None, 0, None, None, PROVIDER, None, None)
    request = call.request()
    messages.append(Message(role="user", content="x" * 300))
    assert call.estimate(request) == estimate_input_tokens(request)
    assert messages.chars() == len(SYSTEM.content) + len(TASK.content) + 300


class _Spec(ToolSpec):
    """A ToolSpec subclass: taken as it is, like any ToolSpec."""


_tool = st.one_of(
    st.builds(ToolSpec, name=st.sampled_from(["a", "b"]), description=_text),
    st.builds(_Spec, name=st.just("c")),
    st.fixed_dictionaries({"name": st.sampled_from(["d", 3])}, optional={"description": _text}),
    st.sampled_from([None, "e"]),
)


@given(st.lists(_tool, max_size=4), st.booleans())
def test_a_model_call_takes_its_tools_as_before(tools: list[Any], as_tuple: bool) -> None:
    # A tuple of ToolSpecs (the loop's offer) is taken as it is; anything else
    # is converted one by one, as every call did before.
    def before(given: Sequence[Any]) -> tuple[ToolSpec, ...]:
        return tuple(_tool_spec(t, i) for i, t in enumerate(given or ()))

    def now(given: Sequence[Any]) -> tuple[ToolSpec, ...]:
        return _Call(None, None, "m", [TASK], None, 0, None, None, PROVIDER, given, None).tools

    given: Sequence[Any] = tuple(tools) if as_tuple else tools
    try:
        expected: Any = before(given)
    except TypeError as exc:
        expected = str(exc)
    try:
        got: Any = now(given)
    except TypeError as exc:
        got = str(exc)
    assert got == expected
