"""instrument_anthropic on real anthropic SDK clients talking HTTP to the fake
Messages API: usage in the step's ledger, pre-flight refusal before sending,
spans and LlmCall events, streams (raw, closed early, messages.stream, async),
SDK errors passed through, uninstrument, and the input estimate."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

import steptrace
from steptrace import BudgetExhausted, InMemorySpanCollector, LlmCall, SpanKind
from steptrace.llm.anthropic.instrument import (
    ESTIMATE_IMAGE_TOKENS,
    estimate_anthropic_input_tokens,
    instrument_anthropic,
    uninstrument_anthropic,
)
from steptrace.testing import FakePrices, FakeServer
from steptrace.testing._fake_anthropic import (
    AnthropicErrorReply,
    AnthropicReply,
    AnthropicToolUse,
    FakeAnthropic,
)

MODEL = "claude-haiku-4-5"
HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer() as running:
        yield running


@pytest.fixture
def fake(server: FakeServer) -> Iterator[FakeAnthropic]:
    with FakeAnthropic(server=server) as fresh:
        yield fresh


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[Any]:
    """An instrumented ``anthropic.Anthropic``, typed ``Any`` because its create
    accepts calls without ``model`` (the step's), which the SDK's types do not."""
    with fake.client() as sdk_client:
        yield instrument_anthropic(sdk_client)


def llm_spans(collector: InMemorySpanCollector) -> list[steptrace.Span]:
    return [s for s in collector.spans if s.kind is SpanKind.LLM_CALL]


def test_a_call_is_accounted_traced_and_evented_in_the_active_step(
    fake: FakeAnthropic, client: Any, collector: InMemorySpanCollector
) -> None:
    prices = FakePrices()
    steptrace.configure(price_source=prices)
    fake.push(
        AnthropicReply(
            text="Hello!",
            input_tokens=10,
            output_tokens=3,
            cache_read_tokens=50,
            cache_write_tokens=7,
        )
    )

    @steptrace.step(model=MODEL, budget={"max_tokens": 10_000})
    def greet() -> Any:
        return client.messages.create(max_tokens=100, messages=HELLO)  # model from the step

    with steptrace.run("instrumented") as run:
        message = greet()

    assert message.content[0].text == "Hello!"
    assert fake.requests[0]["model"] == MODEL
    [row] = run.completed_steps
    assert (row.input_tokens, row.output_tokens, row.llm_calls) == (10 + 50 + 7, 3, 1)
    assert row.cost_usd == pytest.approx(70 / 1_000_000)
    assert prices.calls[-1] == (MODEL, 67, 3, 50, 7), "cache writes are priced as such"

    [event] = run.events
    assert isinstance(event, LlmCall)
    assert event == LlmCall(
        call_id=message.id,
        model=MODEL,
        input_tokens=67,
        output_tokens=3,
        cache_tokens=50,
        duration_ms=event.duration_ms,
        iteration=0,
    )

    [span] = llm_spans(collector)
    assert span.name == f"chat {MODEL}"
    assert span.status == "ok"
    assert span.parent_id == row.span_id
    assert span.metadata["gen_ai.system"] == "anthropic"
    assert span.metadata["gen_ai.request.model"] == MODEL
    assert span.metadata["gen_ai.request.max_tokens"] == 100
    assert span.metadata["gen_ai.response.id"] == message.id
    assert span.metadata["gen_ai.usage.input_tokens"] == 67
    assert span.metadata["gen_ai.usage.output_tokens"] == 3
    assert span.metadata["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert span.metadata["steptrace.cache_read_tokens"] == 50


@pytest.mark.parametrize("how", ["create", "create_stream", "stream_helper"])
def test_preflight_refusal_sends_no_request(fake: FakeAnthropic, client: Any, how: str) -> None:
    fake.push("never sent")

    @steptrace.step(model=MODEL, budget={"max_tokens": 500})
    def expensive() -> None:
        if how == "create":
            client.messages.create(max_tokens=1000, messages=HELLO)
        elif how == "create_stream":
            client.messages.create(max_tokens=1000, messages=HELLO, stream=True)
        else:
            client.messages.stream(max_tokens=1000, messages=HELLO)

    with pytest.raises(BudgetExhausted) as info:
        expensive()
    assert info.value.preflight
    assert info.value.limit == "max_tokens"
    assert fake.requests == []


def test_preflight_counts_the_prompt_estimate(fake: FakeAnthropic, client: Any) -> None:
    long_prompt = [{"role": "user", "content": "x" * 3000}]  # ~1000 estimated tokens

    @steptrace.step(model=MODEL, budget={"max_tokens": 1000})
    def big_prompt() -> None:
        client.messages.create(max_tokens=10, messages=long_prompt)

    with pytest.raises(BudgetExhausted, match="cannot afford"):
        big_prompt()
    assert fake.requests == []


def test_usage_over_budget_after_the_call_is_recorded_then_raised(
    fake: FakeAnthropic, client: Any
) -> None:
    fake.push(AnthropicReply(text="long answer", input_tokens=5, output_tokens=400))

    @steptrace.step(model=MODEL, budget={"max_tokens": 200})
    def overrun() -> None:
        client.messages.create(max_tokens=100, messages=HELLO)  # the fake ignores max_tokens

    with steptrace.run("overrun") as run, pytest.raises(BudgetExhausted) as info:
        overrun()
    assert not info.value.preflight
    [row] = run.completed_steps
    assert row.output_tokens == 400
    assert row.status == "failed"


def test_a_raw_stream_passes_events_through_and_is_accounted_at_its_end(
    fake: FakeAnthropic, client: Any, collector: InMemorySpanCollector
) -> None:
    fake.push(
        AnthropicReply(
            text="Streaming works fine.",
            tool_uses=[AnthropicToolUse(name="lookup", input={"q": "x"})],
            input_tokens=9,
            cache_read_tokens=20,
            delay=0.05,
        )
    )

    @steptrace.step(model=MODEL)
    def stream_it() -> list[str]:
        with client.messages.create(max_tokens=100, messages=HELLO, stream=True) as stream:
            assert stream.response.status_code == 200  # the SDK stream's attributes
            kinds = [event.type for event in stream]
        assert steptrace.current_step() is not None
        return kinds

    with steptrace.run("stream") as run:
        kinds = stream_it()

    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_delta" in kinds
    output = math.ceil((len("Streaming works fine.") + len("lookup") + len('{"q": "x"}')) / 4)
    [row] = run.completed_steps
    assert (row.input_tokens, row.output_tokens, row.llm_calls) == (29, output, 1)
    [event] = run.events
    assert isinstance(event, LlmCall)
    assert (event.input_tokens, event.output_tokens, event.cache_tokens) == (29, output, 20)
    [span] = llm_spans(collector)
    assert span.parent_id == row.span_id
    assert span.metadata["gen_ai.response.finish_reasons"] == ["tool_use"]
    duration_ms = span.duration_ms
    assert duration_ms is not None
    assert duration_ms >= 50, "the span is dated from the request, not from the stream's end"


def test_a_stream_closed_early_is_accounted_with_the_usage_so_far(
    fake: FakeAnthropic, client: Any
) -> None:
    fake.push(AnthropicReply(text="a b c d e f g h", input_tokens=11, output_tokens=8))

    @steptrace.step(model=MODEL)
    def peek() -> None:
        stream = client.messages.create(max_tokens=100, messages=HELLO, stream=True)
        first = next(iter(stream))
        assert first.type == "message_start"
        stream.close()
        stream.close()  # idempotent

    with steptrace.run("early") as run:
        peek()
    [row] = run.completed_steps
    assert (row.input_tokens, row.output_tokens, row.llm_calls) == (11, 1, 1)


def test_the_stream_helper_is_accounted(fake: FakeAnthropic, client: Any) -> None:
    fake.push(AnthropicReply(text="helper text", input_tokens=4, output_tokens=6))

    @steptrace.step(model=MODEL)
    def helper() -> str:
        with client.messages.stream(max_tokens=100, messages=HELLO) as stream:
            return "".join(stream.text_stream)

    with steptrace.run("helper") as run:
        assert helper() == "helper text"
    [row] = run.completed_steps
    assert (row.input_tokens, row.output_tokens, row.llm_calls) == (4, 6, 1)
    [event] = run.events
    assert isinstance(event, LlmCall)
    assert event.call_id.startswith("msg_")


def test_sdk_errors_pass_through_with_an_error_span_and_no_usage(
    fake: FakeAnthropic, client: Any, collector: InMemorySpanCollector
) -> None:
    fake.push(
        AnthropicErrorReply.rate_limited(retry_after=3),
        AnthropicErrorReply.overloaded(mid_stream=True),
    )

    @steptrace.step(model=MODEL)
    def failing() -> None:
        with pytest.raises(anthropic.RateLimitError):
            client.messages.create(max_tokens=100, messages=HELLO)
        with pytest.raises(anthropic.APIStatusError, match="overloaded"):
            for _ in client.messages.create(max_tokens=100, messages=HELLO, stream=True):
                pass

    with steptrace.run("errors") as run:
        failing()
    [row] = run.completed_steps
    # The stream failed after message_start: its prompt tokens were spent and count.
    assert row.llm_calls == 1
    assert row.output_tokens == 1
    refused, broken = llm_spans(collector)
    assert (refused.status, broken.status) == ("error", "error")
    assert [type(e) for e in run.events] == [LlmCall]


def test_async_client_create_stream_and_helper(fake: FakeAnthropic) -> None:
    fake.push(
        AnthropicReply(text="one", input_tokens=1, output_tokens=2),
        AnthropicReply(text="two", input_tokens=3, output_tokens=4),
        AnthropicReply(text="three", input_tokens=5, output_tokens=6),
        "refused before sending",
    )

    @steptrace.step(model=MODEL, budget={"max_tokens": 400})
    async def conversation() -> list[str]:
        async with fake.async_client() as sdk_client:
            client: Any = instrument_anthropic(sdk_client)
            texts = [(await client.messages.create(max_tokens=100, messages=HELLO)).content[0].text]
            stream = await client.messages.create(max_tokens=100, messages=HELLO, stream=True)
            async with stream:
                texts.append(
                    "".join(
                        [
                            event.delta.text
                            async for event in stream
                            if event.type == "content_block_delta"
                        ]
                    )
                )
            async with client.messages.stream(max_tokens=100, messages=HELLO) as helper:
                texts.append(await helper.get_final_text())
            with pytest.raises(BudgetExhausted):
                await client.messages.create(max_tokens=500, messages=HELLO)
            return texts

    with steptrace.run("async") as run:
        assert asyncio.run(conversation()) == ["one", "two", "three"]
    [row] = run.completed_steps
    assert (row.input_tokens, row.output_tokens, row.llm_calls) == (9, 12, 3)
    assert len(run.events) == 3
    assert len(fake.requests) == 3


def test_uninstrument_restores_and_both_are_idempotent(fake: FakeAnthropic) -> None:
    fake.push("counted", "not counted")
    with fake.client() as sdk_client, fake.client() as other:
        client: Any = sdk_client
        original = client.messages.create
        assert instrument_anthropic(instrument_anthropic(client)) is client
        assert "create" not in vars(other.messages), "only that instance is wrapped"

        @steptrace.step(model=MODEL)
        def twice() -> None:
            client.messages.create(max_tokens=10, messages=HELLO)
            uninstrument_anthropic(client)
            uninstrument_anthropic(client)
            client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)

        with steptrace.run("undo") as run:
            twice()
        assert client.messages.create == original
        assert "create" not in vars(client.messages)
    [row] = run.completed_steps
    assert row.llm_calls == 1, "instrumented twice still counts once; uninstrumented not at all"
    assert len(fake.requests) == 2


def test_the_generic_instrument_dispatches_to_anthropic(fake: FakeAnthropic) -> None:
    from steptrace.llm.instrument import instrument, uninstrument

    fake.push("hi")
    with fake.client() as client:
        instrument(client)
        with steptrace.run("generic") as run:
            client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        uninstrument(client)
        assert "create" not in vars(client.messages)
    assert len(run.events) == 1


def test_a_call_without_model_outside_a_step_fails_in_the_sdk_unsent(
    fake: FakeAnthropic, client: Any
) -> None:
    with pytest.raises(TypeError, match="model"):
        client.messages.create(max_tokens=10, messages=HELLO)
    assert fake.requests == []


def test_instrumenting_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="anthropic client"):
        instrument_anthropic(object())


# -- the pre-flight estimate -------------------------------------------------------------


def test_estimate_is_a_conservative_bound_from_the_text() -> None:
    params = {
        "system": "You are terse.",  # 14 characters
        "messages": [
            {"role": "user", "content": "What is 2+2?"},  # 12
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me add."},  # 11
                    {"type": "tool_use", "id": "t1", "name": "add", "input": {"a": 2}},  # 3 + 8
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "4"}],  # 1
            },
        ],
    }
    assert estimate_anthropic_input_tokens(params) == math.ceil(49 / 3) + 4 * 3
    with_image = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "data": "A" * 100_000}},
                ],
            }
        ]
    }
    assert estimate_anthropic_input_tokens(with_image) == ESTIMATE_IMAGE_TOKENS + 4


def test_estimate_accepts_sdk_content_blocks_sent_back(fake: FakeAnthropic, client: Any) -> None:
    fake.push(AnthropicReply(text="Checking.", tool_uses=[AnthropicToolUse(name="add")]))
    reply = client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    history = [*HELLO, {"role": "assistant", "content": reply.content}]
    assert estimate_anthropic_input_tokens({"messages": history}) == (
        math.ceil((len("Say hello.") + len("Checking.") + len("add") + len("{}")) / 3) + 8
    )


# -- thinking tokens ----------------------------------------------------------------


def _ask(fake: FakeAnthropic, how: str) -> str:
    """One message through an instrumented client, sync or async, whole or
    streamed (``stream=True``, or the SDK's ``messages.stream`` helper)."""
    options: dict[str, Any] = {"model": MODEL, "max_tokens": 400, "messages": HELLO}
    if not how.startswith("a"):
        with fake.client() as sdk_client:
            client: Any = instrument_anthropic(sdk_client)
            if how == "sync":
                return str(client.messages.create(**options).content[0].text)
            if how == "helper":
                with client.messages.stream(**options) as helper:
                    return str(helper.get_final_text())
            with client.messages.create(**options, stream=True) as stream:
                return "".join(e.delta.text for e in stream if e.type == "content_block_delta")

    async def go() -> str:
        async with fake.async_client() as sdk_client:
            client: Any = instrument_anthropic(sdk_client)
            if how == "async":
                return str((await client.messages.create(**options)).content[0].text)
            stream = await client.messages.create(**options, stream=True)
            async with stream:
                deltas = [e.delta.text async for e in stream if e.type == "content_block_delta"]
            return "".join(deltas)

    return asyncio.run(go())


def _usage(thinking: Any, output: int = 300) -> dict[str, Any]:
    """Usage as the Messages API sends it, thinking tokens part of the output."""
    return {
        "input_tokens": 1000,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 200,
        "output_tokens": output,
        "output_tokens_details": {"thinking_tokens": thinking},
    }


# The SDK's stream helper serializes what it did not validate (``"many"``): pydantic warns.
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
@pytest.mark.parametrize("how", ["sync", "stream", "helper", "async", "astream"])
@pytest.mark.parametrize(
    ("thinking", "recorded"), [(120, 120), (500, 300), (-5, 0), ("many", 0), (None, 0)]
)
def test_thinking_tokens_are_the_spans_reasoning_tokens_part_of_the_output(
    fake: FakeAnthropic, collector: InMemorySpanCollector, how: str, thinking: Any, recorded: int
) -> None:
    steptrace.configure(price_source=FakePrices(1.0, 2.0))
    fake.push(AnthropicReply(text="Hello!", usage=_usage(thinking)))
    with steptrace.run("thinking") as run:  # strict: a failure of the accounting raises
        assert _ask(fake, how) == "Hello!"
    [span] = llm_spans(collector)
    assert span.metadata["steptrace.reasoning_tokens"] == recorded
    usage = run.usage()
    assert (usage.input_tokens, usage.output_tokens, usage.llm_calls) == (1200, 300, 1)
    assert usage.cost_usd == pytest.approx((1200 * 1.0 + 300 * 2.0) / 1e6, rel=1e-12)
