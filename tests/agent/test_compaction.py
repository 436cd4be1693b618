"""Compaction: thresholds per model, the token estimate, the head/middle/tail
split (tool results never cut off from their call), the summary message and
its re-archiving, the deterministic summary and its truncation, custom and
async summarizers, validation, and (with Hypothesis) the split's invariants
over arbitrary well-formed transcripts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steptrace.agent._compaction import (
    SUMMARY_NAME,
    Compaction,
    CompactionResult,
    acompact,
    compact,
    deterministic_summary,
    estimate_tokens,
    is_summary,
    known_context_window,
    plan_compaction,
    summary_message,
)
from steptrace.llm import LlmRequest, Message, ToolCall, estimate_input_tokens

SYSTEM = Message(role="system", content="You are careful.")
TASK = Message(role="user", content="Fix the failing test.")
LOW = Compaction(max_tokens=1, keep_last=2)  # always over the threshold


def call(call_id: str, name: str = "read", **arguments: Any) -> Message:
    return Message(
        role="assistant", tool_calls=(ToolCall(id=call_id, name=name, arguments=arguments),)
    )


def result(call_id: str, content: str = "ok") -> Message:
    return Message(role="tool", content=content, tool_call_id=call_id)


def say(text: str) -> Message:
    return Message(role="assistant", content=text)


def user(text: str) -> Message:
    return Message(role="user", content=text)


# -- thresholds and the estimate ---------------------------------------------------


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("gpt-4o", 128_000),
        ("gpt-4o-mini-2024-07-18", 128_000),
        ("openai:gpt-4.1", 128_000),
        ("o3-mini", 128_000),
        ("claude-sonnet-4-5", 200_000),
        ("anthropic:claude-3-5-haiku-latest", 200_000),
        ("some-local-model", 128_000),
    ],
)
def test_known_context_window(model: str, window: int) -> None:
    assert known_context_window(model) == window


def test_threshold_is_a_fraction_of_the_models_window() -> None:
    assert Compaction().threshold("gpt-4o") == 96_000
    assert Compaction().threshold("claude-opus-4-1") == 150_000
    assert Compaction(fraction=0.5).threshold("claude-opus-4-1") == 100_000
    assert Compaction(fraction=1).threshold("unknown") == 128_000


def test_threshold_from_an_explicit_context_window() -> None:
    assert Compaction(context_window=10_000).threshold("claude-opus-4-1") == 7_500
    assert Compaction(context_window=10_000, fraction=0.2).threshold("gpt-4o") == 2_000


def test_absolute_threshold_wins() -> None:
    config = Compaction(max_tokens=5_000, context_window=10_000, fraction=0.2)
    assert config.threshold("claude-opus-4-1") == 5_000


def test_estimate_matches_llm_calls_estimate() -> None:
    assert estimate_tokens([user("abcdef")]) == 2 + 4
    # name (4) + '{"path": "a"}' (13) = 17 chars -> 6 tokens, + 4 a message.
    assert estimate_tokens([call("c1", path="a")]) == 6 + 4
    messages = [SYSTEM, TASK, call("c1", path="src/x.py"), result("c1", "x" * 100), say("done")]
    assert estimate_tokens(messages) == estimate_input_tokens(
        LlmRequest(model="m", messages=tuple(messages))
    )
    assert estimate_tokens([]) == 0


# -- when compaction happens ---------------------------------------------------------


def test_under_or_at_the_threshold_nothing_happens() -> None:
    messages = [SYSTEM, TASK, say("a" * 300), say("b" * 300), say("c")]
    tokens = estimate_tokens(messages)
    assert compact(messages, Compaction(max_tokens=tokens, keep_last=1), "gpt-4o") is None
    assert plan_compaction(messages, Compaction(max_tokens=tokens, keep_last=1), "gpt-4o") is None
    assert compact(messages, Compaction(max_tokens=tokens - 1, keep_last=1), "gpt-4o") is not None


def test_fraction_threshold_is_applied() -> None:
    messages = [SYSTEM, TASK, say("a" * 3_000), say("b" * 3_000), say("c")]
    config = Compaction(context_window=4_000, fraction=0.5, keep_last=1)  # 2,000 tokens
    assert estimate_tokens(messages) > 2_000
    assert compact(messages, config, "gpt-4o") is not None
    assert compact(messages, Compaction(context_window=8_000, keep_last=1), "gpt-4o") is None


def test_disabled_never_compacts() -> None:
    messages = [SYSTEM, TASK, say("a"), say("b"), say("c")]
    assert compact(messages, Compaction(enabled=False, max_tokens=1, keep_last=1), "m") is None


def test_nothing_to_archive() -> None:
    assert compact([SYSTEM, TASK, say("a"), say("b")], LOW, "m") is None  # all kept
    assert compact([SYSTEM, TASK], LOW, "m") is None
    assert compact([], LOW, "m") is None
    # Only an earlier summary between head and tail: re-summarizing it gains nothing.
    messages = [SYSTEM, TASK, summary_message("- x", 4), say("a"), say("b")]
    assert compact(messages, LOW, "m") is None


# -- the split ------------------------------------------------------------------------


def test_head_middle_tail() -> None:
    messages = [
        SYSTEM,
        TASK,
        call("c1", path="a"),
        result("c1"),
        say("thinking"),
        user("also check b"),
        call("c3", path="b"),
        result("c3"),
        say("nearly"),
    ]
    plan = plan_compaction(messages, Compaction(max_tokens=1, keep_last=3), "m")
    assert plan == ([SYSTEM, TASK], messages[2:6], messages[6:])


def test_head_keeps_every_leading_system_message_and_only_the_first_user_message() -> None:
    second_system = Message(role="system", content="Be brief.")
    messages = [SYSTEM, second_system, TASK, user("more"), say("a"), say("b")]
    plan = plan_compaction(messages, Compaction(max_tokens=1, keep_last=1), "m")
    assert plan == ([SYSTEM, second_system, TASK], [user("more"), say("a")], [say("b")])


def test_head_without_a_task_is_the_system_messages() -> None:
    messages = [SYSTEM, say("a"), say("b"), say("c")]
    plan = plan_compaction(messages, Compaction(max_tokens=1, keep_last=1), "m")
    assert plan == ([SYSTEM], [say("a"), say("b")], [say("c")])


def test_tail_never_starts_with_a_tool_result() -> None:
    messages = [SYSTEM, TASK, say("a"), call("c1", path="x"), result("c1"), say("b")]
    plan = plan_compaction(messages, Compaction(max_tokens=1, keep_last=2), "m")
    assert plan is not None
    assert plan[2] == messages[3:]  # moved back from the result onto its call


def test_a_result_with_an_unknown_id_stays_after_the_message_before_it() -> None:
    messages = [SYSTEM, TASK, say("a"), call("c1"), result("renamed-by-a-proxy"), say("b")]
    plan = plan_compaction(messages, Compaction(max_tokens=1, keep_last=2), "m")
    assert plan is not None
    assert plan[2] == messages[3:]


def test_parallel_results_stay_with_their_call() -> None:
    parallel = Message(
        role="assistant",
        tool_calls=(
            ToolCall(id="p1", name="read", arguments={"path": "a"}),
            ToolCall(id="p2", name="read", arguments={"path": "b"}),
            ToolCall(id="p3", name="grep", arguments={"pattern": "x"}),
        ),
    )
    messages = [SYSTEM, TASK, say("plan"), parallel, result("p1"), result("p2"), result("p3")]
    for keep_last in (1, 2, 3):
        plan = plan_compaction(messages, Compaction(max_tokens=1, keep_last=keep_last), "m")
        assert plan is not None
        assert plan[1] == [say("plan")]
        assert plan[2] == messages[3:]


def test_a_result_separated_from_its_call_pulls_the_call_into_the_tail() -> None:
    # A note between a call and its result: the result alone may not stay.
    messages = [SYSTEM, TASK, say("a"), call("c1"), user("note"), result("c1"), say("b")]
    plan = plan_compaction(messages, Compaction(max_tokens=1, keep_last=2), "m")
    assert plan is not None
    assert plan[1] == [say("a")]
    assert plan[2] == messages[3:]


def test_keep_last_zero_archives_everything_after_the_head() -> None:
    messages = [SYSTEM, TASK, call("c1"), result("c1")]
    outcome = compact(messages, Compaction(max_tokens=1, keep_last=0), "m")
    assert outcome is not None
    assert outcome.archived == messages[2:]
    assert outcome.messages[:2] == [SYSTEM, TASK]
    assert len(outcome.messages) == 3


# -- the result and the summary message ------------------------------------------------


def test_compact_builds_head_summary_tail() -> None:
    messages = [SYSTEM, TASK, call("c1", path="a.py"), result("c1", "print(1)"), say("b")]
    outcome = compact(messages, Compaction(max_tokens=1, keep_last=1), "m")
    assert outcome == CompactionResult(
        messages=[
            SYSTEM,
            TASK,
            Message(
                role="user",
                content="Summary of earlier work (2 messages archived):\n"
                '- read({"path": "a.py"}) -> print(1)',
                name=SUMMARY_NAME,
            ),
            say("b"),
        ],
        archived=messages[2:4],
        summary='- read({"path": "a.py"}) -> print(1)',
    )
    assert is_summary(outcome.messages[2])
    assert not any(is_summary(m) for m in messages)


def test_repeated_compaction_archives_the_earlier_summary() -> None:
    config = Compaction(max_tokens=1, keep_last=1)
    first = compact([SYSTEM, TASK, say("step one"), say("step two")], config, "m")
    assert first is not None
    transcript = [*first.messages, call("c1", path="b"), result("c1", "B"), say("step three")]
    second = compact(transcript, config, "m")
    assert second is not None
    assert second.archived[0] == first.messages[2]  # the first summary
    assert second.archived == transcript[2:6]
    assert second.messages[:2] == [SYSTEM, TASK]
    assert second.messages[-1] == say("step three")
    assert [m for m in second.messages if is_summary(m)] == [second.messages[2]]
    assert second.summary == (
        '- assistant: step one\n- assistant: step two\n- read({"path": "b"}) -> B'
    )
    assert second.messages[2].content.startswith("Summary of earlier work (4 messages archived)")


def test_a_summary_is_never_taken_for_the_task() -> None:
    config = Compaction(max_tokens=1, keep_last=1)
    first = compact([SYSTEM, say("a"), say("b"), say("c")], config, "m")  # no task
    assert first is not None
    assert first.messages == [
        SYSTEM,
        summary_message("- assistant: a\n- assistant: b", 2),
        say("c"),
    ]
    second = compact([*first.messages, say("d")], config, "m")
    assert second is not None
    assert second.archived == [first.messages[1], say("c")]
    assert second.summary == "- assistant: a\n- assistant: b\n- assistant: c"


def test_custom_summarizer_gets_the_archived_messages() -> None:
    seen: list[list[Message]] = []

    def summarize(archived: Sequence[Message]) -> str:
        seen.append(list(archived))
        return "They read a.py and found the bug."

    messages = [SYSTEM, TASK, call("c1", path="a.py"), result("c1"), say("b")]
    outcome = compact(messages, Compaction(max_tokens=1, keep_last=1), "m", summarize=summarize)
    assert outcome is not None
    assert seen == [messages[2:4]]
    assert outcome.summary == "They read a.py and found the bug."
    assert outcome.messages[2].content.endswith("\nThey read a.py and found the bug.")


def test_custom_summary_is_held_to_summary_max_chars() -> None:
    config = Compaction(max_tokens=1, keep_last=1, summary_max_chars=60)
    messages = [SYSTEM, TASK, say("a"), say("b")]
    outcome = compact(messages, config, "m", summarize=lambda _: "word " * 100)
    assert outcome is not None
    assert len(outcome.summary) <= 60
    assert "truncated" in outcome.summary


def test_summarizer_must_return_text() -> None:
    with pytest.raises(TypeError, match="summarize must return a str"):
        compact([SYSTEM, TASK, say("a"), say("b"), say("c")], LOW, "m", summarize=lambda _: None)  # type: ignore[arg-type,return-value]


def test_acompact_awaits_the_summarizer() -> None:
    async def summarize(archived: Sequence[Message]) -> str:
        await asyncio.sleep(0)
        return f"{len(archived)} archived"

    messages = [SYSTEM, TASK, say("a"), say("b"), say("c"), say("d")]
    outcome = asyncio.run(acompact(messages, LOW, "m", summarize=summarize))
    assert outcome is not None
    assert outcome.summary == "2 archived"
    assert outcome.messages == [SYSTEM, TASK, summary_message("2 archived", 2), say("c"), say("d")]
    default = asyncio.run(acompact(messages, LOW, "m"))
    assert default == compact(messages, LOW, "m")
    assert asyncio.run(acompact(messages[:3], LOW, "m")) is None


# -- the deterministic summary ----------------------------------------------------------


def test_deterministic_summary_lists_texts_and_calls_with_results() -> None:
    long_result = "line one\n" + "y" * 400
    archived = [
        user("Please also  check\nthe docs."),
        Message(
            role="assistant",
            content="  Reading both files.  ",
            tool_calls=(
                ToolCall(id="c1", name="read", arguments={"path": "a.py"}),
                ToolCall(id="c2", name="search", arguments={"q": "todo", "limit": 3}),
            ),
        ),
        result("c1", long_result),
        result("c2", "3 hits"),
        call("c3", name="write", path="b.py"),
        result("orphan", "a result whose call is not archived"),
        say(""),
    ]
    summary = deterministic_summary(archived, 10_000)
    flat_result = "line one " + "y" * 191 + "…"
    assert summary.splitlines() == [
        "- user: Please also check the docs.",
        "- assistant: Reading both files.",
        f'- read({{"path": "a.py"}}) -> {flat_result}',
        '- search({"limit": 3, "q": "todo"}) -> 3 hits',
        '- write({"path": "b.py"}) -> (no result)',
        "- tool result: a result whose call is not archived",
    ]


def test_deterministic_summary_carries_an_earlier_summary_over() -> None:
    earlier = summary_message("- read({}) -> A\n- assistant: found it", 6)
    assert deterministic_summary([earlier, say("next")], 1_000) == (
        "- read({}) -> A\n- assistant: found it\n- assistant: next"
    )


def test_deterministic_summary_truncation_keeps_the_latest_lines() -> None:
    archived = [say(f"step {i:02d} " + "z" * 40) for i in range(30)]
    full = deterministic_summary(archived, 100_000)
    summary = deterministic_summary(archived, 300)
    assert len(full) > 300
    assert len(summary) <= 300
    assert summary.startswith("[... earlier part of the summary truncated]\n")
    body = summary.splitlines()[1:]
    assert body  # whole lines only, the newest ones
    assert body == full.splitlines()[-len(body) :]
    assert body[-1].startswith("- assistant: step 29")
    assert deterministic_summary(archived, 10) == "[... earli"


def test_long_texts_are_shortened_to_one_line() -> None:
    summary = deterministic_summary([say("w" * 2_000)], 10_000)
    assert summary == "- assistant: " + "w" * 500 + "…"


def test_deterministic_summary_rejects_a_bad_bound() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        deterministic_summary([say("a")], 0)


# -- validation -----------------------------------------------------------------------


def test_defaults() -> None:
    config = Compaction()
    assert (config.enabled, config.max_tokens, config.fraction, config.context_window) == (
        True,
        None,
        0.75,
        None,
    )
    assert (config.keep_last, config.strategy, config.summary_max_chars) == (
        6,
        "deterministic",
        2000,
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"enabled": 1}, TypeError, "enabled"),
        ({"max_tokens": 0}, ValueError, "max_tokens"),
        ({"max_tokens": 10.5}, TypeError, "max_tokens"),
        ({"max_tokens": True}, TypeError, "max_tokens"),
        ({"fraction": 0}, ValueError, "fraction"),
        ({"fraction": 1.5}, ValueError, "fraction"),
        ({"fraction": float("nan")}, ValueError, "fraction"),
        ({"fraction": "0.5"}, TypeError, "fraction"),
        ({"context_window": -1}, ValueError, "context_window"),
        ({"context_window": "big"}, TypeError, "context_window"),
        ({"keep_last": -1}, ValueError, "keep_last"),
        ({"keep_last": 2.0}, TypeError, "keep_last"),
        ({"strategy": "fancy"}, ValueError, "strategy"),
        ({"summary_max_chars": 0}, ValueError, "summary_max_chars"),
        ({"summary_max_chars": None}, TypeError, "summary_max_chars"),
    ],
)
def test_validation_names_the_field(
    kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=f"Compaction: {field}"):
        Compaction(**kwargs)


# -- invariants over arbitrary transcripts ---------------------------------------------

_text = st.text(alphabet="abc xyz\n", max_size=40)


@st.composite
def transcripts(draw: st.DrawFn) -> list[Message]:
    messages = [Message(role="system", content=draw(_text)) for _ in range(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        messages.append(Message(role="user", content="task " + draw(_text)))
        if draw(st.booleans()):
            messages.append(summary_message(draw(_text), draw(st.integers(1, 9))))
    for turn in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["text", "user", "calls"]))
        if kind == "text":
            messages.append(say(draw(_text)))
        elif kind == "user":
            messages.append(user(draw(_text)))
        else:
            ids = [f"t{turn}c{i}" for i in range(draw(st.integers(1, 3)))]
            messages.append(
                Message(
                    role="assistant",
                    content=draw(_text),
                    tool_calls=tuple(
                        ToolCall(id=i, name="tool", arguments={"n": draw(_text)}) for i in ids
                    ),
                )
            )
            if draw(st.integers(0, 4)) == 0:  # something between a call and its results
                messages.append(user("interjection"))
            messages.extend(result(i, draw(_text)) for i in ids)
    return messages


@settings(max_examples=300, deadline=None)
@given(
    messages=transcripts(),
    keep_last=st.integers(0, 8),
    max_tokens=st.integers(1, 150),
    summary_max_chars=st.integers(1, 300),
)
def test_compaction_keeps_head_and_tail_and_never_orphans_a_result(
    messages: list[Message], keep_last: int, max_tokens: int, summary_max_chars: int
) -> None:
    config = Compaction(
        max_tokens=max_tokens, keep_last=keep_last, summary_max_chars=summary_max_chars
    )
    outcome = compact(messages, config, "m")
    if estimate_tokens(messages) <= max_tokens:
        assert outcome is None
    if outcome is None:
        return
    new = outcome.messages
    summaries = [i for i, m in enumerate(new) if is_summary(m)]
    assert len(summaries) == 1
    cut = summaries[0]
    head, tail = new[:cut], new[cut + 1 :]

    # head, archived, tail partition the transcript, in order, verbatim.
    assert [*head, *outcome.archived, *tail] == messages
    assert head == messages[: len(head)]
    assert tail == messages[len(messages) - len(tail) :]
    # head: the system messages and the task, nothing else.
    system_count = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
    assert head[:system_count] == messages[:system_count]
    assert all(m.role == "user" for m in head[system_count:])
    assert len(head) - system_count <= 1
    # tail: at least keep_last messages (as many as there are after the head).
    assert len(tail) >= min(keep_last, len(messages) - len(head))
    # Something new was archived, and the summary fits its bound.
    assert any(not is_summary(m) for m in outcome.archived)
    assert len(outcome.summary) <= summary_max_chars
    assert new[cut].content.endswith(outcome.summary)

    # No tool result in the new transcript without the call that produced it.
    kept_calls = {c.id for m in new if m.role == "assistant" for c in m.tool_calls}
    for m in tail:
        if m.role == "tool":
            assert m.tool_call_id in kept_calls
    assert not tail or tail[0].role != "tool"
