"""llm_call through the official SDKs' real HTTP code paths to the fake servers:
accounting, pre-flight refusal, schema retries, retries of rate limits, and a
recorded run replayed with the network (loopback included) refused."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest

import steptrace
from steptrace import BudgetExhausted, SchemaRetry, SpanKind, llm
from steptrace.llm import AnthropicProvider, OpenAIProvider
from steptrace.testing import (
    AnthropicReply,
    FakeAnthropic,
    FakeOpenAI,
    FakePrices,
    OpenAIErrorReply,
    OpenAIReply,
)


class Answer(pydantic.BaseModel):
    city: str
    confidence: float


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def openai_provider(fake_openai: FakeOpenAI) -> Iterator[OpenAIProvider]:
    with fake_openai.client() as client:
        yield OpenAIProvider(client=client)


def test_usage_from_the_sdk_lands_in_the_step_and_is_priced(
    fake_openai: FakeOpenAI, openai_provider: OpenAIProvider
) -> None:
    fake_openai.push(OpenAIReply(text="Paris.", prompt_tokens=812, completion_tokens=3))
    provider = openai_provider
    steptrace.configure(price_source=llm.PriceTable())

    @steptrace.step(model="gpt-4o-mini", budget={"max_usd": 0.01})
    def ask() -> llm.LlmResult:
        return llm.llm_call("Capital of France?", provider=provider, max_tokens=20)

    with steptrace.run() as run:
        result = ask()
    row = run.completed_steps[0]
    assert (row.input_tokens, row.output_tokens, row.llm_calls) == (812, 3, 1)
    expected = llm.PriceTable().cost_usd("gpt-4o-mini", 812, 3)
    assert expected is not None
    assert expected > 0
    assert row.cost_usd == pytest.approx(expected)
    assert result.cost_usd == pytest.approx(expected)
    sent = fake_openai.requests[0]
    assert sent["model"] == "gpt-4o-mini"
    assert sent["max_completion_tokens"] == 20


def test_preflight_refusal_sends_no_http_request(
    fake_openai: FakeOpenAI, openai_provider: OpenAIProvider
) -> None:
    provider = openai_provider

    @steptrace.step(model="gpt-4o-mini", budget={"max_tokens": 50})
    def ask() -> None:
        llm.llm_call("Tell me everything. " * 20, provider=provider, max_tokens=40)

    with pytest.raises(BudgetExhausted, match="cannot afford"):
        ask()
    assert fake_openai.requests == []


def test_schema_retries_and_rate_limit_retries_over_http(
    fake_openai: FakeOpenAI, openai_provider: OpenAIProvider
) -> None:
    fake_openai.push(
        OpenAIErrorReply.rate_limited(retry_after=0),
        OpenAIReply(text="It is Paris, surely."),
        OpenAIReply.json({"city": "Paris", "confidence": 0.97}),
    )
    provider = openai_provider
    with steptrace.run() as run:
        result = llm.llm_call(
            "Which city?", model="gpt-4o", provider=provider, output_schema=Answer
        )
    assert result.data == Answer(city="Paris", confidence=0.97)
    assert result.attempts == 2
    assert len(fake_openai.requests) == 3
    assert fake_openai.requests[0]["response_format"]["type"] == "json_schema"
    assert [type(e).__name__ for e in run.events] == ["LlmCall", "SchemaRetry", "LlmCall"]
    retry = run.events[1]
    assert isinstance(retry, SchemaRetry)
    assert retry.attempt == 1
    chat_spans = [s for s in run.spans if s.name == "chat gpt-4o"]
    assert [s.status for s in chat_spans] == ["error", "ok", "ok"]


def test_anthropic_over_http_counts_cached_prompt_tokens_as_input() -> None:
    reply = AnthropicReply(text="Bonjour.", input_tokens=20, cache_read_tokens=1000)
    with FakeAnthropic([reply]) as fake, fake.client() as client:
        provider = AnthropicProvider(client=client)
        with steptrace.run() as run:
            result = llm.llm_call(
                "Say hello in French", model="claude-haiku-4-5", provider=provider
            )
    assert result.text == "Bonjour."
    assert result.input_tokens == 1020
    assert result.cache_tokens == 1000
    assert run.usage().input_tokens == 1020


def _llm_call(provider: Any, model: str, how: str) -> str:
    """``llm_call`` / ``allm_call``, whole or streamed (``on_text``)."""
    pieces: list[str] = []
    options: dict[str, Any] = {"model": model, "provider": provider, "max_tokens": 400}
    if how.endswith("stream"):
        options["on_text"] = pieces.append
    if how.startswith("a"):

        async def go() -> llm.LlmResult:
            try:
                return await llm.allm_call("Say hello.", **options)
            finally:
                await provider.aclose()  # the client of this loop

        result = asyncio.run(go())
    else:
        result = llm.llm_call("Say hello.", **options)
    assert "".join(pieces) == (result.text if pieces else "")
    return result.text


@pytest.mark.parametrize("how", ["sync", "stream", "async", "astream"])
def test_openai_reasoning_tokens_are_on_the_span_and_priced_as_output(
    fake_openai: FakeOpenAI, how: str
) -> None:
    steptrace.configure(price_source=FakePrices(1.0, 2.0))
    fake_openai.push(
        OpenAIReply(text="Hello!", prompt_tokens=1200, completion_tokens=300, reasoning_tokens=120)
    )
    provider = OpenAIProvider(api_key=fake_openai.api_key, base_url=fake_openai.base_url)
    try:
        with steptrace.run() as run:
            assert _llm_call(provider, "gpt-4o-mini", how) == "Hello!"
    finally:
        provider.close()
    (span,) = [s for s in run.spans if s.kind is SpanKind.LLM_CALL]
    assert span.metadata["steptrace.reasoning_tokens"] == 120
    usage = run.usage()
    assert (usage.input_tokens, usage.output_tokens, usage.llm_calls) == (1200, 300, 1)
    assert usage.cost_usd == pytest.approx((1200 * 1.0 + 300 * 2.0) / 1e6, rel=1e-12)


@pytest.mark.parametrize("how", ["sync", "stream", "async", "astream"])
@pytest.mark.parametrize(("thinking", "recorded"), [(120, 120), (500, 300), ("many", 0)])
def test_anthropic_thinking_tokens_are_the_spans_reasoning_tokens(
    how: str, thinking: Any, recorded: int
) -> None:
    steptrace.configure(price_source=FakePrices(1.0, 2.0))
    usage = {
        "input_tokens": 1000,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 200,
        "output_tokens": 300,
        "output_tokens_details": {"thinking_tokens": thinking},
    }
    with FakeAnthropic([AnthropicReply(text="Hello!", usage=usage)]) as fake:
        provider = AnthropicProvider(api_key=fake.api_key, base_url=fake.url)
        try:
            with steptrace.run() as run:
                assert _llm_call(provider, "claude-haiku-4-5", how) == "Hello!"
        finally:
            provider.close()
    (span,) = [s for s in run.spans if s.kind is SpanKind.LLM_CALL]
    assert span.metadata["steptrace.reasoning_tokens"] == recorded
    assert "steptrace.usage_estimated" not in span.metadata
    totals = run.usage()
    assert (totals.input_tokens, totals.output_tokens, totals.llm_calls) == (1200, 300, 1)
    assert totals.cost_usd == pytest.approx((1200 * 1.0 + 300 * 2.0) / 1e6, rel=1e-12)


def test_a_recorded_run_replays_offline(
    tmp_path: Path, fake_openai: FakeOpenAI, openai_provider: OpenAIProvider
) -> None:
    cassette = tmp_path / "run.jsonl"
    fake_openai.push(OpenAIReply(text="first"), OpenAIReply(text="second"))
    live = llm.RecordingProvider(openai_provider, cassette)

    def pipeline(provider: Any) -> list[str]:
        with steptrace.run():
            return [
                llm.llm_call(q, model="gpt-4o-mini", provider=provider).text
                for q in ("one?", "two?")
            ]

    recorded = pipeline(live)
    header = json.loads(cassette.read_text().splitlines()[0])
    assert header["steptrace_cassette"] == 1

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("replay touched the network")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        replayed = pipeline(llm.ReplayProvider(cassette))
    assert replayed == recorded == ["first", "second"]
    assert len(fake_openai.requests) == 2
