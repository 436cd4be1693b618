"""One agent run through the official OpenAI SDK against the fake server, tool
calls included: what the SDK sent each turn, and what the run recorded."""

from __future__ import annotations

import steptrace
from steptrace.agent import agent_loop, tool
from steptrace.llm import OpenAIProvider
from steptrace.testing import FakeOpenAI, OpenAIReply, OpenAIToolCall


@tool(classification="read_only")
def weather(city: str) -> str:
    """Current weather for a city."""
    return {"Paris": "18 C, light rain", "Oslo": "4 C, clear"}.get(city, "unknown")


def test_an_agent_run_over_http_with_parallel_tool_calls() -> None:
    script = [
        OpenAIReply(
            tool_calls=[
                OpenAIToolCall(name="weather", arguments={"city": "Paris"}, id="call_1"),
                OpenAIToolCall(name="weather", arguments={"city": "Oslo"}, id="call_2"),
            ]
        ),
        OpenAIReply(text="Paris is wetter; Oslo is colder."),
    ]
    with FakeOpenAI(script) as fake, fake.client() as client:
        provider = OpenAIProvider(client=client)
        with steptrace.run("weather") as run:
            result = agent_loop(
                "Compare the weather in Paris and Oslo.",
                tools=[weather],
                model="gpt-4o-mini",
                provider=provider,
            )
        sent = fake.requests
    assert result.status == "done"
    assert result.text == "Paris is wetter; Oslo is colder."
    assert [t["function"]["name"] for t in sent[0]["tools"]] == ["weather"]
    second = sent[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in second[1]["tool_calls"]] == ["call_1", "call_2"]
    assert [(m["tool_call_id"], m["content"]) for m in second[2:]] == [
        ("call_1", "18 C, light rain"),
        ("call_2", "4 C, clear"),
    ]
    assert [type(e).__name__ for e in result.events] == [
        "LlmCall",
        "ToolExecution",
        "ToolExecution",
        "LlmCall",
        "LoopComplete",
    ]
    assert result.summary["llm_calls"] == 2
    assert result.summary["tools_used"] == ["weather"]
    assert run.usage().input_tokens == result.usage.input_tokens > 0
    assert result.summary["total_input_tokens"] == result.usage.input_tokens
