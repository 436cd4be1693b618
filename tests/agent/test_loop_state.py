"""The loop's running transcript estimate: ``LoopState.tokens`` always equals
``estimate_tokens`` of the working transcript (which the compaction check used
to recompute from scratch every turn), through added messages, compactions and
reads at any point (Hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from steptrace.agent._compaction import Compaction, compact, estimate_tokens
from steptrace.agent._state import LoopState
from steptrace.llm import Message, ToolCall

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
