"""steptrace.integrations.litellm against the real LiteLLM, which talks through
the official OpenAI/Anthropic SDKs to the fake servers on 127.0.0.1: what
arrives at the server (nothing when refused), exact tokens and cost, events
and spans, every boundary, sync/async/streaming/Router, parallel tool calls,
and LiteLLM unchanged when instrumented with no steptrace scope."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import pytest
from hypothesis import given
from hypothesis import strategies as st
from litellm.integrations.custom_logger import CustomLogger
from litellm.router import Router

import steptrace
from steptrace import BudgetExhausted, LlmCall, PricingUnknown, SpanKind
from steptrace.integrations import litellm as st_litellm
from steptrace.llm.prices import ModelPrice, PriceTable
from steptrace.testing import (
    AnthropicReply,
    FakeAnthropic,
    FakeOpenAI,
    FakeServer,
    OpenAIErrorReply,
    OpenAIReply,
    OpenAIToolCall,
)

# LiteLLM's own warnings (warnings are errors in this suite): its Router builds a
# pydantic schema for a TypedDict with ReadOnly items; its stream handler reads
# a pydantic attribute pydantic deprecated.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Item.*ReadOnly.* qualifier:UserWarning"),
    pytest.mark.filterwarnings("ignore:Accessing the 'model_:DeprecationWarning"),
]

HELLO: list[dict[str, Any]] = [{"role": "user", "content": "Say hello."}]
# The price steptrace's source gives gpt-4o-mini here: not LiteLLM's map.
PRICES = PriceTable(overrides={"openai:gpt-4o-mini": ModelPrice(1.0, 2.0, 0.5)})


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server


@pytest.fixture
def fake(shared_server: FakeServer) -> Iterator[FakeOpenAI]:
    shared_server.requests.clear()
    with FakeOpenAI(server=shared_server) as server:
        yield server


@pytest.fixture
def instrumented() -> Iterator[None]:
    steptrace.configure(price_source=PRICES)
    st_litellm.instrument()
    yield
    st_litellm.uninstrument()


def options(fake: FakeOpenAI) -> dict[str, Any]:
    return {"api_base": fake.base_url, "api_key": fake.api_key, "num_retries": 0}


def router(fake: FakeOpenAI) -> Any:
    params = {"model": "openai/gpt-4o-mini", "api_base": fake.base_url, "api_key": fake.api_key}
    return Router(model_list=[{"model_name": "fast", "litellm_params": params}], num_retries=0)


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# Every way of calling: each returns the answer's text.
def call_sync(fake: FakeOpenAI, **kw: Any) -> str:
    response = litellm.completion(model="openai/gpt-4o-mini", **options(fake), **kw)
    return str(response.choices[0].message.content or "")


def call_async(fake: FakeOpenAI, **kw: Any) -> str:
    async def go() -> str:
        response = await litellm.acompletion(model="openai/gpt-4o-mini", **options(fake), **kw)
        return str(response.choices[0].message.content or "")

    return asyncio.run(go())


def call_stream(fake: FakeOpenAI, **kw: Any) -> str:
    stream = litellm.completion(model="gpt-4o-mini", stream=True, **options(fake), **kw)
    return text_of(list(stream))


def call_astream(fake: FakeOpenAI, **kw: Any) -> str:
    async def go() -> str:
        stream = await litellm.acompletion(
            model="openai/gpt-4o-mini", stream=True, **options(fake), **kw
        )
        return text_of([chunk async for chunk in stream])

    return asyncio.run(go())


def call_router(fake: FakeOpenAI, **kw: Any) -> str:
    response: Any = router(fake).completion(model="fast", **kw)
    return str(response.choices[0].message.content or "")


def call_arouter(fake: FakeOpenAI, **kw: Any) -> str:
    async def go() -> str:
        response = await router(fake).acompletion(model="fast", **kw)
        return str(response.choices[0].message.content or "")

    return asyncio.run(go())


def call_router_stream(fake: FakeOpenAI, **kw: Any) -> str:
    return text_of(list(router(fake).completion(model="fast", stream=True, **kw)))


CALLS: dict[str, Callable[..., str]] = {
    "sync": call_sync,
    "async": call_async,
    "stream": call_stream,
    "astream": call_astream,
    "router": call_router,
    "arouter": call_arouter,
    "router_stream": call_router_stream,
}


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("how", sorted(CALLS))
def test_a_request_that_cannot_fit_is_never_sent(fake: FakeOpenAI, how: str) -> None:
    @steptrace.step(budget={"max_tokens": 100})
    def ask() -> str:
        return CALLS[how](fake, messages=HELLO, max_tokens=200)

    with pytest.raises(BudgetExhausted) as info:
        ask()
    assert info.value.preflight is True
    assert info.value.projected == 4 + 4 + 200  # "Say hello." and one message, plus max_tokens
    assert fake.requests == []


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("how", sorted(CALLS))
def test_exact_tokens_and_cost_from_the_usage_litellm_reports(fake: FakeOpenAI, how: str) -> None:
    fake.push(
        OpenAIReply(
            text="Hello!",
            prompt_tokens=1200,
            completion_tokens=300,
            cached_tokens=200,
            reasoning_tokens=120,
        )
    )

    @steptrace.step(budget={"max_usd": 1.0})
    def ask() -> str:
        return CALLS[how](fake, messages=HELLO)

    with steptrace.run("litellm") as run:
        assert ask() == "Hello!"
    (row,) = run.completed_steps
    assert (row.input_tokens, row.output_tokens, row.llm_calls) == (1200, 300, 1)
    # 1,000 plain input at $1/M, 200 cached at $0.5/M, 300 output (120 of them
    # reasoning, billed as output) at $2/M.
    assert row.cost_usd == pytest.approx((1000 * 1.0 + 200 * 0.5 + 300 * 2.0) / 1e6, rel=1e-12)
    (span,) = [s for s in run.spans if s.kind is SpanKind.LLM_CALL]
    assert span.metadata["steptrace.reasoning_tokens"] == 120
    assert span.metadata["gen_ai.usage.output_tokens"] == 300
    (event,) = run.events
    assert isinstance(event, LlmCall)
    assert (event.model, event.input_tokens, event.output_tokens, event.cache_tokens) == (
        "openai:gpt-4o-mini",
        1200,
        300,
        200,
    )
    assert event.call_id.startswith("chatcmpl-fake")
    assert len(fake.requests) == 1


@pytest.mark.usefixtures("instrumented")
def test_events_and_spans_in_order_under_the_step(fake: FakeOpenAI) -> None:
    fake.push("one", "two")

    @steptrace.step
    def ask_twice() -> list[str]:
        return [call_sync(fake, messages=HELLO), call_stream(fake, messages=HELLO)]

    with steptrace.run("litellm") as run:
        assert ask_twice() == ["one", "two"]
    ids = [e.call_id for e in run.events if isinstance(e, LlmCall)]
    assert len(ids) == 2
    assert len(run.events) == 2
    assert ids[0] < ids[1]  # the fake numbers its answers
    step_span = next(s for s in run.spans if s.name == "ask_twice")
    calls = [s for s in run.spans if s.kind is SpanKind.LLM_CALL]
    assert [s.name for s in calls] == ["chat openai:gpt-4o-mini"] * 2
    assert all(s.parent_id == step_span.span_id and s.status == "ok" for s in calls)
    assert calls[0].metadata["gen_ai.request.model"] == "openai/gpt-4o-mini"
    assert calls[1].metadata["gen_ai.request.model"] == "gpt-4o-mini"
    assert [s.metadata["gen_ai.response.id"] for s in calls] == ids


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("boundary", ["continue", "escalate", "fail"])
def test_each_boundary_after_a_refusal(fake: FakeOpenAI, boundary: str) -> None:
    fake.push(OpenAIReply(text="first", prompt_tokens=40, completion_tokens=20))

    @steptrace.step(budget={"max_tokens": 100}, error_boundary=boundary)
    def ask_twice() -> str:
        call_sync(fake, messages=HELLO, max_tokens=30)  # 4 + 4 + 30 fits in 100
        return call_sync(fake, messages=HELLO, max_tokens=50)  # 60 used + 58 does not

    with steptrace.run("litellm") as run:
        if boundary == "continue":
            assert ask_twice() is None
        else:
            with pytest.raises(BudgetExhausted) as info:
                ask_twice()
            assert info.value.escalated is (boundary == "escalate")
    status = {"continue": "skipped", "escalate": "escalated", "fail": "failed"}[boundary]
    (row,) = run.completed_steps
    assert (row.status, row.input_tokens, row.output_tokens) == (status, 40, 20)
    assert len(fake.requests) == 1


@pytest.mark.usefixtures("instrumented")
def test_parallel_tool_calls_pass_through_and_concurrent_requests_add_up(fake: FakeOpenAI) -> None:
    calls = [
        OpenAIToolCall(name="lookup", arguments={"q": "a"}, id="call_a"),
        OpenAIToolCall(name="lookup", arguments={"q": "b"}, id="call_b"),
    ]
    fake.push(*(OpenAIReply(tool_calls=calls, prompt_tokens=50, completion_tokens=10),) * 4)

    @steptrace.step(budget={"max_tokens": 10_000})
    async def fan_out() -> list[Any]:
        return await asyncio.gather(
            *(
                litellm.acompletion(
                    model="openai/gpt-4o-mini", messages=HELLO, max_tokens=100, **options(fake)
                )
                for _ in range(4)
            )
        )

    with steptrace.run("litellm") as run:
        responses = asyncio.run(fan_out())
    for response in responses:
        assert [c.id for c in response.choices[0].message.tool_calls] == ["call_a", "call_b"]
    (row,) = run.completed_steps
    assert (row.input_tokens, row.output_tokens, row.llm_calls) == (200, 40, 4)
    assert len(fake.requests) == 4


@pytest.mark.usefixtures("instrumented")
def test_requests_in_flight_hold_their_worst_case(fake: FakeOpenAI) -> None:
    fake.push(*(OpenAIReply(text="ok", prompt_tokens=8, completion_tokens=2),) * 2)

    @steptrace.step(budget={"max_tokens": 300})
    async def fan_out() -> list[Any]:
        # Each worst case is 8 + 100: two fit beside each other, a third does not.
        return await asyncio.gather(
            *(
                litellm.acompletion(
                    model="openai/gpt-4o-mini", messages=HELLO, max_tokens=100, **options(fake)
                )
                for _ in range(3)
            ),
            return_exceptions=True,
        )

    with steptrace.run("litellm") as run:
        results = asyncio.run(fan_out())
    refused = [r for r in results if isinstance(r, BudgetExhausted)]
    assert len(refused) == 1
    assert refused[0].preflight is True
    assert len(fake.requests) == 2
    (row,) = run.completed_steps
    assert (row.input_tokens, row.output_tokens, row.llm_calls) == (16, 4, 2)


@pytest.mark.parametrize("how", sorted(CALLS))
def test_instrumented_without_a_scope_litellm_behaves_as_before(fake: FakeOpenAI, how: str) -> None:
    steptrace.configure(price_source=PRICES)
    fake.push("Plain answer.")
    before = CALLS[how](fake, messages=HELLO)
    plain = list(fake.requests)
    st_litellm.instrument()
    try:
        fake.push("Plain answer.")
        after = CALLS[how](fake, messages=HELLO)
    finally:
        st_litellm.uninstrument()
    assert before == after == "Plain answer."
    assert len(fake.requests) == 2
    sent = dict(fake.requests[1])
    if "stream" in how:  # steptrace asks for the usage chunk, and keeps it from the caller
        assert sent.pop("stream_options") == {"include_usage": True}
    assert sent == plain[0]


@pytest.mark.usefixtures("instrumented")
def test_a_stream_shows_the_caller_the_same_chunks(fake: FakeOpenAI) -> None:
    fake.push("Hello there, friend.", "Hello there, friend.")
    plain = list(
        litellm.completion(model="gpt-4o-mini", messages=HELLO, stream=True, **options(fake))
    )
    asked = list(
        litellm.completion(
            model="gpt-4o-mini",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
            **options(fake),
        )
    )
    assert all(getattr(c, "usage", None) is None for c in plain)
    assert len(asked) == len(plain) + 1
    assert asked[-1].usage.completion_tokens > 0


@pytest.mark.usefixtures("instrumented")
def test_provider_prefixes_are_priced_as_the_model_they_name(fake: FakeOpenAI) -> None:
    steptrace.configure(price_source=PriceTable())  # genai-prices' own table
    fake.push(*(OpenAIReply(text="x", prompt_tokens=1000, completion_tokens=500),) * 2)
    with steptrace.run("litellm") as run:
        litellm.completion(model="openai/gpt-4o-mini", messages=HELLO, **options(fake))
        litellm.completion(model="gpt-4o-mini", messages=HELLO, **options(fake))
    costs = [s.metadata["steptrace.cost_usd"] for s in run.spans if s.kind is SpanKind.LLM_CALL]
    expected = PriceTable().cost_usd("gpt-4o-mini", 1000, 500)
    assert expected is not None
    assert expected > 0
    assert costs == [pytest.approx(expected, rel=1e-12)] * 2
    assert st_litellm.steptrace_model("anthropic/claude-haiku-4-5") == "anthropic:claude-haiku-4-5"


@pytest.mark.usefixtures("instrumented")
def test_a_provider_the_price_table_does_not_know_is_refused_under_a_usd_budget(
    fake: FakeOpenAI,
) -> None:
    @steptrace.step(budget={"max_usd": 1.0})
    def ask() -> Any:
        return litellm.completion(model="hosted_vllm/my-llama", messages=HELLO, **options(fake))

    with pytest.raises(PricingUnknown):
        ask()
    assert fake.requests == []


def test_litellm_prices_only_when_asked(fake: FakeOpenAI) -> None:
    steptrace.configure(price_source=PRICES)
    st_litellm.instrument(prices="litellm")
    try:
        fake.push(OpenAIReply(text="x", prompt_tokens=1000, completion_tokens=500))
        with steptrace.run("litellm") as run:
            call_sync(fake, messages=HELLO)
    finally:
        st_litellm.uninstrument()
    prompt, completion = litellm.cost_per_token(
        model="openai/gpt-4o-mini", prompt_tokens=1000, completion_tokens=500
    )
    assert run.completed_steps == []
    assert run.summary()["cost_usd"] == pytest.approx(prompt + completion, rel=1e-9)
    assert prompt + completion != pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)


def test_anthropic_models_through_litellm_count_cache_tokens() -> None:
    steptrace.configure(price_source=PriceTable())
    reply = AnthropicReply(
        text="Hi", input_tokens=800, cache_read_tokens=150, cache_write_tokens=50, output_tokens=40
    )
    st_litellm.instrument()
    try:
        with FakeAnthropic([reply, reply]) as fake, steptrace.run("anthropic") as run:
            for stream in (False, True):
                response = litellm.completion(
                    model="anthropic/claude-haiku-4-5",
                    messages=HELLO,
                    api_base=fake.url,
                    api_key=fake.api_key,
                    stream=stream,
                    max_tokens=100,
                )
                if stream:
                    list(response)
            assert len(fake.requests) == 2
    finally:
        st_litellm.uninstrument()
    events = [e for e in run.events if isinstance(e, LlmCall)]
    assert [(e.model, e.input_tokens, e.output_tokens, e.cache_tokens) for e in events] == [
        ("anthropic:claude-haiku-4-5", 1000, 40, 150)
    ] * 2
    expected = PriceTable().cost_usd(
        "anthropic:claude-haiku-4-5", 1000, 40, cache_read_tokens=150, cache_write_tokens=50
    )
    assert run.summary()["cost_usd"] == pytest.approx(2 * expected, rel=1e-9)  # type: ignore[operator]


class Counting(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        self.calls += 1


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("callbacks_on", [True, False])
def test_budgets_and_record_with_or_without_litellm_callbacks(
    fake: FakeOpenAI, callbacks_on: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = Counting()
    monkeypatch.setattr(litellm, "callbacks", [logger] if callbacks_on else [])
    fake.push(OpenAIReply(text="ok", prompt_tokens=10, completion_tokens=5))

    @steptrace.step(budget={"max_tokens": 200})
    def ask() -> str:
        call_sync(fake, messages=HELLO, max_tokens=20)
        return call_sync(fake, messages=HELLO, max_tokens=500)

    with steptrace.run("litellm") as run, pytest.raises(BudgetExhausted):
        ask()
    assert run.summary()["input_tokens"] == 10
    assert len(fake.requests) == 1
    assert logger.calls == (1 if callbacks_on else 0)


def test_instrument_is_idempotent_and_undone(fake: FakeOpenAI) -> None:
    original = litellm.completion, litellm.acompletion
    st_litellm.instrument()
    wrapped = litellm.completion, litellm.acompletion
    st_litellm.instrument()
    assert (litellm.completion, litellm.acompletion) == wrapped != original
    assert st_litellm.is_instrumented()
    st_litellm.uninstrument()
    st_litellm.uninstrument()
    assert (litellm.completion, litellm.acompletion) == original
    assert not st_litellm.is_instrumented()
    fake.push("x")
    with steptrace.run("plain") as run:
        call_sync(fake, messages=HELLO)
    assert run.events == []


@pytest.mark.usefixtures("instrumented")
def test_a_stream_closed_early_records_what_it_received(fake: FakeOpenAI) -> None:
    fake.push("Hello there, this is a long answer that the caller stops reading.")
    with steptrace.run("litellm") as run:
        stream = litellm.completion(
            model="gpt-4o-mini", messages=HELLO, stream=True, **options(fake)
        )
        next(stream)
        next(stream)
        stream.close()
    (span,) = [s for s in run.spans if s.kind is SpanKind.LLM_CALL]
    assert span.status == "ok"
    assert span.metadata["steptrace.usage_estimated"] is True
    (event,) = run.events
    assert isinstance(event, LlmCall)
    assert event.input_tokens == 8  # the pre-flight estimate of "Say hello." in one message
    assert event.output_tokens >= 1


@pytest.mark.usefixtures("instrumented")
def test_a_stream_broken_midway_records_what_it_received_and_fails_its_span(
    fake: FakeOpenAI,
) -> None:
    fake.push(OpenAIErrorReply(status=500, message="overloaded", mid_stream=True))

    @steptrace.step(budget={"max_tokens": 1_000})
    def ask() -> str:
        return call_stream(fake, messages=HELLO, max_tokens=100)

    with steptrace.run("litellm") as run, pytest.raises(Exception, match="overloaded"):
        ask()
    (span,) = [s for s in run.spans if s.kind is SpanKind.LLM_CALL]
    assert span.status == "error"
    assert "overloaded" in str(span.error)
    (row,) = run.completed_steps
    assert row.llm_calls == 1
    assert row.input_tokens == 8  # nothing reported: the pre-flight estimate


@pytest.mark.usefixtures("instrumented")
def test_a_router_with_retries_does_not_retry_a_refusal_into_a_request(fake: FakeOpenAI) -> None:
    params = {"model": "openai/gpt-4o-mini", "api_base": fake.base_url, "api_key": fake.api_key}
    default_router: Any = Router(model_list=[{"model_name": "fast", "litellm_params": params}])

    @steptrace.step(budget={"max_tokens": 50})
    def ask() -> Any:
        return default_router.completion(model="fast", messages=HELLO, max_tokens=100)

    with pytest.raises(BudgetExhausted):
        ask()
    assert fake.requests == []


def test_importing_the_integration_reaches_no_network() -> None:
    # Without LITELLM_LOCAL_MODEL_COST_MAP LiteLLM would fetch its cost map at
    # import; the integration sets it before importing LiteLLM.
    import subprocess
    import sys

    code = (
        "from steptrace.testing import block_network\n"
        "with block_network() as attempts:\n"
        "    import steptrace.integrations.litellm\n"
        "print(attempts)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def _usage_with_reasoning(reasoning: Any, completion: int = 40) -> dict[str, Any]:
    return {
        "prompt_tokens": 100,
        "completion_tokens": completion,
        "total_tokens": 100 + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("how", ["sync", "stream", "astream"])
@pytest.mark.parametrize(("reported", "recorded"), [(500, 40), (-5, 0)])
def test_reasoning_tokens_from_a_hostile_server_are_capped_at_the_output(
    fake: FakeOpenAI, how: str, reported: int, recorded: int
) -> None:
    fake.push(OpenAIReply(text="Hello!", usage=_usage_with_reasoning(reported)))
    with steptrace.run("litellm") as run:
        assert CALLS[how](fake, messages=HELLO) == "Hello!"
    (span,) = [s for s in run.spans if s.kind is SpanKind.LLM_CALL]
    assert span.metadata["steptrace.reasoning_tokens"] == recorded
    usage = run.usage()
    assert (usage.input_tokens, usage.output_tokens, usage.llm_calls) == (100, 40, 1)
    assert usage.cost_usd == pytest.approx((100 * 1.0 + 40 * 2.0) / 1e6, rel=1e-12)


_COUNT = st.one_of(
    st.none(),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)


def _namespace(value: Any) -> Any:
    """A usage dict as the attribute object LiteLLM hands over."""
    if isinstance(value, dict):
        return SimpleNamespace(**{key: _namespace(item) for key, item in value.items()})
    return value


_INT_OR_COUNT = st.one_of(st.integers(min_value=-5, max_value=10**6), _COUNT)


@given(
    usage=st.fixed_dictionaries(
        {"prompt_tokens": _INT_OR_COUNT, "completion_tokens": _INT_OR_COUNT},
        optional={
            "prompt_tokens_details": st.one_of(
                st.fixed_dictionaries(
                    {}, optional={"cached_tokens": _COUNT, "cache_write_tokens": _COUNT}
                ),
                _COUNT,
            ),
            "completion_tokens_details": st.one_of(
                st.fixed_dictionaries({}, optional={"reasoning_tokens": _COUNT}), _COUNT
            ),
        },
    )
)
def test_any_usage_reads_as_counts_with_its_parts_within_their_whole(usage: Any) -> None:
    counts = st_litellm._usage(_namespace(usage))
    if counts is None:
        return
    assert all(type(count) is int for count in counts)
    assert 0 <= counts.reasoning_tokens <= max(counts.output_tokens, 0)
    assert 0 <= counts.cache_read_tokens + counts.cache_write_tokens <= max(counts.input_tokens, 0)


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_thinking_tokens_through_litellm_are_the_spans_reasoning_tokens(
    stream: bool,
) -> None:
    usage = {
        "input_tokens": 100,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 300,
        "output_tokens_details": {"thinking_tokens": 120},
    }
    with (
        FakeAnthropic([AnthropicReply(text="Hi", usage=usage)]) as fake,
        steptrace.run("anthropic") as run,
    ):
        response = litellm.completion(
            model="anthropic/claude-haiku-4-5",
            messages=HELLO,
            api_base=fake.url,
            api_key=fake.api_key,
            stream=stream,
            max_tokens=400,
        )
        if stream:
            list(response)
    (span,) = [s for s in run.spans if s.kind is SpanKind.LLM_CALL]
    assert span.metadata["steptrace.reasoning_tokens"] == 120
    usage_now = run.usage()
    assert (usage_now.input_tokens, usage_now.output_tokens) == (100, 300)


@pytest.mark.usefixtures("instrumented")
def test_reasoning_tokens_are_in_the_stored_run(fake: FakeOpenAI, tmp_path: Path) -> None:
    from steptrace.store import SQLiteStore, record_runs

    fake.push(
        OpenAIReply(text="Hello!", prompt_tokens=100, completion_tokens=40, reasoning_tokens=25)
    )
    store = SQLiteStore(tmp_path / "runs.db")
    writer = record_runs(store)
    try:
        with steptrace.run("stored") as run:
            call_stream(fake, messages=HELLO)
    finally:
        steptrace.remove_span_processor(writer)
        writer.close()
    assert writer.failures == 0
    stored = store.get_run(run.id)
    store.close()
    assert stored is not None
    (span,) = [s for s in stored.spans if s.kind == SpanKind.LLM_CALL.value]
    assert span.metadata["steptrace.reasoning_tokens"] == 25
    assert span.metadata["gen_ai.usage.output_tokens"] == 40


_READ = (
    "choices", "usage", "id", "model", "finish_reason", "delta", "message", "content",
    "tool_calls", "function", "name", "arguments", "prompt_tokens", "completion_tokens",
    "prompt_tokens_details", "completion_tokens_details", "cached_tokens",
    "cache_write_tokens", "reasoning_tokens",
)  # fmt: skip


def _objects(value: Any) -> Iterator[Any]:
    """``value`` and every LiteLLM object reachable through the fields read."""
    yield value
    for name in _READ:
        found = getattr(value, name, None)
        for item in found if isinstance(found, list) else [found]:
            if hasattr(item, "__dict__"):
                yield from _objects(item)


@pytest.mark.parametrize("stream", [False, True])
def test_fields_read_fast_are_the_fields_litellm_gives(fake: FakeOpenAI, stream: bool) -> None:
    calls = [OpenAIToolCall(name="lookup", arguments={"q": "x"}, id="call_1")]
    fake.push(
        OpenAIReply(
            text="Hi", tool_calls=calls, prompt_tokens=90, completion_tokens=30, reasoning_tokens=9
        )
    )
    response = litellm.completion(
        model="openai/gpt-4o-mini",
        messages=HELLO,
        stream=stream,
        stream_options={"include_usage": True} if stream else None,
        **options(fake),
    )
    seen = 0
    for item in list(response) if stream else [response]:
        for obj in _objects(item):
            for name in _READ:
                assert st_litellm._field(obj, name) == getattr(obj, name, None), (obj, name)
                seen += 1
    assert seen > 0
