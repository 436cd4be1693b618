"""instrument_openai on real ``openai`` SDK clients talking HTTP to the fake
server on 127.0.0.1: model default from the step, usage and cost in the step's
ledger, pre-flight refusal before any request, spans and LlmCall events,
streams (ended, closed early, the SDK's stream helper), parse(), errors, async,
and uninstrument."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pydantic
import pytest

import steptrace
from steptrace import BudgetExhausted, InMemorySpanCollector, LlmCall, Span, SpanKind
from steptrace.llm.openai.instrument import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    ESTIMATE_CHARS_PER_TOKEN,
    estimate_openai_input_tokens,
    instrument_openai,
    is_instrumented,
    uninstrument_openai,
)
from steptrace.testing import FakePrices
from steptrace.testing._fake_openai import (
    FakeOpenAI,
    OpenAIErrorReply,
    OpenAIReply,
    OpenAIToolCall,
)
from steptrace.testing._server import FakeServer

from .._usage import hostile_openai_usage

SECRET = "sk-proj-LEAKEDsecretLEAKEDsecret0123456789"
HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeServer]:
    # One server for the module: stopping a server costs half a second.
    with FakeServer() as server:
        yield server


@pytest.fixture
def fake(shared_server: FakeServer) -> Iterator[FakeOpenAI]:
    shared_server.requests.clear()
    with FakeOpenAI(server=shared_server) as server:
        yield server


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    sdk_client = instrument_openai(fake.client())
    yield sdk_client
    sdk_client.close()


def llm_spans(collector: InMemorySpanCollector) -> list[Span]:
    return [s for s in collector.spans if s.kind is SpanKind.LLM_CALL]


# -- plain calls ----------------------------------------------------------------------


def test_a_call_in_a_step_defaults_its_model_and_lands_in_the_ledger(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    steptrace.configure(price_source=FakePrices(1000.0))
    fake.push(OpenAIReply(text="Hello!", prompt_tokens=40, completion_tokens=10, cached_tokens=32))

    @steptrace.step(model="gpt-4o-mini")
    def greet() -> str:
        completion = client.chat.completions.create(messages=HELLO)  # type: ignore[call-overload]
        return str(completion.choices[0].message.content)

    with steptrace.run("r") as run:
        steptrace.enable_tracing()
        assert greet() == "Hello!"
    assert fake.requests[0]["model"] == "gpt-4o-mini"
    row = run.completed_steps[0]
    assert (row.model, row.input_tokens, row.output_tokens, row.llm_calls) == (
        "gpt-4o-mini",
        40,
        10,
        1,
    )
    assert row.cost_usd == pytest.approx(0.05)
    [entry] = run.llm_trace
    assert (entry.model, entry.input_tokens, entry.output_tokens) == ("gpt-4o-mini", 40, 10)
    assert entry.cache_tokens == 32


def test_the_call_gets_a_genai_span_under_the_step_and_an_llm_call_event(
    fake: FakeOpenAI, client: openai.OpenAI, collector: InMemorySpanCollector
) -> None:
    fake.push(OpenAIReply(text="Hi.", prompt_tokens=12, completion_tokens=2, cached_tokens=8))

    @steptrace.step(model="gpt-4o")
    def greet() -> Any:
        return client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, max_completion_tokens=64, temperature=0.5
        )

    with steptrace.run("r") as run:
        completion = greet()
    [llm_span] = llm_spans(collector)
    [step_span] = [s for s in collector.spans if s.kind is SpanKind.STEP]
    assert llm_span.name == "chat gpt-4o-mini"
    assert llm_span.parent_id == step_span.span_id
    assert llm_span.status == "ok"
    assert {k: v for k, v in llm_span.metadata.items() if k.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.response.id": completion.id,
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 2,
    }
    assert llm_span.metadata["steptrace.cache_read_tokens"] == 8
    [event] = run.events
    assert isinstance(event, LlmCall)
    assert (event.call_id, event.model, event.iteration) == (completion.id, "gpt-4o-mini", 0)
    assert (event.input_tokens, event.output_tokens, event.cache_tokens) == (12, 2, 8)
    assert event.duration_ms >= 0


def test_calls_with_tools_are_accounted_like_any_other(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake.push(OpenAIReply(tool_calls=[OpenAIToolCall(name="get_time", arguments={"tz": "CET"})]))
    tools: list[Any] = [
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    ]
    with steptrace.run("r") as run:
        completion = client.chat.completions.create(
            model="gpt-4o", messages=HELLO, tools=iter(tools)
        )
    assert completion.choices[0].message.tool_calls
    assert fake.requests[0]["tools"] == tools  # the one-shot iterable still reached the server
    assert completion.usage is not None
    assert run.usage().output_tokens == completion.usage.completion_tokens > 0


# -- budgets --------------------------------------------------------------------------


def test_a_refused_pre_flight_check_sends_no_request(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake.push("never sent")

    @steptrace.step(model="gpt-4o-mini", budget={"max_tokens": 1000})
    def ask(max_tokens: int | None) -> None:
        if max_tokens is None:  # the default output bound is assumed
            client.chat.completions.create(messages=HELLO)  # type: ignore[call-overload]
        else:
            client.chat.completions.create(  # type: ignore[call-overload]
                messages=HELLO, max_completion_tokens=max_tokens
            )

    with pytest.raises(BudgetExhausted) as info:
        ask(None)
    assert info.value.preflight
    assert info.value.projected == estimate_openai_input_tokens(HELLO) + DEFAULT_MAX_OUTPUT_TOKENS
    with pytest.raises(BudgetExhausted):
        ask(995)
    assert fake.server.requests == []
    assert steptrace.peek_agent_trace() == []


def test_a_call_that_fits_is_sent_and_one_that_crosses_the_budget_raises_after_recording(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake.push(OpenAIReply(text="long", prompt_tokens=900, completion_tokens=150))

    @steptrace.step(model="gpt-4o-mini", budget={"max_tokens": 1000})
    def ask() -> None:
        client.chat.completions.create(  # type: ignore[call-overload]
            messages=HELLO, max_completion_tokens=100
        )

    with steptrace.run("r") as run, pytest.raises(BudgetExhausted) as info:
        ask()
    assert not info.value.preflight
    assert info.value.consumed_tokens == 1050
    assert len(fake.requests) == 1
    assert run.completed_steps[0].input_tokens == 900
    assert len(run.events) == 1


def test_the_estimate_counts_contents_tool_calls_tools_and_schemas() -> None:
    messages: list[Any] = [
        {"role": "system", "content": "a" * 30},
        {"role": "user", "content": [{"type": "text", "text": "b" * 30}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "function": {"name": "f" * 10, "arguments": "{}" * 10}}],
        },
    ]
    assert estimate_openai_input_tokens(messages) == (30 + 30 + 10 + 20) // 3 + 3 * 4
    with_tools = estimate_openai_input_tokens(messages, tools=[{"name": "x" * 300}])
    assert with_tools > estimate_openai_input_tokens(messages) + 100


# -- streams --------------------------------------------------------------------------


def test_a_stream_is_accounted_when_it_ends_and_its_span_never_becomes_current(
    fake: FakeOpenAI, client: openai.OpenAI, collector: InMemorySpanCollector
) -> None:
    text = "Hello there, this is a streamed answer."
    fake.push(OpenAIReply(text=text, prompt_tokens=30, cached_tokens=16))

    @steptrace.step(model="gpt-4o-mini")
    def stream() -> str:
        chunks = client.chat.completions.create(messages=HELLO, stream=True)  # type: ignore[call-overload]
        pieces = []
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            with steptrace.span("consumer"):
                pass
            assert steptrace.peek_agent_trace() == []  # accounted only at the end
        return "".join(pieces)

    with steptrace.run("r") as run:
        assert stream() == text
    assert fake.requests[0]["stream_options"] == {"include_usage": True}
    row = run.completed_steps[0]
    assert (row.input_tokens, row.llm_calls) == (30, 1)
    assert row.output_tokens == -(-len(text) // 4)
    [event] = run.events
    assert isinstance(event, LlmCall)
    assert event.cache_tokens == 16
    assert event.call_id.startswith("chatcmpl-")
    [llm_span] = llm_spans(collector)
    [step_span] = [s for s in collector.spans if s.kind is SpanKind.STEP]
    consumers = [s for s in collector.spans if s.name == "consumer"]
    assert consumers
    assert all(s.parent_id == step_span.span_id for s in consumers)
    assert llm_span.parent_id == step_span.span_id
    assert llm_span.metadata["gen_ai.usage.input_tokens"] == 30
    assert "steptrace.usage_estimated" not in llm_span.metadata


def test_a_stream_closed_early_records_what_is_known(
    fake: FakeOpenAI, client: openai.OpenAI, collector: InMemorySpanCollector
) -> None:
    fake.push(OpenAIReply(text="one two three four five six seven eight nine ten"))

    @steptrace.step(model="gpt-4o-mini")
    def first_words() -> None:
        with client.chat.completions.create(  # type: ignore[call-overload]
            messages=HELLO, stream=True, stream_options={"include_obfuscation": False}
        ) as chunks:
            for index, _chunk in enumerate(chunks):
                if index == 2:  # role chunk, "one ", "two "
                    break

    with steptrace.run("r") as run:
        first_words()
    assert fake.requests[0]["stream_options"] == {
        "include_obfuscation": False,
        "include_usage": True,
    }
    row = run.completed_steps[0]
    assert row.llm_calls == 1
    assert row.input_tokens == estimate_openai_input_tokens(HELLO)
    assert row.output_tokens == math.ceil(len("one two ") / 3)
    [event] = run.events
    assert isinstance(event, LlmCall)
    assert event.estimated
    [llm_span] = llm_spans(collector)
    assert llm_span.metadata["steptrace.stream_closed_early"] is True
    assert llm_span.metadata["steptrace.usage_estimated"] is True


def test_a_stream_that_crosses_the_budget_raises_at_its_end(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake.push(OpenAIReply(text="a b c", prompt_tokens=500, completion_tokens=600))

    @steptrace.step(model="gpt-4o-mini", budget={"max_tokens": 1000})
    def stream() -> list[Any]:
        return list(
            client.chat.completions.create(  # type: ignore[call-overload]
                messages=HELLO, stream=True, max_completion_tokens=100
            )
        )

    with steptrace.run("r") as run, pytest.raises(BudgetExhausted):
        stream()
    assert run.completed_steps[0].output_tokens == 600


def test_a_stream_is_charged_to_the_step_that_made_the_call(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake.push("streamed words here")

    @steptrace.step(model="gpt-4o-mini")
    def consume(chunks: Any) -> None:
        for _chunk in chunks:
            pass

    @steptrace.step(model="gpt-4o-mini")
    def caller() -> None:
        consume(client.chat.completions.create(messages=HELLO, stream=True))  # type: ignore[call-overload]

    with steptrace.run("r") as run:
        caller()
    calls = {row.name: row.llm_calls for row in run.completed_steps}
    assert calls == {"consume": 0, "caller": 1}


def test_the_sdk_stream_helper_is_accounted(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.push(OpenAIReply(text="Helper streams work.", prompt_tokens=9, completion_tokens=5))
    with (
        steptrace.run("r") as run,
        client.chat.completions.stream(model="gpt-4o-mini", messages=HELLO) as stream,
    ):
        for _event in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Helper streams work."
    assert (run.usage().input_tokens, run.usage().output_tokens) == (9, 5)
    assert len(run.events) == 1


# -- parse(), raw responses, errors -----------------------------------------------------


class City(pydantic.BaseModel):
    name: str


def test_parse_is_accounted_too(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.push(OpenAIReply.json({"name": "Paris"}, prompt_tokens=20, completion_tokens=6))
    with steptrace.run("r") as run:
        completion = client.chat.completions.parse(
            model="gpt-4o-mini", messages=HELLO, response_format=City
        )
    assert completion.choices[0].message.parsed == City(name="Paris")
    assert fake.requests[0]["response_format"]["type"] == "json_schema"
    assert (run.usage().input_tokens, run.usage().output_tokens) == (20, 6)


def test_a_raw_response_is_accounted_and_returned_as_is(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake.push(OpenAIReply(text="raw", prompt_tokens=7, completion_tokens=1))
    with steptrace.run("r") as run:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.parse().choices[0].message.content == "raw"
    assert (run.usage().input_tokens, run.usage().output_tokens) == (7, 1)


def test_sdk_errors_pass_through_unchanged_and_the_span_is_redacted(
    fake: FakeOpenAI, client: openai.OpenAI, collector: InMemorySpanCollector
) -> None:
    fake.push(OpenAIErrorReply.authentication(f"Incorrect API key provided: {SECRET}"))
    with steptrace.run("r") as run, pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert SECRET in str(info.value)  # the caller's own exception, untouched
    [llm_span] = llm_spans(collector)
    assert llm_span.status == "error"
    assert llm_span.error is not None
    assert "AuthenticationError" in llm_span.error
    assert SECRET not in llm_span.error
    assert run.events == []
    assert run.usage().llm_calls == 0


def test_a_call_without_any_model_is_left_to_the_sdk_to_refuse(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    with pytest.raises(TypeError, match="model"):
        client.chat.completions.create(messages=HELLO)  # type: ignore[call-overload]
    assert fake.requests == []


# -- instrument / uninstrument ----------------------------------------------------------


def test_uninstrument_restores_the_client_and_both_are_idempotent(fake: FakeOpenAI) -> None:
    plain = fake.client()
    other = fake.client()
    try:
        completions = plain.chat.completions
        instrument_openai(plain)
        wrapper = completions.create
        assert instrument_openai(plain) is plain
        assert completions.create is wrapper
        assert is_instrumented(plain)
        assert not is_instrumented(other)
        fake.push("one", "two", "three")
        with steptrace.run("r") as run:
            plain.chat.completions.create(model="gpt-4o", messages=HELLO)
            other.chat.completions.create(model="gpt-4o", messages=HELLO)  # not instrumented
            assert uninstrument_openai(plain) is plain
            uninstrument_openai(plain)
            assert "create" not in vars(completions)
            assert not is_instrumented(plain)
            plain.chat.completions.create(model="gpt-4o", messages=HELLO)
        assert len(run.events) == 1
        assert run.usage().llm_calls == 1
    finally:
        plain.close()
        other.close()


def test_only_openai_clients_are_accepted() -> None:
    with pytest.raises(TypeError, match=r"openai\.OpenAI"):
        instrument_openai(object())
    assert not is_instrumented(object())


# -- async ----------------------------------------------------------------------------


def test_async_calls_and_streams_are_budget_checked_and_accounted(fake: FakeOpenAI) -> None:
    fake.push(
        OpenAIReply(text="async hello", prompt_tokens=10, completion_tokens=3),
        OpenAIReply(text="async streamed answer", prompt_tokens=11, completion_tokens=4),
        OpenAIReply(text="one two three four five six"),
    )

    @steptrace.step(model="gpt-4o-mini", budget={"max_tokens": 600})
    async def work(client: openai.AsyncOpenAI) -> list[str]:
        texts = []
        completion = await client.chat.completions.create(  # type: ignore[call-overload]
            messages=HELLO, max_completion_tokens=100
        )
        texts.append(completion.choices[0].message.content)
        chunks = await client.chat.completions.create(  # type: ignore[call-overload]
            messages=HELLO, stream=True, max_completion_tokens=100
        )
        pieces = [c.choices[0].delta.content or "" async for c in chunks if c.choices]
        texts.append("".join(pieces))
        async with await client.chat.completions.create(  # type: ignore[call-overload]
            messages=HELLO, stream=True, max_completion_tokens=100
        ) as early:
            async for _chunk in early:
                break
        with pytest.raises(BudgetExhausted):
            await client.chat.completions.create(  # type: ignore[call-overload]
                messages=HELLO, max_completion_tokens=1000
            )
        return texts

    async def main() -> tuple[list[str], steptrace.Run]:
        client = instrument_openai(fake.async_client())
        try:
            with steptrace.run("r") as run:
                return await work(client), run
        finally:
            await client.close()

    texts, run = asyncio.run(main())
    assert texts == ["async hello", "async streamed answer"]
    assert len(fake.requests) == 3  # the refused call never left
    row = run.completed_steps[0]
    assert row.llm_calls == 3
    estimate = estimate_openai_input_tokens(HELLO)
    assert row.input_tokens == 10 + 11 + estimate
    assert row.output_tokens == 3 + 4 + 0  # the early close saw only the role chunk
    assert [e.input_tokens for e in run.events if isinstance(e, LlmCall)] == [10, 11, estimate]
    assert fake.requests[1]["stream_options"] == {"include_usage": True}


# -- reasoning tokens ---------------------------------------------------------------


def _ask(fake: FakeOpenAI, how: str) -> str:
    """One chat completion through an instrumented client, sync or async, whole
    or streamed; the answer's text."""
    if how in ("sync", "stream"):
        with instrument_openai(fake.client()) as client:
            if how == "sync":
                completion = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
                return str(completion.choices[0].message.content)
            chunks = client.chat.completions.create(
                model="gpt-4o-mini", messages=HELLO, stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    async def go() -> str:
        async with instrument_openai(fake.async_client()) as client:
            if how == "async":
                completion = await client.chat.completions.create(
                    model="gpt-4o-mini", messages=HELLO
                )
                return str(completion.choices[0].message.content)
            chunks = await client.chat.completions.create(
                model="gpt-4o-mini", messages=HELLO, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])

    return asyncio.run(go())


HOWS = ["sync", "stream", "async", "astream"]


@pytest.mark.parametrize("how", HOWS)
def test_reasoning_tokens_are_on_the_span_and_priced_as_the_output_they_are_part_of(
    fake: FakeOpenAI, how: str, collector: InMemorySpanCollector
) -> None:
    steptrace.configure(price_source=FakePrices(1.0, 2.0))
    fake.push(
        OpenAIReply(
            text="Hello!",
            prompt_tokens=1200,
            completion_tokens=300,
            cached_tokens=200,
            reasoning_tokens=120,
        )
    )
    with steptrace.run("r") as run:
        assert _ask(fake, how) == "Hello!"
    [llm_span] = llm_spans(collector)
    assert llm_span.metadata["steptrace.reasoning_tokens"] == 120
    assert llm_span.metadata["gen_ai.usage.output_tokens"] == 300
    usage = run.usage()
    assert (usage.input_tokens, usage.output_tokens, usage.llm_calls) == (1200, 300, 1)
    assert usage.cost_usd == pytest.approx((1200 * 1.0 + 300 * 2.0) / 1e6, rel=1e-12)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize(
    ("reasoning", "cached", "recorded"),
    [(500, 0, (40, 0)), (-5, -1, (0, 0)), ("many", "all", (0, 0)), (12.5, 250, (0, 100))],
)
def test_counts_from_a_hostile_server_are_capped_or_read_as_zero(
    fake: FakeOpenAI,
    how: str,
    collector: InMemorySpanCollector,
    reasoning: Any,
    cached: Any,
    recorded: tuple[int, int],
) -> None:
    steptrace.configure(price_source=FakePrices(1.0, 2.0))
    fake.push(OpenAIReply(text="Hello!", usage=hostile_openai_usage(reasoning, cached)))
    with steptrace.run("r") as run:  # strict: a failure of the accounting raises
        assert _ask(fake, how) == "Hello!"
    [llm_span] = llm_spans(collector)
    assert (
        llm_span.metadata["steptrace.reasoning_tokens"],
        llm_span.metadata["steptrace.cache_read_tokens"],
    ) == recorded
    usage = run.usage()
    assert (usage.input_tokens, usage.output_tokens, usage.llm_calls) == (100, 40, 1)
    assert usage.cost_usd == pytest.approx((100 * 1.0 + 40 * 2.0) / 1e6, rel=1e-12)


def _whole_usage(prompt: Any, completion: Any) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": 140}
    return {name: value for name, value in usage.items() if value is not None}


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize(
    ("prompt", "completion"),
    [
        ("12.5", 40),  # the SDK turns "100" and 100.0 into 100, not these
        (12.5, 40),
        (-5, 40),
        (100, 10**13),
        (100, None),
        ("many", [1]),
    ],
)
def test_whole_counts_that_are_not_counts_are_refused_and_the_call_still_recorded(
    fake: FakeOpenAI,
    how: str,
    collector: InMemorySpanCollector,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
    prompt: Any,
    completion: Any,
) -> None:
    """A misbehaving provider or proxy's ``prompt_tokens`` / ``completion_tokens``
    (text, a fraction, negative, past any real count) are refused, named on
    the span and in a warning, and estimated; the call is recorded, its budget
    hold settled and its span closed (in strict mode: nothing is raised)."""
    from steptrace.shared import RedisPool

    steptrace.configure(price_source=FakePrices(1.0, 2.0))
    fake.push(OpenAIReply(text="Hello!", usage=_whole_usage(prompt, completion)))
    pool = RedisPool(redis_url)
    budget = steptrace.SharedBudget(f"whole-{uuid.uuid4().hex}", max_tokens=10**6, pool=pool)
    try:
        with steptrace.run("r", budget=budget) as run:
            assert _ask(fake, how) == "Hello!"
            totals = budget.totals()
    finally:
        pool.close()
    good_prompt = type(prompt) is int and prompt >= 0
    good_completion = type(completion) is int and completion <= 10**12
    input_tokens = 100 if good_prompt else estimate_openai_input_tokens(HELLO)
    output_tokens = 40 if good_completion else -(-len("Hello!") // ESTIMATE_CHARS_PER_TOKEN)
    usage = run.usage()
    assert (usage.input_tokens, usage.output_tokens, usage.llm_calls) == (
        input_tokens,
        output_tokens,
        1,
    )
    assert (totals.tokens, totals.reserved_tokens) == (input_tokens + output_tokens, 0)
    [llm_span] = llm_spans(collector)
    assert llm_span.end_ns is not None
    refused = [
        f"{name}={value!r}"
        for name, value, good in (
            ("prompt_tokens", prompt, good_prompt),
            ("completion_tokens", completion, good_completion),
        )
        if not good and value is not None
    ]
    if completion == 10**13:
        refused = ["completion_tokens=1e+13"]
    assert llm_span.metadata.get("steptrace.usage_refused", []) == refused
    assert llm_span.metadata["steptrace.usage_estimated"] is True
    assert llm_span.metadata["gen_ai.usage.input_tokens"] == input_tokens
    [event] = [e for e in run.events if isinstance(e, LlmCall)]
    assert event.estimated
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert all(any(text in message for message in warned) for text in refused)
