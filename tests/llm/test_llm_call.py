"""llm_call on the scripted provider: model and provider resolution, accounting,
pre-flight refusal, retries, streaming, spans and events."""

from __future__ import annotations

import asyncio
import logging

import pytest

import steptrace
from steptrace import BudgetExhausted, LlmCall, SpanKind, llm
from steptrace.llm import (
    BadRequest,
    LlmRequest,
    NoProviderConfigured,
    RateLimited,
    ToolCall,
    llm_call,
)
from steptrace.testing import FakePrices, ScriptedProvider, count_tokens


def test_the_active_steps_model_is_the_default_and_usage_lands_in_its_ledger_row() -> None:
    provider = ScriptedProvider(["Paris is the capital of France."])
    steptrace.configure(price_source=FakePrices(output_per_million=2.0))

    @steptrace.step(model="gpt-4o-mini")
    def ask() -> llm.LlmResult:
        return llm_call("What is the capital of France?", provider=provider)

    with steptrace.run("r") as run:
        result = ask()
    assert provider.requests[0].model == "gpt-4o-mini"
    assert result.text == "Paris is the capital of France."
    assert result.output_tokens == count_tokens(result.text)
    row = run.completed_steps[0]
    assert (row.input_tokens, row.output_tokens) == (result.input_tokens, result.output_tokens)
    assert row.llm_calls == 1
    assert row.model == "gpt-4o-mini"
    expected_cost = (result.input_tokens + 2 * result.output_tokens) / 1_000_000
    assert result.cost_usd == pytest.approx(expected_cost)
    assert row.cost_usd == pytest.approx(expected_cost)
    [event] = run.events
    assert isinstance(event, LlmCall)
    assert (event.model, event.input_tokens, event.output_tokens) == (
        "gpt-4o-mini",
        result.input_tokens,
        result.output_tokens,
    )


def test_explicit_model_beats_the_step_and_the_configured_default_fills_in() -> None:
    provider = ScriptedProvider(["a", "b"])
    llm.configure(default_model="claude-haiku-4-5", provider=provider)

    @steptrace.step(model="gpt-4o-mini")
    def ask() -> None:
        llm_call("x", model="gpt-4o")

    ask()
    llm_call("y")
    assert [r.model for r in provider.requests] == ["gpt-4o", "claude-haiku-4-5"]


def test_no_model_anywhere_is_a_clear_error() -> None:
    with pytest.raises(NoProviderConfigured, match="no model"):
        llm_call("x", provider=ScriptedProvider(["a"]))


def test_no_provider_and_no_key_says_how_to_configure_one() -> None:
    with pytest.raises(NoProviderConfigured) as caught:
        llm_call("x", model="gpt-4o")
    message = str(caught.value)
    assert "OPENAI_API_KEY" in message
    assert "ScriptedProvider" in message
    with pytest.raises(NoProviderConfigured, match="no provider for model 'mystery-7b'"):
        llm_call("x", model="mystery-7b")


def test_a_provider_prefix_selects_a_registered_provider_and_is_stripped() -> None:
    local = ScriptedProvider(["hi"], name="local")
    llm.configure(providers={"local": local})
    result = llm_call("x", model="local:llama3")
    assert local.requests[0].model == "llama3"
    assert result.provider == "local"
    with pytest.raises(NoProviderConfigured, match="unknown provider 'nope'"):
        llm_call("x", model="y", provider="nope")


def test_preflight_refusal_sends_nothing_and_counts_nothing() -> None:
    provider = ScriptedProvider(["never sent"])

    @steptrace.step(model="m", budget={"max_tokens": 500})
    def ask() -> None:
        llm_call("word " * 400, provider=provider, max_tokens=100)

    with steptrace.run() as run, pytest.raises(BudgetExhausted) as caught:
        ask()
    assert caught.value.preflight
    assert provider.requests == []
    assert run.completed_steps[0].llm_calls == 0
    assert run.events == []


def test_a_call_without_max_tokens_is_checked_against_the_default_output_bound() -> None:
    provider = ScriptedProvider(["x"])

    @steptrace.step(model="m", budget={"max_tokens": llm.DEFAULT_MAX_OUTPUT_TOKENS})
    def ask() -> None:
        llm_call("hello", provider=provider)

    with pytest.raises(BudgetExhausted, match="worst case"):
        ask()
    assert provider.requests == []


def test_retryable_errors_are_retried_and_each_request_is_a_span(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = ScriptedProvider(
        [RateLimited("slow down", provider="scripted", retry_after=0.0), "done"]
    )
    with steptrace.run() as run, caplog.at_level(logging.INFO, logger="steptrace"):
        result = llm_call("x", model="m", provider=provider)
    assert result.text == "done"
    requests = [s for s in run.spans if s.kind is SpanKind.LLM_CALL]
    assert [s.status for s in requests] == ["error", "ok"]
    assert requests[0].error == "RateLimited: slow down"
    assert requests[1].metadata["gen_ai.request.model"] == "m"
    assert requests[1].metadata["gen_ai.usage.output_tokens"] == result.output_tokens
    assert all(s.parent_id == run.root.span_id for s in requests)
    assert "retry 1 of 2" in caplog.text
    assert run.usage().llm_calls == 1  # a failed request costs nothing


def test_non_retryable_errors_and_exhausted_retries_propagate() -> None:
    bad = ScriptedProvider([BadRequest("no such model", provider="scripted"), "unused"])
    with pytest.raises(BadRequest):
        llm_call("x", model="m", provider=bad)
    assert len(bad.requests) == 1
    limited = ScriptedProvider([RateLimited("busy", provider="scripted")] * 3)
    with pytest.raises(RateLimited):
        llm_call("x", model="m", provider=limited)
    assert len(limited.requests) == 3  # the first try and two retries


def test_streaming_hands_each_delta_to_the_callback() -> None:
    text = "A streamed answer that is long enough to arrive in several pieces."
    pieces: list[str] = []
    provider = ScriptedProvider([text])
    result = llm_call("x", model="m", provider=provider, on_text=pieces.append)
    assert len(pieces) > 1
    assert "".join(pieces) == text == result.text
    assert provider.requests[0].stream


def test_tools_and_tool_calls_pass_through() -> None:
    call = ToolCall(id="t1", name="search", arguments={"q": "x"}, raw_arguments='{"q": "x"}')
    provider = ScriptedProvider([[call]])
    tool = {"name": "search", "description": "Search", "parameters": {"type": "object"}}
    result = llm_call("find x", model="m", provider=provider, tools=[tool])
    assert result.tool_calls == (call,)
    assert provider.requests[0].tools[0].name == "search"
    with pytest.raises(TypeError, match=r"tools\[0\]"):
        llm_call("x", model="m", provider=provider, tools=[42])  # type: ignore[list-item]


def test_messages_system_and_prompt_are_sent_in_order() -> None:
    seen: list[LlmRequest] = []

    def answer(request: LlmRequest) -> str:
        seen.append(request)
        return "ok"

    llm_call(
        "last",
        "be brief",
        model="m",
        provider=ScriptedProvider(answer),
        messages=[{"role": "user", "content": "first"}, {"role": "assistant", "content": "mid"}],
    )
    assert [(m.role, m.content) for m in seen[0].messages] == [
        ("system", "be brief"),
        ("user", "first"),
        ("assistant", "mid"),
        ("user", "last"),
    ]


def test_bad_arguments_name_what_was_wrong() -> None:
    provider = ScriptedProvider(["x"])
    with pytest.raises(ValueError, match="nothing to send"):
        llm_call(model="m", provider=provider)
    with pytest.raises(ValueError, match="max_tokens must be a positive int"):
        llm_call("x", model="m", provider=provider, max_tokens=0)
    with pytest.raises(ValueError, match=r"messages\[0\]: role"):
        llm_call(model="m", provider=provider, messages=[{"role": "robot", "content": "x"}])


def test_async_twin_accounts_the_same_way() -> None:
    provider = ScriptedProvider([RateLimited("busy", provider="scripted"), "async answer"])

    @steptrace.step(model="m")
    async def ask() -> llm.LlmResult:
        return await llm.allm_call("x", provider=provider)

    async def main() -> tuple[llm.LlmResult, steptrace.Run]:
        async with steptrace.run() as run:
            return await ask(), run

    result, run = asyncio.run(main())
    assert result.text == "async answer"
    assert run.completed_steps[0].output_tokens == result.output_tokens
    assert len(provider.requests) == 2
