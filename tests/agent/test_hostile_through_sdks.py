"""The agent loop's hostile-output cases through the official SDKs and the fake
servers: arguments that are not a JSON object (case 8), hostile names (10),
duplicate ids (12) and why the model stopped (12), for the OpenAI and the
Anthropic provider alike; and hypothesis-made tool calls that
never break the loop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steptrace import ToolExecution, ToolRejected
from steptrace.agent import AgentResult, agent_loop, tool
from steptrace.llm.anthropic.provider import AnthropicProvider
from steptrace.llm.openai.provider import OpenAIProvider
from steptrace.testing import FakeServer, HttpReply
from steptrace.testing._fake_anthropic import AnthropicReply, AnthropicToolUse, FakeAnthropic
from steptrace.testing._fake_openai import FakeOpenAI, OpenAIReply, OpenAIToolCall

KEY = "sk-test-loop-0123456789abcdef"
runs: list[dict[str, Any]] = []


@tool
def search(query: str = "everything", limit: int = 10) -> str:
    """Search (every argument has a default)."""
    runs.append({"query": query, "limit": limit})
    return f"found {limit} results for {query}"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer() as running:
        yield running


@pytest.fixture
def openai_fake(server: FakeServer) -> Iterator[FakeOpenAI]:
    runs.clear()
    with FakeOpenAI(server=server) as fake:
        yield fake


@pytest.fixture
def anthropic_fake(server: FakeServer) -> Iterator[FakeAnthropic]:
    runs.clear()
    with FakeAnthropic(server=server) as fake:
        yield fake


def run_openai(fake: FakeOpenAI) -> AgentResult:
    provider = OpenAIProvider(api_key=KEY, base_url=fake.base_url)
    try:
        return agent_loop(
            "Find things.",
            model="gpt-4o-mini",
            provider=provider,
            tools=[search],
            max_iterations=4,
        )
    finally:
        provider.close()


def run_anthropic(fake: FakeAnthropic) -> AgentResult:
    provider = AnthropicProvider(api_key=KEY, base_url=fake.url)
    try:
        return agent_loop(
            "Find things.",
            model="claude-haiku-4-5",
            provider=provider,
            tools=[search],
            max_iterations=4,
        )
    finally:
        provider.close()


def of(result: AgentResult, kind: type[Any]) -> list[Any]:
    return [e for e in result.events if isinstance(e, kind)]


@pytest.mark.parametrize(
    ("raw", "said"),
    [('{"query": "cats"', "not valid JSON"), ("[1, 2]", "got an array")],
    ids=["truncated", "array"],
)
def test_openai_arguments_that_are_not_an_object_are_refused_and_told(
    openai_fake: FakeOpenAI, raw: str, said: str
) -> None:
    openai_fake.push(OpenAIReply(tool_calls=[OpenAIToolCall(name="search", arguments=raw)]), "ok")
    result = run_openai(openai_fake)
    assert runs == []
    (rejected,) = of(result, ToolRejected)
    assert said in rejected.reason
    # The model was told, in the tool message of the next request.
    tool_message = openai_fake.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool"
    assert said in tool_message["content"]


def test_anthropic_tool_input_that_is_not_an_object_is_refused_and_told(
    anthropic_fake: FakeAnthropic,
) -> None:
    # The Messages API promises an object as a tool's input; a broken server
    # sends an array.
    message = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "search", "input": [1, 2]}],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    anthropic_fake.push(HttpReply(body=message), "ok")
    result = run_anthropic(anthropic_fake)
    assert runs == []
    (rejected,) = of(result, ToolRejected)
    assert "got an array" in rejected.reason
    last = anthropic_fake.requests[1]["messages"][-1]["content"][-1]
    assert last["type"] == "tool_result"
    assert "got an array" in last["content"]


def test_duplicate_ids_through_openai_run_once_and_the_next_request_is_valid(
    openai_fake: FakeOpenAI,
) -> None:
    twice = [
        OpenAIToolCall(id="call_1", name="search", arguments={"query": "a"}),
        OpenAIToolCall(id="call_1", name="search", arguments={"query": "a"}),
    ]
    openai_fake.push(OpenAIReply(tool_calls=twice), "ok")
    result = run_openai(openai_fake)
    assert len(runs) == 1
    assert result.status == "done"
    messages = openai_fake.requests[1]["messages"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["call_1"]
    assert [m.get("tool_call_id") for m in messages if m["role"] == "tool"] == ["call_1"]


def test_a_hostile_name_through_anthropic_is_escaped_in_what_is_sent_back(
    anthropic_fake: FakeAnthropic,
) -> None:
    name = "\x1b]0;owned\x07search\u202e" + "x" * 10_000
    anthropic_fake.push(AnthropicReply(tool_uses=[AnthropicToolUse(name=name)]), "ok")
    result = run_anthropic(anthropic_fake)
    (rejected,) = of(result, ToolRejected)
    assert rejected.tool_name.isprintable()
    sent = json.dumps(anthropic_fake.requests[1], ensure_ascii=False)
    assert "\x1b" not in sent
    assert "\u202e" not in sent
    assert len(sent) < 5000


@pytest.mark.parametrize(
    ("reply", "status", "stop"),
    [
        (OpenAIReply(text="The answer is", finish_reason="length"), "truncated", "length"),
        (OpenAIReply(refusal="I can't help with that."), "refused", "refusal"),
        (OpenAIReply(text="", finish_reason="content_filter"), "refused", "content_filter"),
    ],
    ids=["length", "refusal", "filter"],
)
def test_openai_truncated_or_refused_answers_do_not_end_done(
    openai_fake: FakeOpenAI, reply: OpenAIReply, status: str, stop: str
) -> None:
    openai_fake.push(reply)
    result = run_openai(openai_fake)
    assert (result.status, result.stop_reason) == (status, stop)


@pytest.mark.parametrize(
    ("stop_reason", "status", "stop"),
    [("max_tokens", "truncated", "length"), ("refusal", "refused", "refusal")],
)
def test_anthropic_truncated_or_refused_answers_do_not_end_done(
    anthropic_fake: FakeAnthropic, stop_reason: str, status: str, stop: str
) -> None:
    anthropic_fake.push(AnthropicReply(text="The answer", stop_reason=stop_reason))
    result = run_anthropic(anthropic_fake)
    assert (result.status, result.stop_reason) == (status, stop)


NAMES = st.one_of(st.sampled_from(["search", "next_phase", ""]), st.text(max_size=80))
ARGUMENTS = st.one_of(
    st.text(max_size=80),
    st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=3).map(
        json.dumps
    ),
    st.integers(min_value=1, max_value=5000).map(lambda n: "{" * n),
)
CALLS = st.lists(
    st.tuples(st.sampled_from(["c1", "c2", "c3"]), NAMES, ARGUMENTS), min_size=1, max_size=4
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(calls=CALLS)
def test_any_tool_calls_a_server_sends_leave_the_loop_standing(
    openai_fake: FakeOpenAI, calls: list[tuple[str, str, str]]
) -> None:
    openai_fake.routes._queue.clear()
    openai_fake.push(
        OpenAIReply(tool_calls=[OpenAIToolCall(id=i, name=n, arguments=a) for i, n, a in calls]),
        "done",
    )
    result = run_openai(openai_fake)
    assert result.status == "done"
    ids = [m.tool_call_id for m in result.transcript if m.role == "tool"]
    assert len(ids) == len(set(ids))
    for event in of(result, ToolRejected):
        assert event.tool_name.isprintable()
        assert event.reason.isprintable()
    assert len(of(result, ToolExecution)) <= len({i for i, _, _ in calls})
