"""A Pydantic AI agent under a steptrace budget, offline.

A ``StepTrace`` capability gives the agent a step with a budget and a
boundary; the agent talks through the official ``openai`` SDK to steptrace's
fake OpenAI server on 127.0.0.1. The first run answers with structured output
that fails validation once (a ``SchemaRetry`` event) and then fits; the second
run calls two tools in parallel and is refused before its follow-up request
(``continue``: the run's output is ``None``, its step ``skipped``). Then the
ledger, the agent events and the cost are printed.

Run it with ``python examples/pydantic_ai_demo.py`` (needs
``pip install 'steptrace[pydantic-ai,prices]'``).
"""

from __future__ import annotations

import pydantic
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import steptrace
from steptrace.integrations.pydantic_ai import StepTrace
from steptrace.llm import ModelPrice, PriceTable
from steptrace.report import ledger_table
from steptrace.testing import FakeOpenAI, OpenAIReply, OpenAIToolCall


class Forecast(pydantic.BaseModel):
    city: str
    celsius: int


def script() -> list[str | OpenAIReply]:
    def answer(arguments: dict[str, object], prompt_tokens: int) -> OpenAIReply:
        call = OpenAIToolCall(name="final_result", arguments=arguments)
        return OpenAIReply(tool_calls=[call], prompt_tokens=prompt_tokens, completion_tokens=20)

    both = [
        OpenAIToolCall(name="get_weather", arguments={"city": "Paris"}),
        OpenAIToolCall(name="get_weather", arguments={"city": "Rome"}),
    ]
    return [
        answer({"city": "Oslo"}, 700),  # no temperature: re-prompted
        answer({"city": "Oslo", "celsius": 4}, 800),
        OpenAIReply(tool_calls=both, prompt_tokens=1500, completion_tokens=40),
        answer({"city": "never sent", "celsius": 0}, 0),
    ]


def main() -> None:
    steptrace.configure(price_source=PriceTable(overrides={"gpt-4o-mini": ModelPrice(0.15, 0.6)}))
    with FakeOpenAI(script()) as fake:
        model = OpenAIChatModel(
            "gpt-4o-mini", provider=OpenAIProvider(openai_client=fake.async_client())
        )
        forecaster = StepTrace(
            step="forecaster", budget={"max_tokens": 1900}, error_boundary="continue"
        )
        agent = Agent(
            model,
            output_type=Forecast,
            instructions="Answer with a forecast.",
            model_settings={"max_tokens": 300},
            capabilities=[forecaster],
        )

        @agent.tool_plain
        def get_weather(city: str) -> str:
            """The weather in a city."""
            return f"sunny, 21 C in {city}"

        with steptrace.run("forecasts") as run:
            print("first run: ", agent.run_sync("Oslo?").output)
            second = agent.run_sync("Paris and Rome?").output
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
    main()
