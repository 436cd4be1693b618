"""steptrace.integrations.pydantic_ai against real Pydantic AI agents whose
OpenAI model talks HTTP through the official ``openai`` SDK to the fake OpenAI
server on 127.0.0.1. Asserted at the server: a refused request never arrives;
totals are the server's usage exactly; events come in order with the model's
tool-call ids and output retries as SchemaRetry; each error boundary; run,
run_sync, run_stream and iter; UsageLimits still work beside budgets; and
with instrument() but no budget the agent sends what it sent before."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("pydantic_ai", reason="needs the extra: pip install 'steptrace[pydantic-ai]'")

from pydantic_ai import Agent
from pydantic_ai.exceptions import UsageLimitExceeded
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.usage import RequestUsage, UsageLimits

import steptrace
from steptrace import BudgetExhausted
from steptrace.integrations import pydantic_ai as st_pydantic
from steptrace.integrations.pydantic_ai import StepTrace
from steptrace.llm import ModelPrice, PriceTable
from steptrace.testing import FakeOpenAI, FakeServer, OpenAIReply, OpenAIToolCall

from .._usage import hostile_openai_usage

PRICES = PriceTable(overrides={"gpt-4o-mini": ModelPrice(0.15, 0.60, cache_read_per_mtok=0.075)})
MODES = ["run_sync", "run", "run_stream", "iter"]


class City(pydantic.BaseModel):
    name: str
    population: int


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer() as running:
        yield running


@pytest.fixture
def instrumented() -> Iterator[None]:
    steptrace.configure(price_source=PRICES)
    st_pydantic.instrument()
    yield
    st_pydantic.uninstrument()


def model(fake: FakeOpenAI) -> OpenAIChatModel:
    # No kept-alive connections: each run may end its event loop.
    client = fake.async_client(
        http_client=httpx2.AsyncClient(limits=httpx2.Limits(max_keepalive_connections=0))
    )
    return OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client))


def weather_agent(fake: FakeOpenAI, *capabilities: StepTrace) -> Agent[None, str]:
    agent: Agent[None, str] = Agent(
        model(fake), instructions="Answer briefly.", capabilities=list(capabilities)
    )

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    return agent


def two_tools_then_answer() -> list[str | OpenAIReply]:
    return [
        OpenAIReply(
            tool_calls=[
                OpenAIToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_paris"),
                OpenAIToolCall(name="get_weather", arguments={"city": "Rome"}, id="call_rome"),
            ],
            prompt_tokens=1000,
            completion_tokens=50,
            cached_tokens=400,
            reasoning_tokens=20,
        ),
        OpenAIReply(text="Sunny in both.", prompt_tokens=1200, completion_tokens=10),
    ]


def expected_cost() -> float:
    first = (600 * 0.15 + 400 * 0.075 + 50 * 0.60) / 1e6
    second = (1200 * 0.15 + 10 * 0.60) / 1e6
    return first + second


def run_mode(mode: str, agent: Agent[Any, Any], prompt: str, **kwargs: Any) -> Any:
    """The run's output through one of Pydantic AI's four ways to run."""
    if mode == "run_sync":
        return agent.run_sync(prompt, **kwargs).output

    async def run() -> Any:
        if mode == "run":
            return (await agent.run(prompt, **kwargs)).output
        if mode == "run_stream":
            async with agent.run_stream(prompt, **kwargs) as streamed:
                return await streamed.get_output()
        async with agent.iter(prompt, **kwargs) as agent_run:
            async for _ in agent_run:
                pass
        assert agent_run.result is not None
        return agent_run.result.output

    return asyncio.run(run())


def event_shape(run: steptrace.Run) -> list[tuple[Any, ...]]:
    shape: list[tuple[Any, ...]] = []
    for event in run.events:
        data = event.to_dict()
        if data["type"] == "llm_call":
            shape.append(("llm_call", data["input_tokens"], data["cache_tokens"]))
        elif data["type"] == "tool_execution":
            shape.append(("tool", data["tool_name"], data["tool_use_id"], data["status"]))
        elif data["type"] == "loop_complete":
            shape.append(("complete", data["status"], data["iterations"], data["tools_used"]))
        elif data["type"] == "schema_retry":
            shape.append(("schema_retry", data["attempt"], data["errors"]))
        else:
            shape.append((data["type"],))
    return in_call_order(shape)


def in_call_order(shape: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Parallel tools finish in any order: sort each run of tool events."""
    out: list[tuple[Any, ...]] = []
    batch: list[tuple[Any, ...]] = []
    for item in [*shape, ("end",)]:
        if item[0] == "tool":
            batch.append(item)
            continue
        out.extend(sorted(batch))
        batch = []
        out.append(item)
    return out[:-1]


EXPECTED_EVENTS = [
    ("llm_call", 1000, 400),
    ("tool", "get_weather", "call_paris", "ok"),
    ("tool", "get_weather", "call_rome", "ok"),
    ("llm_call", 1200, 0),
    ("complete", "done", 2, ["get_weather"]),
]


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("mode", MODES)
def test_totals_and_events_match_what_the_server_sent(server: FakeServer, mode: str) -> None:
    with (
        FakeOpenAI(two_tools_then_answer(), server=server) as fake,
        steptrace.run("weather", budget={"max_usd": 1.0}) as run,
    ):
        output = run_mode(mode, weather_agent(fake), "Paris and Rome?")
    assert output == "Sunny in both."
    assert len(fake.requests) == 2
    summary = run.summary()
    assert (summary["input_tokens"], summary["output_tokens"]) == (2200, 60)
    assert summary["cost_usd"] == pytest.approx(expected_cost(), abs=1e-12)
    assert event_shape(run) == EXPECTED_EVENTS
    chat = [span for span in run.spans if span.name == "chat gpt-4o-mini"]
    assert chat[0].metadata["steptrace.reasoning_tokens"] == 20
    tools = [span for span in run.spans if span.name == "execute_tool get_weather"]
    assert sorted(span.metadata["gen_ai.tool.call.id"] for span in tools) == [
        "call_paris",
        "call_rome",
    ]


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("mode", MODES)
def test_a_request_that_cannot_fit_never_reaches_the_server(server: FakeServer, mode: str) -> None:
    with (
        FakeOpenAI(two_tools_then_answer(), server=server) as fake,
        steptrace.run("weather", budget={"max_tokens": 1000}) as run,
        pytest.raises(BudgetExhausted) as raised,
    ):
        run_mode(mode, weather_agent(fake), "Paris and Rome?")
    assert fake.requests == []
    assert raised.value.preflight
    assert event_shape(run) == [("complete", "budget_exhausted", 0, [])]


@pytest.mark.parametrize("mode", MODES)
def test_continue_ends_the_run_with_output_none(server: FakeServer, mode: str) -> None:
    steptrace.configure(price_source=PRICES)
    scope = StepTrace(step="forecast", budget={"max_tokens": 5000}, error_boundary="continue")
    with (
        FakeOpenAI(two_tools_then_answer(), server=server) as fake,
        steptrace.run("weather") as run,
    ):
        output = run_mode(mode, weather_agent(fake, scope), "Paris and Rome?")
    assert output is None
    assert len(fake.requests) == 1  # the second request's worst case did not fit
    (row,) = run.completed_steps
    assert (row.name, row.status, row.input_tokens, row.output_tokens) == (
        "forecast",
        "skipped",
        1000,
        50,
    )
    assert event_shape(run)[-1][:2] == ("complete", "budget_exhausted")


@pytest.mark.parametrize(("boundary", "status"), [("fail", "failed"), ("escalate", "escalated")])
def test_fail_and_escalate_raise_from_the_run(
    server: FakeServer, boundary: str, status: str
) -> None:
    scope = StepTrace(step="forecast", budget={"max_tokens": 5000}, error_boundary=boundary)
    with (
        FakeOpenAI(two_tools_then_answer(), server=server) as fake,
        steptrace.run("weather") as run,
        pytest.raises(BudgetExhausted) as raised,
    ):
        weather_agent(fake, scope).run_sync("Paris and Rome?")
    assert len(fake.requests) == 1
    assert raised.value.escalated is (boundary == "escalate")
    assert [row.status for row in run.completed_steps] == [status]


@pytest.mark.usefixtures("instrumented")
def test_an_agent_scope_and_instrument_count_each_request_once(server: FakeServer) -> None:
    scope = StepTrace(persona="forecaster", budget={"max_usd": 1})
    with (
        FakeOpenAI(two_tools_then_answer(), server=server) as fake,
        steptrace.run("weather") as run,
    ):
        weather_agent(fake, scope).run_sync("Paris and Rome?")
    assert event_shape(run) == EXPECTED_EVENTS
    (persona,) = [span for span in run.spans if span.kind is steptrace.SpanKind.PERSONA]
    assert (persona.name, persona.metadata["llm_calls"]) == ("forecaster", 2)


@pytest.mark.usefixtures("instrumented")
def test_output_that_fails_validation_is_a_schema_retry(server: FakeServer) -> None:
    script: list[str | OpenAIReply] = [
        OpenAIReply(tool_calls=[OpenAIToolCall(name="final_result", arguments={"name": "Oslo"})]),
        OpenAIReply(
            tool_calls=[
                OpenAIToolCall(
                    name="final_result", arguments={"name": "Oslo", "population": 700000}
                )
            ]
        ),
    ]
    with FakeOpenAI(script, server=server) as fake, steptrace.run("cities") as run:
        agent: Agent[None, City] = Agent(model(fake), output_type=City)
        city = agent.run_sync("The capital of Norway?").output
    assert city == City(name="Oslo", population=700000)
    assert [shape[0] for shape in event_shape(run)] == [
        "llm_call",
        "schema_retry",
        "llm_call",
        "complete",
    ]
    assert event_shape(run)[1] == ("schema_retry", 1, ["population: Field required"])


@pytest.mark.usefixtures("instrumented")
def test_usage_limits_keep_working_beside_budgets(server: FakeServer) -> None:
    with (
        FakeOpenAI(two_tools_then_answer(), server=server) as fake,
        steptrace.run("weather", budget={"max_usd": 1.0}) as run,
        pytest.raises(UsageLimitExceeded),
    ):
        weather_agent(fake).run_sync("Paris and Rome?", usage_limits=UsageLimits(request_limit=1))
    assert len(fake.requests) == 1
    assert event_shape(run)[0] == ("llm_call", 1000, 400)
    assert event_shape(run)[-1][:2] == ("complete", "error")
    # And a steptrace refusal still comes first when the budget is the tighter limit.
    with (
        FakeOpenAI(two_tools_then_answer(), server=server) as fake,
        steptrace.run("weather", budget={"max_tokens": 100}),
        pytest.raises(BudgetExhausted),
    ):
        weather_agent(fake).run_sync("Paris?", usage_limits=UsageLimits(request_limit=5))
    assert fake.requests == []


def test_instrumented_without_a_budget_sends_exactly_what_it_sent_before(
    server: FakeServer,
) -> None:
    def once() -> tuple[Any, list[str]]:
        with FakeOpenAI(two_tools_then_answer(), server=server) as fake:
            output = weather_agent(fake).run_sync("Paris and Rome?").output
        return output, [json.dumps(body, sort_keys=True) for body in fake.requests]

    before = once()
    st_pydantic.instrument()
    try:
        after = once()
    finally:
        st_pydantic.uninstrument()
    assert after == before


def test_instrument_is_idempotent_and_uninstrument_restores_pydantic_ai(
    server: FakeServer,
) -> None:
    original = Agent.iter
    st_pydantic.instrument()
    st_pydantic.instrument()
    assert st_pydantic.is_instrumented()
    assert Agent.iter is not original
    st_pydantic.uninstrument()
    st_pydantic.uninstrument()
    assert not st_pydantic.is_instrumented()
    assert Agent.iter is original
    with FakeOpenAI(["hi"], server=server) as fake, steptrace.run("plain") as run:
        weather_agent(fake).run_sync("hi")
    assert run.events == []


def test_a_scope_needs_a_name_and_one_kind() -> None:
    with pytest.raises(ValueError, match="step` or `persona"):
        StepTrace(step="a", persona="b")
    with pytest.raises(ValueError, match="needs a `step`"):
        StepTrace(budget={"max_usd": 1})
    with pytest.raises(ValueError, match="max_tokens"):
        StepTrace(step="a", budget={"max_tokens": -5})


def test_the_demo_runs_offline_and_its_second_run_is_refused() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "pydantic_ai_demo.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "second run: None (refused by the budget)" in done.stdout
    assert "requests that reached the server: 3" in done.stdout
    assert "'type': 'schema_retry'" in done.stdout


def test_anthropic_cache_reads_and_writes_are_recorded_and_priced(server: FakeServer) -> None:
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    from steptrace.testing import AnthropicReply, FakeAnthropic

    steptrace.configure(
        price_source=PriceTable(
            overrides={
                "claude-haiku-4-5": ModelPrice(
                    1.0, 5.0, cache_read_per_mtok=0.1, cache_write_per_mtok=1.25
                )
            }
        )
    )
    reply = AnthropicReply(
        text="Hi.", input_tokens=100, output_tokens=10, cache_read_tokens=300, cache_write_tokens=50
    )
    with FakeAnthropic([reply], server=server) as fake, steptrace.run("cached") as run:
        client = fake.async_client(
            http_client=httpx2.AsyncClient(limits=httpx2.Limits(max_keepalive_connections=0))
        )
        model = AnthropicModel(
            "claude-haiku-4-5", provider=AnthropicProvider(anthropic_client=client)
        )
        output = Agent(model, capabilities=[StepTrace()]).run_sync("Hello?").output
    assert output == "Hi."
    assert len(fake.requests) == 1
    (call,) = [event for event in run.events if event.type == "llm_call"]
    assert (call.input_tokens, call.cache_tokens, call.output_tokens) == (450, 300, 10)
    chat = next(span for span in run.spans if span.name == "chat claude-haiku-4-5")
    assert chat.metadata["steptrace.cache_write_tokens"] == 50
    expected = (100 * 1.0 + 300 * 0.1 + 50 * 1.25 + 10 * 5.0) / 1e6
    assert run.summary()["cost_usd"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.usefixtures("instrumented")
def test_pydantic_ai_instrumentation_keeps_working_beside_budgets(server: FakeServer) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from pydantic_ai.models.instrumented import InstrumentationSettings

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with (
        FakeOpenAI(two_tools_then_answer(), server=server) as fake,
        steptrace.run("weather", budget={"max_usd": 1.0}) as run,
    ):
        agent = weather_agent(fake)
        agent.instrument = InstrumentationSettings(tracer_provider=provider)
        assert agent.run_sync("Paris and Rome?").output == "Sunny in both."
    assert event_shape(run) == EXPECTED_EVENTS
    names = [span.name for span in exporter.get_finished_spans()]
    assert names.count("chat gpt-4o-mini") == 2  # Pydantic AI's own GenAI spans
    assert any(name.startswith("running tool") or "get_weather" in name for name in names)
    provider.shutdown()


def _anthropic_agent(fake: Any) -> Agent[None, str]:
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    client = fake.async_client(
        http_client=httpx2.AsyncClient(limits=httpx2.Limits(max_keepalive_connections=0))
    )
    model = AnthropicModel("claude-haiku-4-5", provider=AnthropicProvider(anthropic_client=client))
    return Agent(model)


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("mode", MODES)
def test_anthropic_thinking_tokens_are_the_spans_reasoning_tokens(
    server: FakeServer, mode: str
) -> None:
    from steptrace.testing import AnthropicReply, FakeAnthropic

    steptrace.configure(
        price_source=PriceTable(overrides={"claude-haiku-4-5": ModelPrice(1.0, 5.0)})
    )
    usage = {
        "input_tokens": 100,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 300,
        "output_tokens_details": {"thinking_tokens": 120},
    }
    reply = AnthropicReply(text="Hi.", usage=usage)
    with FakeAnthropic([reply], server=server) as fake, steptrace.run("thinking") as run:
        assert run_mode(mode, _anthropic_agent(fake), "Hello?") == "Hi."
    chat = next(span for span in run.spans if span.name == "chat claude-haiku-4-5")
    assert chat.metadata["steptrace.reasoning_tokens"] == 120
    summary = run.summary()
    assert (summary["input_tokens"], summary["output_tokens"]) == (100, 300)
    assert summary["cost_usd"] == pytest.approx((100 * 1.0 + 300 * 5.0) / 1e6, abs=1e-12)


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("mode", ["run_sync", "run_stream"])
def test_reasoning_tokens_from_a_hostile_server_are_capped_at_the_output(
    server: FakeServer, mode: str
) -> None:
    reply = OpenAIReply(text="Hi.", usage=hostile_openai_usage(500))
    with FakeOpenAI([reply], server=server) as fake, steptrace.run("hostile") as run:
        assert run_mode(mode, Agent(model(fake)), "Hello?") == "Hi."
    chat = next(span for span in run.spans if span.name == "chat gpt-4o-mini")
    assert chat.metadata["steptrace.reasoning_tokens"] == 40
    summary = run.summary()
    assert (summary["input_tokens"], summary["output_tokens"]) == (100, 40)
    assert summary["cost_usd"] == pytest.approx((100 * 0.15 + 40 * 0.60) / 1e6, abs=1e-12)


# Pydantic AI's own usage extraction (genai-prices) refuses a negative count,
# warns, and reports no usage at all: steptrace then records its estimate.
@pytest.mark.filterwarnings("ignore:Failed to extract usage with `genai-prices`")
@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("mode", ["run_sync", "run_stream"])
def test_a_negative_reasoning_count_is_recorded_as_an_estimate(
    server: FakeServer, mode: str
) -> None:
    reply = OpenAIReply(text="Hi.", usage=hostile_openai_usage(-5))
    with FakeOpenAI([reply], server=server) as fake, steptrace.run("hostile") as run:
        assert run_mode(mode, Agent(model(fake)), "Hello?") == "Hi."
    chat = next(span for span in run.spans if span.name == "chat gpt-4o-mini")
    assert chat.metadata["steptrace.reasoning_tokens"] == 0
    assert chat.metadata["steptrace.usage_estimated"] is True
    assert run.summary()["llm_calls"] == 1


_ANY_INT = st.integers(min_value=-(10**13), max_value=10**13)


@given(
    input_tokens=st.integers(min_value=0, max_value=10**13),
    output_tokens=st.integers(min_value=0, max_value=10**13),
    cached=_ANY_INT,
    written=_ANY_INT,
    reasoning=_ANY_INT,
    details=st.dictionaries(st.sampled_from(["reasoning_tokens", "thinking_tokens"]), _ANY_INT),
)
def test_any_request_usage_reads_as_counts_with_its_parts_within_their_whole(
    input_tokens: int,
    output_tokens: int,
    cached: int,
    written: int,
    reasoning: int,
    details: dict[str, int],
) -> None:
    usage = RequestUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cached,
        cache_write_tokens=written,
        output_reasoning_tokens=reasoning,
        details=details,
    )
    counts = st_pydantic._usage(usage)
    if counts is None:
        return
    assert 0 <= counts.reasoning_tokens <= counts.output_tokens
    assert 0 <= counts.cache_read_tokens + counts.cache_write_tokens <= counts.input_tokens
