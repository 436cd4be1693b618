"""An OpenAI Agents SDK agent under a steptrace budget, offline.

``openai_agents.instrument()`` puts every model request of ``Runner`` under
the active steptrace budgets; ``openai_agents.step(agent, ...)`` gives the
agent a budget and a boundary without changing how it is run. The agent talks
through the official ``openai`` SDK to steptrace's fake OpenAI server on
127.0.0.1, which answers a scripted conversation: the first run calls two
tools in parallel and answers; the second is refused before its second
request is sent, since the session's budget cannot fit it (``continue``: the
run returns ``None`` and its step is recorded as skipped). Then the ledger, the
agent events and the cost are printed.

Run it with ``python examples/openai_agents_demo.py`` (needs
``pip install 'steptrace[openai-agents,prices]'``).
"""

from __future__ import annotations

import asyncio

from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)

import steptrace
from steptrace.integrations import openai_agents
from steptrace.llm import ModelPrice, PriceTable
from steptrace.report import ledger_table
from steptrace.testing import FakeOpenAI, OpenAIReply, OpenAIToolCall


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny, 21 C in {city}"


def script() -> list[str | OpenAIReply]:
    both = [
        OpenAIToolCall(name="get_weather", arguments={"city": "Paris"}),
        OpenAIToolCall(name="get_weather", arguments={"city": "Rome"}),
    ]
    return [
        OpenAIReply(tool_calls=both, prompt_tokens=900, completion_tokens=40, cached_tokens=300),
        OpenAIReply(text="Sunny in Paris and Rome.", prompt_tokens=1100, completion_tokens=12),
        OpenAIReply(tool_calls=both, prompt_tokens=900, completion_tokens=40),
        OpenAIReply(text="never sent: the budget refuses this request first"),
    ]


async def main() -> None:
    set_tracing_disabled(True)  # no API key here: keep the SDK's exporter quiet
    steptrace.configure(price_source=PriceTable(overrides={"gpt-4o-mini": ModelPrice(0.15, 0.6)}))
    openai_agents.instrument()
    with FakeOpenAI(script()) as fake:
        agent = Agent(
            name="forecaster",
            instructions="Answer in one sentence.",
            tools=[get_weather],
            model=OpenAIChatCompletionsModel(
                model="gpt-4o-mini", openai_client=fake.async_client()
            ),
            model_settings=ModelSettings(max_tokens=300),
        )
        # Each run of the agent is a step with its own budget; the whole
        # session has 3,400 tokens, so the second run's follow-up cannot fit.
        openai_agents.step(agent, budget={"max_tokens": 3000}, error_boundary="continue")
        with steptrace.run("forecasts", budget={"max_tokens": 3400}) as run:
            first = await Runner.run(agent, "Weather in Paris and Rome?")
            print("first run: ", first.final_output)
            second = await Runner.run(agent, "And tomorrow?")
            print("second run:", "None (refused by the budget)" if second is None else second)
        print(f"requests that reached the server: {len(fake.requests)}")
    print()
    print(ledger_table(run))
    print()
    for event in run.events:
        print(event.to_dict())
    summary = run.summary()
    print()
    print(
        f"run `{run.name}` {summary['status']}: {summary['llm_calls']} LLM calls, "
        f"{summary['input_tokens']} in / {summary['output_tokens']} out, ${summary['cost_usd']:.6f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
