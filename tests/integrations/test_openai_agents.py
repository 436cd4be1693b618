"""steptrace.integrations.openai_agents against the real OpenAI Agents SDK, whose
OpenAI Chat Completions model talks HTTP through the official ``openai`` SDK to
the fake OpenAI server on 127.0.0.1. What reached the server is asserted there:
a refused request never arrives; totals are the server's usage to the token and
the picodollar; events come in order with the model's tool-call ids; each error
boundary; run, run_sync and run_streamed; and with instrument() but no budget
the SDK sends exactly what it sends uninstrumented."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

pytest.importorskip("agents", reason="needs the extra: pip install 'steptrace[openai-agents]'")

from agents import (
    Agent,
    GuardrailFunctionOutput,
    InputGuardrailTripwireTriggered,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    ToolGuardrailFunctionOutput,
    TracingProcessor,
    function_tool,
    input_guardrail,
    set_trace_processors,
    tool_input_guardrail,
)
from agents.models.interface import Model
from agents.usage import Usage
from hypothesis import given
from hypothesis import strategies as st
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

import steptrace
from steptrace import BudgetExhausted
from steptrace.integrations import openai_agents
from steptrace.integrations._agents_common import price_name
from steptrace.integrations._agents_models import _usage as _agents_usage
from steptrace.llm import ModelPrice, PriceTable
from steptrace.testing import (
    FAKE_OPENAI_API_KEY,
    FakeOpenAI,
    FakeServer,
    HttpReply,
    OpenAIReply,
    OpenAIToolCall,
    RecordedRequest,
)

from .._usage import hostile_openai_usage

# Runner.run_sync ends each run with loop.shutdown_asyncgens() on the loop it
# keeps for the thread; the next run_sync on that loop then makes the HTTP
# client's auth generator warn. That is the SDK's own behaviour, with or
# without steptrace.
pytestmark = pytest.mark.filterwarnings(
    "ignore:asynchronous generator .* was scheduled after loop.shutdown_asyncgens:ResourceWarning"
)

PRICES = PriceTable(overrides={"gpt-4o-mini": ModelPrice(0.15, 0.60, cache_read_per_mtok=0.075)})
OFF = RunConfig(tracing_disabled=True)


class Collected(TracingProcessor):
    """The SDK's own tracing, kept in memory (nothing is exported)."""

    def __init__(self) -> None:
        self.spans: list[str] = []

    def on_trace_start(self, trace: Any) -> None: ...
    def on_trace_end(self, trace: Any) -> None: ...
    def on_span_start(self, span: Any) -> None: ...

    def on_span_end(self, span: Any) -> None:
        self.spans.append(span.span_data.type)

    def shutdown(self) -> None: ...
    def force_flush(self) -> None: ...


@pytest.fixture(scope="module")
def sdk_traces() -> Collected:
    collected = Collected()
    set_trace_processors([collected])  # no exporter: the SDK's tracing stays local
    return collected


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer() as running:
        yield running


@pytest.fixture
def instrumented(sdk_traces: Collected) -> Iterator[None]:
    steptrace.configure(price_source=PRICES)
    openai_agents.instrument()
    yield
    openai_agents.uninstrument()


def client(fake: FakeOpenAI) -> Any:
    # No kept-alive connections: each asyncio.run closes its loop, and a
    # pooled socket would outlive it.
    return fake.async_client(
        http_client=httpx2.AsyncClient(limits=httpx2.Limits(max_keepalive_connections=0))
    )


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def weather_agent(fake: FakeOpenAI, name: str = "weather") -> Agent[Any]:
    return Agent(
        name=name,
        instructions="Answer briefly.",
        tools=[get_weather],
        model=OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client(fake)),
        # The SDK asks for stream usage by itself only from api.openai.com.
        model_settings=ModelSettings(include_usage=True),
    )


def two_tools_then_answer() -> list[Any]:
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


def event_shape(run: steptrace.Run) -> list[tuple[Any, ...]]:
    shape: list[tuple[Any, ...]] = []
    for event in run.events:
        data = event.to_dict()
        if data["type"] == "llm_call":
            shape.append(
                ("llm_call", data["input_tokens"], data["cache_tokens"], data["iteration"])
            )
        elif data["type"] == "tool_execution":
            shape.append(("tool", data["tool_name"], data["tool_use_id"], data["status"]))
        elif data["type"] == "loop_complete":
            shape.append(("complete", data["status"], data["iterations"], data["tools_used"]))
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
    ("llm_call", 1000, 400, 1),
    ("tool", "get_weather", "call_paris", "ok"),
    ("tool", "get_weather", "call_rome", "ok"),
    ("llm_call", 1200, 0, 2),
    ("complete", "done", 2, ["get_weather"]),
]


def run_mode(mode: str, agent: Agent[Any], prompt: str, **kwargs: Any) -> Any:
    """One run through ``Runner.run_sync``, ``Runner.run`` or ``Runner.run_streamed``."""
    if mode == "sync":
        return Runner.run_sync(agent, prompt, **kwargs)
    if mode == "async":
        return asyncio.run(Runner.run(agent, prompt, **kwargs))

    async def streamed() -> Any:
        result = Runner.run_streamed(agent, prompt, **kwargs)
        async for _ in result.stream_events():
            pass
        return result

    return asyncio.run(streamed())


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("mode", ["sync", "async", "streamed"])
def test_totals_and_events_match_what_the_server_sent(server: FakeServer, mode: str) -> None:
    with (
        FakeOpenAI(two_tools_then_answer(), server=server) as fake,
        steptrace.run("weather", budget={"max_usd": 1.0}) as run,
    ):
        result = run_mode(mode, weather_agent(fake), "Paris and Rome?", run_config=OFF)
    assert result.final_output == "Sunny in both."
    assert len(fake.requests) == 2
    summary = run.summary()
    assert (summary["input_tokens"], summary["output_tokens"]) == (2200, 60)
    assert summary["cost_usd"] == pytest.approx(expected_cost(), abs=1e-12)
    assert event_shape(run) == EXPECTED_EVENTS
    spans = {span.name: span for span in run.spans}
    assert spans["invoke_agent weather"].parent_id == run.root.span_id
    chat = [span for span in run.spans if span.name == "chat gpt-4o-mini"]
    assert [span.parent_id for span in chat] == [spans["invoke_agent weather"].span_id] * 2
    assert chat[0].metadata["steptrace.reasoning_tokens"] == 20
    tools = [span for span in run.spans if span.name == "execute_tool get_weather"]
    assert sorted(span.metadata["gen_ai.tool.call.id"] for span in tools) == [
        "call_paris",
        "call_rome",
    ]


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("mode", ["sync", "async", "streamed"])
def test_a_request_that_cannot_fit_never_reaches_the_server(server: FakeServer, mode: str) -> None:
    with (
        FakeOpenAI(two_tools_then_answer(), server=server) as fake,
        steptrace.run("weather", budget={"max_tokens": 1000}) as run,  # < 4096 worst case
        pytest.raises(BudgetExhausted) as raised,
    ):
        run_mode(mode, weather_agent(fake), "Paris and Rome?", run_config=OFF)
    assert fake.requests == []
    assert raised.value.preflight
    assert run.summary()["llm_calls"] == 0
    assert event_shape(run)[-1][:2] == ("complete", "budget_exhausted")


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("mode", ["sync", "streamed"])
def test_continue_ends_the_run_with_none_after_the_last_request_that_fits(
    server: FakeServer, mode: str
) -> None:
    script = two_tools_then_answer()
    with FakeOpenAI(script, server=server) as fake:
        # The first request's worst case fits 5,000 tokens; after its 1,050 the next does not.
        agent = openai_agents.step(
            weather_agent(fake), budget={"max_tokens": 5000}, error_boundary="continue"
        )
        with steptrace.run("weather") as run:
            result = run_mode(mode, agent, "Paris and Rome?", run_config=OFF)
    assert len(fake.requests) == 1
    if mode == "sync":
        assert result is None
    else:
        assert result.final_output is None
    (row,) = run.completed_steps
    assert (row.name, row.status, row.input_tokens, row.output_tokens) == (
        "weather",
        "skipped",
        1000,
        50,
    )
    assert event_shape(run)[-1][:2] == ("complete", "budget_exhausted")


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize(("boundary", "status"), [("fail", "failed"), ("escalate", "escalated")])
def test_fail_and_escalate_raise_from_the_run(
    server: FakeServer, boundary: str, status: str
) -> None:
    with FakeOpenAI(two_tools_then_answer(), server=server) as fake:
        agent = openai_agents.step(
            weather_agent(fake), budget={"max_tokens": 5000}, error_boundary=boundary
        )
        with steptrace.run("weather") as run, pytest.raises(BudgetExhausted) as raised:
            Runner.run_sync(agent, "Paris and Rome?", run_config=OFF)
    assert len(fake.requests) == 1
    assert raised.value.escalated is (boundary == "escalate")
    assert [row.status for row in run.completed_steps] == [status]


@pytest.mark.usefixtures("instrumented")
def test_a_persona_budget_counts_every_run_of_the_agent(server: FakeServer) -> None:
    with FakeOpenAI(["one", "two"], server=server) as fake:
        agent = openai_agents.persona(weather_agent(fake), name="forecaster", budget={"max_usd": 1})
        with steptrace.run("weather") as run:
            Runner.run_sync(agent, "a", run_config=OFF)
            Runner.run_sync(agent, "b", run_config=OFF)
    personas = [span for span in run.spans if span.kind is steptrace.SpanKind.PERSONA]
    assert [span.name for span in personas] == ["forecaster", "forecaster"]
    assert all(span.metadata["llm_calls"] == 1 for span in personas)


def test_instrumented_without_a_budget_sends_exactly_what_it_sent_before(
    server: FakeServer, sdk_traces: Collected
) -> None:
    def once() -> tuple[Any, list[Any]]:
        with FakeOpenAI(two_tools_then_answer(), server=server) as fake:
            result = Runner.run_sync(weather_agent(fake), "Paris and Rome?")
        return result.final_output, [json.dumps(body, sort_keys=True) for body in fake.requests]

    before = once()
    sdk_before = list(sdk_traces.spans)
    sdk_traces.spans.clear()
    openai_agents.instrument()
    try:
        after = once()
    finally:
        openai_agents.uninstrument()
    assert after == before
    # The SDK's own tracing saw the same spans.
    assert sdk_traces.spans == sdk_before
    assert "generation" in sdk_before
    assert "function" in sdk_before


def test_instrument_is_idempotent_and_uninstrument_restores_the_sdk(server: FakeServer) -> None:
    from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel as Chat

    original = Chat.get_response
    openai_agents.instrument()
    openai_agents.instrument()
    assert openai_agents.is_instrumented()
    wrapped = Chat.get_response
    assert wrapped is not original
    openai_agents.uninstrument()
    openai_agents.uninstrument()
    assert not openai_agents.is_instrumented()
    assert Chat.get_response is original
    with FakeOpenAI(["hi"], server=server) as fake, steptrace.run("plain") as run:
        Runner.run_sync(weather_agent(fake), "hi", run_config=OFF)
    assert run.events == []


@pytest.mark.usefixtures("instrumented")
def test_budgets_hold_with_the_sdk_tracing_on_and_its_spans_still_come(
    server: FakeServer, sdk_traces: Collected
) -> None:
    sdk_traces.spans.clear()
    with FakeOpenAI(two_tools_then_answer(), server=server) as fake:
        with steptrace.run("weather", budget={"max_usd": 1.0}) as run:
            Runner.run_sync(weather_agent(fake), "Paris and Rome?")  # SDK tracing on
        with steptrace.run("small", budget={"max_tokens": 100}), pytest.raises(BudgetExhausted):
            Runner.run_sync(weather_agent(fake), "Paris and Rome?")
    assert len(fake.requests) == 2
    assert event_shape(run) == EXPECTED_EVENTS
    assert sdk_traces.spans.count("function") == 2
    assert "agent" in sdk_traces.spans


@pytest.mark.usefixtures("instrumented")
def test_a_handoff_is_a_phase_change_and_a_span(server: FakeServer) -> None:
    script: list[str | OpenAIReply] = [
        OpenAIReply(tool_calls=[OpenAIToolCall(name="transfer_to_billing", id="call_handoff")]),
        "Billing here.",
    ]
    with FakeOpenAI(script, server=server) as fake:
        billing = weather_agent(fake, "billing")
        triage = weather_agent(fake, "triage")
        triage.handoffs = [billing]
        with steptrace.run("support") as run:
            result = Runner.run_sync(triage, "My invoice?", run_config=OFF)
    assert result.final_output == "Billing here."
    kinds = [event.to_dict()["type"] for event in run.events]
    assert kinds == ["llm_call", "phase_change", "llm_call", "loop_complete"]
    change = run.events[1].to_dict()
    assert (change["from_phase"], change["to_phase"]) == ("triage", "billing")
    names = [span.name for span in run.spans]
    assert "handoff triage -> billing" in names
    assert names.count("invoke_agent triage") == names.count("invoke_agent billing") == 1


@pytest.mark.usefixtures("instrumented")
def test_a_tripped_guardrail_ends_the_run_in_the_record(server: FakeServer) -> None:
    @input_guardrail
    async def no_secrets(context: Any, agent: Any, prompt: Any) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered="secret" in str(prompt))

    with FakeOpenAI(["never sent"], server=server) as fake:
        agent = weather_agent(fake)
        agent.input_guardrails = [no_secrets]
        with steptrace.run("guarded") as run, pytest.raises(InputGuardrailTripwireTriggered):
            Runner.run_sync(agent, "the secret is 42", run_config=OFF)
    guardrail = next(span for span in run.spans if span.name == "guardrail no_secrets")
    assert guardrail.status == "error"
    assert guardrail.metadata["steptrace.guardrail.triggered"] is True
    assert event_shape(run)[-1][:2] == ("complete", "guardrail_tripped")


@pytest.mark.usefixtures("instrumented")
def test_a_model_defined_after_instrument_is_covered_and_counted_once(server: FakeServer) -> None:
    class Subclassed(OpenAIChatCompletionsModel):
        async def get_response(self, *args: Any, **kwargs: Any) -> Any:
            return await super().get_response(*args, **kwargs)

    assert issubclass(Subclassed, Model)
    with FakeOpenAI(["hi"], server=server) as fake:
        agent = weather_agent(fake)
        agent.model = Subclassed(model="openai/gpt-4o-mini", openai_client=client(fake))
        with steptrace.run("sub", budget={"max_usd": 1}) as run:
            Runner.run_sync(agent, "hi", run_config=OFF)
    (call,) = [event for event in run.events if event.type == "llm_call"]
    assert call.model == "openai:gpt-4o-mini"  # priced as the model it names
    assert run.summary()["cost_usd"] > 0


@pytest.mark.usefixtures("instrumented")
def test_a_sub_agent_as_a_tool_runs_in_its_own_scope_and_its_refusal_is_a_tool_error(
    server: FakeServer,
) -> None:
    script: list[str | OpenAIReply] = [
        OpenAIReply(tool_calls=[OpenAIToolCall(name="ask_expert", arguments={"input": "q"})]),
        "Answered without the expert.",
    ]
    with FakeOpenAI(script, server=server) as fake:
        expert = openai_agents.step(weather_agent(fake, "expert"), budget={"max_tokens": 100})
        boss = weather_agent(fake, "boss")
        boss.tools = [expert.as_tool(tool_name="ask_expert", tool_description="Ask the expert.")]
        with steptrace.run("support") as run:
            result = Runner.run_sync(boss, "hi", run_config=OFF)
    assert result.final_output == "Answered without the expert."
    assert len(fake.requests) == 2  # the expert's request was refused, never sent
    assert [(row.name, row.status) for row in run.completed_steps] == [("expert", "failed")]
    shape = event_shape(run)
    assert [item[0] for item in shape] == ["llm_call", "complete", "tool", "llm_call", "complete"]
    assert shape[1][1] == "budget_exhausted"  # the expert's run
    assert shape[2][1:] == ("ask_expert", shape[2][2], "error")
    assert shape[2][2].startswith("call_")
    assert shape[4][1] == "done"


@pytest.mark.parametrize(
    ("given", "priced"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("openai/gpt-4o-mini", "openai:gpt-4o-mini"),
        ("litellm/anthropic/claude-haiku-4-5", "anthropic:claude-haiku-4-5"),
        ("anthropic:claude-haiku-4-5", "anthropic:claude-haiku-4-5"),
        ("ft:gpt-4o-mini:org::id", "ft:gpt-4o-mini:org::id"),
    ],
)
def test_provider_prefixes_are_priced_as_the_model_they_name(given: str, priced: str) -> None:
    assert price_name(given) == priced


def test_the_demo_runs_offline_and_its_second_run_is_refused() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "openai_agents_demo.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "second run: None (refused by the budget)" in done.stdout
    assert "requests that reached the server: 3" in done.stdout
    assert "skipped" in done.stdout


def responses_answer(request: RecordedRequest) -> HttpReply:
    """A minimal Responses API answer: the SDK's default model speaks it, and
    steptrace.testing's fake serves Chat Completions only."""
    return HttpReply(
        body={
            "id": "resp_fake1",
            "object": "response",
            "created_at": 0,
            "model": "gpt-4o-mini",
            "status": "completed",
            "output": [
                {
                    "type": "message",
                    "id": "msg_1",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hi.", "annotations": []}],
                }
            ],
            "usage": {
                "input_tokens": 100,
                "output_tokens": 10,
                "total_tokens": 110,
                "input_tokens_details": {"cached_tokens": 30},
                "output_tokens_details": {"reasoning_tokens": 4},
            },
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
    )


@pytest.mark.usefixtures("instrumented")
def test_the_sdk_default_responses_model_is_budgeted_and_recorded_too() -> None:
    with FakeServer() as responses_server:
        responses_server.route("POST", "/v1/responses", responses_answer)
        sent = openai.AsyncOpenAI(
            api_key=FAKE_OPENAI_API_KEY,
            base_url=responses_server.url + "/v1",
            max_retries=0,
            http_client=httpx2.AsyncClient(limits=httpx2.Limits(max_keepalive_connections=0)),
        )
        agent = Agent(name="plain", model=OpenAIResponsesModel("gpt-4o-mini", openai_client=sent))
        with steptrace.run("responses", budget={"max_usd": 1.0}) as run:
            assert Runner.run_sync(agent, "hi", run_config=OFF).final_output == "Hi."
        with steptrace.run("tiny", budget={"max_tokens": 50}), pytest.raises(BudgetExhausted):
            Runner.run_sync(agent, "hi", run_config=OFF)
        assert len(responses_server.requests) == 1
    (call,) = [event for event in run.events if event.type == "llm_call"]
    assert (call.call_id, call.input_tokens, call.output_tokens, call.cache_tokens) == (
        "resp_fake1",
        100,
        10,
        30,
    )
    expected = (70 * 0.15 + 30 * 0.075 + 10 * 0.60) / 1e6
    assert run.summary()["cost_usd"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.usefixtures("instrumented")
def test_a_tool_refused_by_its_input_guardrail_is_a_tool_rejected(server: FakeServer) -> None:
    @tool_input_guardrail
    def no_rome(data: Any) -> ToolGuardrailFunctionOutput:
        if "Rome" in data.context.tool_arguments:
            return ToolGuardrailFunctionOutput.reject_content("Rome is off limits.")
        return ToolGuardrailFunctionOutput.allow()

    @function_tool(tool_input_guardrails=[no_rome])
    def guarded_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    script: list[str | OpenAIReply] = [
        OpenAIReply(
            tool_calls=[
                OpenAIToolCall(name="guarded_weather", arguments={"city": "Paris"}, id="c_1"),
                OpenAIToolCall(name="guarded_weather", arguments={"city": "Rome"}, id="c_2"),
            ]
        ),
        "Paris only.",
    ]
    with FakeOpenAI(script, server=server) as fake, steptrace.run("guarded") as run:
        agent = weather_agent(fake)
        agent.tools = [guarded_weather]
        assert Runner.run_sync(agent, "Paris and Rome?", run_config=OFF).final_output == (
            "Paris only."
        )
    kinds = sorted(event.type for event in run.events if event.type.startswith("tool"))
    assert kinds == ["tool_execution", "tool_rejected"]
    (executed,) = [event for event in run.events if event.type == "tool_execution"]
    assert (executed.tool_use_id, executed.status) == ("c_1", "ok")


# A count that is not an int the SDK refuses itself (its Usage is validated).
@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("mode", ["sync", "streamed"])
@pytest.mark.parametrize(("reported", "recorded"), [(500, 40), (-5, 0)])
def test_reasoning_tokens_from_a_hostile_server_are_capped_at_the_output(
    server: FakeServer, mode: str, reported: Any, recorded: int
) -> None:
    reply = OpenAIReply(text="Hi.", usage=hostile_openai_usage(reported))
    with FakeOpenAI([reply], server=server) as fake, steptrace.run("hostile") as run:
        result = run_mode(mode, weather_agent(fake), "hi", run_config=OFF)
    assert result.final_output == "Hi."
    (chat,) = [span for span in run.spans if span.name == "chat gpt-4o-mini"]
    assert chat.metadata["steptrace.reasoning_tokens"] == recorded
    summary = run.summary()
    assert (summary["input_tokens"], summary["output_tokens"]) == (100, 40)
    assert summary["cost_usd"] == pytest.approx((100 * 0.15 + 40 * 0.60) / 1e6, abs=1e-12)


_ANY_INT = st.integers(min_value=-(10**13), max_value=10**13)


@given(
    input_tokens=_ANY_INT,
    output_tokens=_ANY_INT,
    cached=_ANY_INT,
    written=_ANY_INT,
    reasoning=_ANY_INT,
)
def test_any_sdk_usage_reads_as_counts_with_its_parts_within_their_whole(
    input_tokens: int, output_tokens: int, cached: int, written: int, reasoning: int
) -> None:
    usage = Usage(
        requests=1,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=cached, cache_write_tokens=written),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning),
    )
    counts = _agents_usage(usage)
    assert counts is not None
    assert 0 <= counts.reasoning_tokens <= max(counts.output_tokens, 0)
    assert 0 <= counts.cache_read_tokens + counts.cache_write_tokens <= max(counts.input_tokens, 0)
