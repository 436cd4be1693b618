"""What the OpenAI Agents SDK and Pydantic AI integrations add per model request.

Each framework runs one agent whose model is OpenAI's, through the official
SDK over an in-process ``httpx2.MockTransport`` (the SDKs' whole request path
runs; no socket adds noise that would hide microseconds). One run is one model
request and its answer. Rows, CPU microseconds per run (the fastest of
repeats, bare and instrumented alternating so machine drift hits both alike):

- ``Runner.run`` (OpenAI Agents SDK, Chat Completions model), bare vs after
  ``openai_agents.instrument()`` inside a budgeted steptrace run: pre-flight
  hold, request span and agent span, ``LlmCall``, the hold settled, the run's
  hooks and ``LoopComplete``;
- ``Agent.run`` (Pydantic AI, OpenAI chat model), bare vs after
  ``pydantic_ai.instrument()`` inside a budgeted steptrace run.

A whole run costs milliseconds of the frameworks' own CPU and varies by more
than the overhead, so two more rows time the model request alone, where the
integrations do their per-request work, against the same request bare:

- an Agents SDK ``Model.get_response`` that returns a prebuilt response,
  bare vs wrapped by ``instrument()``;
- Pydantic AI: a model request through ``StepTrace.wrap_model_request`` to a
  handler returning a prebuilt response, vs the handler alone.

Added = instrumented minus bare; the target (issue 11) is at most 30 us per
model request. Run: ``.venv/bin/python benchmarks/bench_integrations_agents.py
[--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import openai

import steptrace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import load_average, revision

TARGET_US = 30.0

_COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The answer is forty-two."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
}


class FlatPrices:
    def cost_usd(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float | None:
        return (input_tokens + 4 * output_tokens) / 1_000_000


def client() -> openai.AsyncOpenAI:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=_COMPLETION)

    return openai.AsyncOpenAI(
        api_key="sk-bench",
        base_url="http://bench.invalid/v1",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)),
    )


async def per_run_us(run_once: Callable[[], Awaitable[Any]], runs: int) -> float:
    gc.collect()
    gc.disable()
    try:
        # CPU time of this process: on a shared machine, wall time also counts
        # the time other processes hold the cores.
        started = time.process_time()
        for _ in range(runs):
            await run_once()
        return (time.process_time() - started) / runs * 1e6
    finally:
        gc.enable()


async def compare(
    run_once: Callable[[], Awaitable[Any]],
    instrument: Callable[[], None],
    uninstrument: Callable[[], None],
    runs: int,
    repeats: int,
) -> tuple[float, float]:
    await per_run_us(run_once, max(runs // 10, 5))  # warm up both paths
    bare: list[float] = []
    traced: list[float] = []
    for _ in range(repeats):
        with steptrace.run("bench-bare"):
            bare.append(await per_run_us(run_once, runs))
        instrument()
        try:
            with steptrace.run("bench", budget={"max_usd": 1_000.0}):
                traced.append(await per_run_us(run_once, runs))
        finally:
            uninstrument()
    # The fastest repeat of each: the frameworks' own work (milliseconds a
    # run) varies by more than the overhead measured; the minimum is the
    # least disturbed.
    return min(bare), min(traced)


async def agents_rows(runs: int, repeats: int) -> tuple[float, float] | None:
    try:
        from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled

        from steptrace.integrations import openai_agents
    except ImportError:
        return None
    set_tracing_disabled(True)  # the SDK's exporter would try the network
    agent = Agent(
        name="bench",
        instructions="Answer briefly.",
        model=OpenAIChatCompletionsModel("gpt-4o-mini", openai_client=client()),
    )

    async def run_once() -> Any:
        return await Runner.run(agent, "What is it?")

    return await compare(
        run_once, openai_agents.instrument, openai_agents.uninstrument, runs, repeats
    )


async def pydantic_rows(runs: int, repeats: int) -> tuple[float, float] | None:
    try:
        from pydantic_ai import Agent
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        from steptrace.integrations import pydantic_ai
    except ImportError:
        return None
    model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client()))
    agent = Agent(model, instructions="Answer briefly.")

    async def run_once() -> Any:
        return await agent.run("What is it?")

    return await compare(run_once, pydantic_ai.instrument, pydantic_ai.uninstrument, runs, repeats)


async def agents_request_rows(calls: int, repeats: int) -> tuple[float, float] | None:
    try:
        from agents import ModelResponse, ModelSettings, ModelTracing, Usage
        from agents.models.interface import Model

        from steptrace.integrations import openai_agents
    except ImportError:
        return None
    response = ModelResponse(
        output=[],
        usage=Usage(requests=1, input_tokens=12, output_tokens=7, total_tokens=19),
        response_id="resp-bench",
    )

    class Canned(Model):
        async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
            return response

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    model = Canned()
    model.model = "gpt-4o-mini"  # type: ignore[attr-defined]
    settings = ModelSettings()
    items: list[Any] = [{"role": "user", "content": "What is it?"}]

    async def request() -> Any:
        return await model.get_response(
            "Answer briefly.",
            items,
            settings,
            [],
            None,
            [],
            ModelTracing.DISABLED,
            previous_response_id=None,
            conversation_id=None,
            prompt=None,
        )

    return await compare(
        request, openai_agents.instrument, openai_agents.uninstrument, calls, repeats
    )


async def pydantic_request_rows(calls: int, repeats: int) -> tuple[float, float] | None:
    try:
        from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart
        from pydantic_ai.models import ModelRequestContext, ModelRequestParameters
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider
        from pydantic_ai.usage import RequestUsage

        from steptrace.integrations.pydantic_ai import StepTrace
    except ImportError:
        return None
    response = ModelResponse(
        parts=[TextPart("The answer is forty-two.")],
        usage=RequestUsage(input_tokens=12, output_tokens=7),
        model_name="gpt-4o-mini",
    )
    context = ModelRequestContext(
        model=OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client())),
        messages=[ModelRequest.user_text_prompt("What is it?")],
        model_settings=None,
        model_request_parameters=ModelRequestParameters(),
    )
    capability = StepTrace()

    async def handler(request_context: Any) -> Any:
        return response

    traced = False

    async def request() -> Any:
        if traced:
            return await capability.wrap_model_request(
                None, request_context=context, handler=handler
            )
        return await handler(context)

    def on() -> None:
        nonlocal traced
        traced = True

    def off() -> None:
        nonlocal traced
        traced = False

    return await compare(request, on, off, calls, repeats)


async def baseline_us(calls: int, repeats: int) -> float:
    """``record_llm_usage`` in a budgeted run: the core's cheapest per-call work,
    to read the rows against on a machine slower or busier than usual."""

    async def record() -> None:
        steptrace.record_llm_usage("gpt-4o-mini", 12, 7)

    samples = []
    for _ in range(repeats):
        with steptrace.run("baseline", budget={"max_usd": 1_000.0}):
            samples.append(await per_run_us(record, calls))
    return min(samples)


async def measure(runs: int, repeats: int) -> list[tuple[str, float, float | None]]:
    rows: list[tuple[str, float, float | None]] = [
        ("baseline: record_llm_usage", await baseline_us(runs * 20, repeats), None)
    ]
    for label, measured in (
        ("OpenAI Agents SDK Runner.run", await agents_rows(runs, repeats)),
        ("Pydantic AI Agent.run", await pydantic_rows(runs, repeats)),
        ("Agents SDK model request alone", await agents_request_rows(runs * 20, repeats)),
        ("Pydantic AI model request alone", await pydantic_request_rows(runs * 20, repeats)),
    ):
        if measured is None:
            print(f"{label}: not installed (pip install 'steptrace[openai-agents,pydantic-ai]')")
            continue
        bare, traced = measured
        rows += [(f"{label}, bare", bare, None), (f"{label}, instrumented", traced, traced - bare)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (smoke run)")
    args = parser.parse_args()
    runs, repeats = (50, 3) if args.quick else (100, 15)
    steptrace.configure(price_source=FlatPrices())
    print(f"revision {revision()}, load average {load_average()}")
    print(f"agent framework integrations; {repeats} repeats of {runs} runs, one request a run")
    rows = asyncio.run(measure(runs, repeats))
    print(f"{'row':<48} {'us each':>9} {'added':>9}  target {TARGET_US:g} us")
    for label, value, added in rows:
        verdict = "" if added is None else ("PASS" if added <= TARGET_US else "FAIL")
        shown = "" if added is None else f"{added:9.1f}"
        print(f"{label:<48} {value:9.1f} {shown:>9}  {verdict}")


if __name__ == "__main__":
    main()
