"""steptrace.integrations.langchain against real LangChain chat models
(``ChatOpenAI``, ``ChatAnthropic``) whose official SDKs talk HTTP to the fake
servers on 127.0.0.1: a refused request never arrives, exact tokens and cost
from ``usage_metadata``, the event sequence with parallel tool calls and the
model's tool-call ids, each boundary, sync/async/streaming, the global
``instrument()``, and LangChain unchanged when instrumented with no scope."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_anthropic import ChatAnthropic
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

import steptrace
from steptrace import BudgetExhausted, LlmCall, SpanKind, ToolExecution
from steptrace.integrations import langchain as st_langchain
from steptrace.integrations.langchain import StepTraceCallbackHandler
from steptrace.llm.prices import ModelPrice, PriceTable
from steptrace.testing import (
    AnthropicReply,
    AnthropicToolUse,
    FakeAnthropic,
    FakeOpenAI,
    FakeServer,
    OpenAIReply,
    OpenAIToolCall,
)

from .._usage import hostile_openai_usage

PRICES = PriceTable(
    overrides={
        "openai:gpt-4o-mini": ModelPrice(1.0, 2.0, 0.5),
        "anthropic:claude-haiku-4-5": ModelPrice(1.0, 5.0, 0.1, 1.25),
    }
)


@tool
def lookup(query: str) -> str:
    """Look a word up."""
    return f"found {query}"


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server


@pytest.fixture
def openai_fake(shared_server: FakeServer) -> Iterator[FakeOpenAI]:
    shared_server.requests.clear()
    with FakeOpenAI(server=shared_server) as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_fake_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def anthropic_fake(anthropic_fake_server: FakeAnthropic) -> FakeAnthropic:
    anthropic_fake_server.requests.clear()
    return anthropic_fake_server


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    # One event loop for the module: langchain-openai caches its async HTTP
    # client per base URL, and a client cannot outlive the loop it was made on.
    with asyncio.Runner() as loop_runner:
        yield loop_runner


@pytest.fixture(autouse=True)
def prices() -> None:
    steptrace.configure(price_source=PRICES)


@pytest.fixture
def handler() -> StepTraceCallbackHandler:
    return StepTraceCallbackHandler()


class Provider:
    """One chat model family on its fake server: how to script and read it."""

    def __init__(self, name: str, fake: Any) -> None:
        self.name = name
        self.fake = fake

    def model(self, **options: Any) -> BaseChatModel:
        options.setdefault("max_tokens", 200)
        if self.name == "openai":
            return ChatOpenAI(
                model="gpt-4o-mini",
                base_url=self.fake.base_url,
                api_key=self.fake.api_key,
                max_retries=0,
                stream_usage=True,
                **options,
            )
        return ChatAnthropic(  # type: ignore[call-arg]
            model="claude-haiku-4-5",
            base_url=self.fake.url,
            api_key=self.fake.api_key,
            max_retries=0,
            **options,
        )

    def reply(
        self, text: str, usage: tuple[int, int, int, int] | None = None, reasoning: int = 0
    ) -> Any:
        """``usage``: (total input, output, cache read, cache write); ``reasoning``
        of the output tokens, as each API reports it."""
        if self.name == "openai":
            if usage is None:
                return OpenAIReply(text=text)
            return OpenAIReply(
                text=text,
                prompt_tokens=usage[0],
                completion_tokens=usage[1],
                cached_tokens=usage[2],
                reasoning_tokens=reasoning,
            )
        if usage is None:
            return AnthropicReply(text=text)
        total, output, read, write = usage
        if reasoning:  # the fake has no field for it: the usage as the API sends it
            return AnthropicReply(
                text=text,
                usage={
                    "input_tokens": total - read - write,
                    "cache_creation_input_tokens": write,
                    "cache_read_input_tokens": read,
                    "output_tokens": output,
                    "output_tokens_details": {"thinking_tokens": reasoning},
                },
            )
        return AnthropicReply(
            text=text,
            input_tokens=total - read - write,
            output_tokens=output,
            cache_read_tokens=read,
            cache_write_tokens=write,
        )

    def tool_calls(self, *ids: str) -> Any:
        if self.name == "openai":
            calls = [OpenAIToolCall(name="lookup", arguments={"query": i}, id=i) for i in ids]
            return OpenAIReply(tool_calls=calls, prompt_tokens=60, completion_tokens=20)
        uses = [AnthropicToolUse(name="lookup", input={"query": i}, id=i) for i in ids]
        return AnthropicReply(tool_uses=uses, input_tokens=60, output_tokens=20)

    @property
    def model_id(self) -> str:
        return "openai:gpt-4o-mini" if self.name == "openai" else "anthropic:claude-haiku-4-5"


@pytest.fixture(params=["openai", "anthropic"])
def provider(
    request: pytest.FixtureRequest, openai_fake: FakeOpenAI, anthropic_fake: FakeAnthropic
) -> Provider:
    return Provider(request.param, openai_fake if request.param == "openai" else anthropic_fake)


def text(message: Any) -> str:
    content = message.content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


_RUNNER: list[asyncio.Runner] = []


@pytest.fixture(autouse=True)
def use_runner(runner: asyncio.Runner) -> Iterator[None]:
    _RUNNER.append(runner)
    yield
    _RUNNER.pop()


def invoke(model: BaseChatModel, how: str, prompt: str, config: Any) -> str:
    """Ask ``model`` one way: sync, async, streaming or async streaming."""
    if how == "sync":
        return text(model.invoke(prompt, config=config))
    if how == "stream":
        return "".join(text(chunk) for chunk in model.stream(prompt, config=config))

    async def go() -> str:
        if how == "async":
            return text(await model.ainvoke(prompt, config=config))
        return "".join([text(chunk) async for chunk in model.astream(prompt, config=config)])

    # A Runner runs in the context it was made in unless given the caller's.
    return _RUNNER[-1].run(go(), context=contextvars.copy_context())


HOWS = ["sync", "async", "stream", "astream"]


@pytest.mark.parametrize("how", HOWS)
def test_a_request_that_cannot_fit_is_never_sent(
    provider: Provider, handler: StepTraceCallbackHandler, how: str
) -> None:
    model = provider.model(max_tokens=500)

    @steptrace.step(budget={"max_tokens": 300})
    def ask() -> str:
        return invoke(model, how, "Say hello.", {"callbacks": [handler]})

    with pytest.raises(BudgetExhausted) as info:
        ask()
    assert info.value.preflight is True
    assert info.value.projected == 4 + 4 + 500  # "Say hello." in one message, plus max_tokens
    assert provider.fake.requests == []


@pytest.mark.parametrize("how", HOWS)
def test_exact_tokens_and_cost_from_usage_metadata(
    provider: Provider, handler: StepTraceCallbackHandler, how: str
) -> None:
    provider.fake.push(provider.reply("Hello!", (1200, 300, 150, 50), reasoning=120))
    model = provider.model()

    @steptrace.step(budget={"max_usd": 1.0})
    def ask() -> str:
        return invoke(model, how, "Say hello.", {"callbacks": [handler]})

    with steptrace.run("langchain") as run:
        assert ask() == "Hello!"
    (row,) = run.completed_steps
    assert (row.input_tokens, row.output_tokens, row.llm_calls) == (1200, 300, 1)
    if provider.name == "openai":  # the fake OpenAI has no cache writes
        expected = (1050 * 1.0 + 150 * 0.5 + 300 * 2.0) / 1e6
        cache_write = 0
    else:
        expected = (1000 * 1.0 + 150 * 0.1 + 50 * 1.25 + 300 * 5.0) / 1e6
        cache_write = 50
    assert row.cost_usd == pytest.approx(expected, rel=1e-12)
    (event,) = run.events
    assert isinstance(event, LlmCall)
    assert (event.model, event.input_tokens, event.output_tokens, event.cache_tokens) == (
        provider.model_id,
        1200,
        300,
        150,
    )
    (span,) = [s for s in run.spans if s.kind is SpanKind.LLM_CALL]
    assert span.metadata["steptrace.cache_write_tokens"] == cache_write
    # Reasoning is part of the output, billed at its price: the totals above hold.
    assert span.metadata["steptrace.reasoning_tokens"] == 120
    assert "steptrace.usage_estimated" not in span.metadata
    assert len(provider.fake.requests) == 1


@pytest.mark.parametrize("boundary", ["continue", "escalate", "fail"])
def test_each_boundary_when_the_budget_runs_out(
    provider: Provider, handler: StepTraceCallbackHandler, boundary: str
) -> None:
    provider.fake.push(provider.reply("first", (150, 50, 0, 0)))
    model = provider.model(max_tokens=100)
    config: RunnableConfig = {"callbacks": [handler]}

    @steptrace.step(budget={"max_tokens": 300}, error_boundary=boundary)
    def ask_twice() -> str:
        model.invoke("Say hello.", config=config)  # 108 worst case fits in 300
        return text(model.invoke("Say hello.", config=config))  # 200 used + 108 does not

    with steptrace.run("langchain") as run:
        if boundary == "continue":
            assert ask_twice() is None
        else:
            with pytest.raises(BudgetExhausted) as info:
                ask_twice()
            assert info.value.escalated is (boundary == "escalate")
    status = {"continue": "skipped", "escalate": "escalated", "fail": "failed"}[boundary]
    (row,) = run.completed_steps
    assert (row.status, row.input_tokens, row.output_tokens) == (status, 150, 50)
    assert len(provider.fake.requests) == 1


def test_requests_in_flight_hold_their_worst_case(
    provider: Provider, handler: StepTraceCallbackHandler
) -> None:
    provider.fake.push(*(provider.reply("ok", (8, 2, 0, 0)),) * 2)
    model = provider.model(max_tokens=100)
    config: RunnableConfig = {"callbacks": [handler]}

    @steptrace.step(budget={"max_tokens": 300})
    def fan_out() -> list[Any]:
        async def go() -> list[Any]:
            # Each worst case is 8 + 100: two fit beside each other, a third does not.
            calls = (model.ainvoke("Say hello.", config=config) for _ in range(3))
            return await asyncio.gather(*calls, return_exceptions=True)

        return _RUNNER[-1].run(go(), context=contextvars.copy_context())

    with steptrace.run("langchain") as run:
        results = fan_out()
    refused = [r for r in results if isinstance(r, BudgetExhausted)]
    assert len(refused) == 1
    assert len(provider.fake.requests) == 2
    (row,) = run.completed_steps
    assert (row.input_tokens, row.output_tokens, row.llm_calls) == (16, 4, 2)


def test_parallel_tool_calls_keep_the_models_ids_in_order_of_events(
    provider: Provider, handler: StepTraceCallbackHandler
) -> None:
    provider.fake.push(provider.tool_calls("call_a", "call_b"), provider.reply("Both found."))
    model = provider.model().bind_tools([lookup])

    def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", call_model)
    graph.add_node("tools", ToolNode([lookup]))  # runs the two calls in parallel
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    app = graph.compile()

    @steptrace.step(budget={"max_tokens": 10_000})
    def agent() -> str:
        config: RunnableConfig = {"callbacks": [handler]}
        state = app.invoke({"messages": [HumanMessage("Look up a and b.")]}, config=config)
        return text(state["messages"][-1])

    with steptrace.run("langchain") as run:
        assert agent() == "Both found."
    kinds = [type(e).__name__ for e in run.events]
    assert kinds == ["LlmCall", "ToolExecution", "ToolExecution", "LlmCall"]
    executions = [e for e in run.events if isinstance(e, ToolExecution)]
    assert sorted((e.tool_name, e.tool_use_id, e.status) for e in executions) == [
        ("lookup", "call_a", "ok"),
        ("lookup", "call_b", "ok"),
    ]
    step_span = next(s for s in run.spans if s.name == "agent")
    tool_spans = [s for s in run.spans if s.kind is SpanKind.TOOL]
    assert sorted(s.metadata["gen_ai.tool.call.id"] for s in tool_spans) == ["call_a", "call_b"]
    assert all(s.parent_id == step_span.span_id for s in tool_spans)
    assert len(provider.fake.requests) == 2


def test_a_failing_tool_is_an_error_execution(handler: StepTraceCallbackHandler) -> None:
    @tool
    def broken(query: str) -> str:
        """Always fails."""
        raise ValueError("no such word")

    call = {"name": "broken", "args": {"query": "x"}, "id": "call_x", "type": "tool_call"}
    with steptrace.run("langchain") as run, pytest.raises(ValueError, match="no such word"):
        broken.invoke(call, config={"callbacks": [handler]})
    (event,) = run.events
    assert isinstance(event, ToolExecution)
    assert (event.tool_use_id, event.status) == ("call_x", "error")


def test_a_failed_request_ends_its_span_as_failed(
    openai_fake: FakeOpenAI, handler: StepTraceCallbackHandler
) -> None:
    from steptrace.testing import OpenAIErrorReply

    openai_fake.push(OpenAIErrorReply.server_error())
    model = Provider("openai", openai_fake).model()
    with steptrace.run("langchain") as run, pytest.raises(Exception, match="500"):
        model.invoke("Say hello.", config={"callbacks": [handler]})
    (span,) = [s for s in run.spans if s.kind is SpanKind.LLM_CALL]
    assert span.status == "error"
    assert run.events == []


def test_instrument_adds_one_handler_everywhere_and_uninstrument_stops_it(
    openai_fake: FakeOpenAI,
) -> None:
    model = Provider("openai", openai_fake).model()
    openai_fake.push(*("answer",) * 4)
    handler = st_langchain.instrument()
    try:
        assert st_langchain.instrument() is handler
        assert st_langchain.is_instrumented()
        with steptrace.run("global") as run:
            model.invoke("Say hello.")
            # A handler passed by the caller as well is not doubled.
            model.invoke("Say hello.", config={"callbacks": [StepTraceCallbackHandler()]})
        assert [type(e).__name__ for e in run.events] == ["LlmCall", "LlmCall"]
    finally:
        st_langchain.uninstrument()
        st_langchain.uninstrument()
    assert not st_langchain.is_instrumented()
    with steptrace.run("plain") as plain:
        model.invoke("Say hello.")
    assert plain.events == []


@pytest.mark.parametrize("how", HOWS)
def test_instrumented_without_a_scope_langchain_behaves_as_before(
    provider: Provider, how: str
) -> None:
    model = provider.model()
    provider.fake.push(provider.reply("Plain answer."))
    before = invoke(model, how, "Say hello.", None)
    st_langchain.instrument()
    try:
        provider.fake.push(provider.reply("Plain answer."))
        after = invoke(model, how, "Say hello.", None)
    finally:
        st_langchain.uninstrument()
    assert before == after == "Plain answer."
    first, second = provider.fake.requests
    assert first == second


class Counting(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts = 0

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.starts += 1


@pytest.mark.parametrize("other_callbacks", [True, False])
def test_budgets_and_record_with_or_without_other_callbacks(
    openai_fake: FakeOpenAI, handler: StepTraceCallbackHandler, other_callbacks: bool
) -> None:
    counting = Counting()
    callbacks: list[Any] = [counting, handler] if other_callbacks else [handler]
    model = Provider("openai", openai_fake).model(max_tokens=100)
    openai_fake.push(OpenAIReply(text="ok", prompt_tokens=150, completion_tokens=50))

    @steptrace.step(budget={"max_tokens": 300})
    def ask_twice() -> None:
        model.invoke("Say hello.", config={"callbacks": callbacks})
        model.invoke("Say hello.", config={"callbacks": callbacks})

    with steptrace.run("langchain") as run, pytest.raises(BudgetExhausted):
        ask_twice()
    assert run.summary()["input_tokens"] == 150
    assert len(openai_fake.requests) == 1
    # The other handler, listed first, saw both starts; the refused one was never sent.
    assert counting.starts == (2 if other_callbacks else 0)


def test_a_stream_broken_midway_records_what_it_received(
    openai_fake: FakeOpenAI, handler: StepTraceCallbackHandler
) -> None:
    from steptrace.testing import OpenAIErrorReply

    openai_fake.push(OpenAIErrorReply(status=500, message="overloaded", mid_stream=True))
    model = Provider("openai", openai_fake).model()
    received: list[str] = []

    def read() -> None:
        received.extend(
            text(c) for c in model.stream("Say hello.", config={"callbacks": [handler]})
        )

    with steptrace.run("langchain") as run, pytest.raises(Exception, match="overloaded"):
        read()
    assert "".join(received)  # part of the answer arrived before the error
    (span,) = [s for s in run.spans if s.kind is SpanKind.LLM_CALL]
    assert span.status == "error"
    assert span.metadata["steptrace.usage_estimated"] is True
    (event,) = run.events
    assert isinstance(event, LlmCall)
    assert event.input_tokens == 8  # the pre-flight estimate
    assert event.output_tokens >= 1


@pytest.mark.parametrize("how", HOWS)
def test_anthropic_cache_writes_split_by_lifetime_are_recorded(
    anthropic_fake: FakeAnthropic, handler: StepTraceCallbackHandler, how: str
) -> None:
    # The API reports cache writes by lifetime too; LangChain then zeroes its
    # generic ``cache_creation`` and reports ``ephemeral_5m/1h_input_tokens``.
    usage = {
        "input_tokens": 1000,
        "cache_creation_input_tokens": 50,
        "cache_read_input_tokens": 150,
        "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 20},
        "output_tokens": 300,
    }
    anthropic_fake.push(AnthropicReply(text="Hello!", usage=usage))
    model = Provider("anthropic", anthropic_fake).model()
    with steptrace.run("langchain") as run:
        assert invoke(model, how, "Say hello.", {"callbacks": [handler]}) == "Hello!"
    (span,) = [s for s in run.spans if s.kind is SpanKind.LLM_CALL]
    assert span.metadata["gen_ai.usage.input_tokens"] == 1200
    assert span.metadata["steptrace.cache_write_tokens"] == 50
    expected = (1000 * 1.0 + 150 * 0.1 + 50 * 1.25 + 300 * 5.0) / 1e6
    assert run.usage().cost_usd == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize(("reported", "recorded"), [(500, 40), (-5, 0)])
def test_reasoning_tokens_from_a_hostile_server_are_capped_at_the_output(
    openai_fake: FakeOpenAI,
    handler: StepTraceCallbackHandler,
    how: str,
    reported: int,
    recorded: int,
) -> None:
    openai_fake.push(OpenAIReply(text="Hello!", usage=hostile_openai_usage(reported)))
    model = Provider("openai", openai_fake).model()
    with steptrace.run("langchain") as run:
        assert invoke(model, how, "Say hello.", {"callbacks": [handler]}) == "Hello!"
    (span,) = [s for s in run.spans if s.kind is SpanKind.LLM_CALL]
    assert span.metadata["steptrace.reasoning_tokens"] == recorded
    usage = run.usage()
    assert (usage.input_tokens, usage.output_tokens, usage.llm_calls) == (100, 40, 1)
    assert usage.cost_usd == pytest.approx((100 * 1.0 + 40 * 2.0) / 1e6, rel=1e-12)


# The SDK serializes the response it did not validate: pydantic warns about the text.
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
@pytest.mark.parametrize("how", ["sync", "async"])  # LangChain's own stream chunks refuse text
def test_counts_that_are_text_read_as_zero_and_the_request_is_recorded(
    openai_fake: FakeOpenAI, handler: StepTraceCallbackHandler, how: str
) -> None:
    openai_fake.push(OpenAIReply(text="Hello!", usage=hostile_openai_usage("many", cached="all")))
    model = Provider("openai", openai_fake).model()
    with steptrace.run("langchain") as run:  # strict: a failure of the handler raises
        assert invoke(model, how, "Say hello.", {"callbacks": [handler]}) == "Hello!"
    (span,) = [s for s in run.spans if s.kind is SpanKind.LLM_CALL]
    assert span.status == "ok"
    assert span.metadata["steptrace.reasoning_tokens"] == 0
    assert span.metadata["steptrace.cache_read_tokens"] == 0
    assert run.usage().llm_calls == 1


_COUNT = st.one_of(
    st.none(),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
_INT_OR_COUNT = st.one_of(st.integers(min_value=-5, max_value=10**6), _COUNT)


@given(
    usage=st.fixed_dictionaries(
        {"input_tokens": _INT_OR_COUNT},
        optional={
            "output_tokens": _INT_OR_COUNT,
            "input_token_details": st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "cache_read": _COUNT,
                        "cache_creation": _COUNT,
                        "ephemeral_5m_input_tokens": _COUNT,
                        "ephemeral_1h_input_tokens": _COUNT,
                    },
                ),
                _COUNT,
            ),
            "output_token_details": st.one_of(
                st.fixed_dictionaries({}, optional={"reasoning": _COUNT}), _COUNT
            ),
        },
    )
)
def test_any_usage_metadata_reads_as_counts_with_its_parts_within_their_whole(
    usage: dict[str, Any],
) -> None:
    counts = st_langchain._usage_of(SimpleNamespace(usage_metadata=usage), None)
    if counts is None:
        return
    assert all(type(count) is int for count in counts)
    assert 0 <= counts.reasoning_tokens <= max(counts.output_tokens, 0)
    assert 0 <= counts.cache_read_tokens + counts.cache_write_tokens <= max(counts.input_tokens, 0)
