"""OpenAIProvider through the real ``openai`` SDK and its HTTP transport, against
the fake Chat Completions server on 127.0.0.1: request mapping, usage, tool
calls, structured output, streaming, error translation with redaction, async;
and the fake server's own behaviour where the SDK tests do not reach it."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

import steptrace
from steptrace.errors import (
    AuthenticationFailed,
    BadRequest,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from steptrace.llm._types import LlmRequest, LlmResponse, Message, ToolCall, ToolSpec
from steptrace.llm.openai.provider import OpenAIProvider
from steptrace.testing._fake_openai import (
    FakeOpenAI,
    OpenAIErrorReply,
    OpenAIReply,
    OpenAIToolCall,
    count_openai_tokens,
)
from steptrace.testing._server import FakeServer, RecordedRequest

API_KEY = "sk-test-provider-key-0123456789abcdef"
SECRET = "sk-proj-LEAKEDsecretLEAKEDsecret0123456789"


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
def provider(fake: FakeOpenAI) -> Iterator[OpenAIProvider]:
    created = OpenAIProvider(api_key=API_KEY, base_url=fake.base_url)
    yield created
    created.close()


def ask(text: str = "What is the capital of France?", **fields: Any) -> LlmRequest:
    return LlmRequest(
        model=fields.pop("model", "gpt-4o-mini"),
        messages=(Message(role="user", content=text),),
        **fields,
    )


# -- plain completions --------------------------------------------------------------


def test_plain_completion_maps_the_request_and_the_real_usage(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    fake.push(
        OpenAIReply(
            text="Paris.",
            prompt_tokens=120,
            completion_tokens=40,
            cached_tokens=64,
            reasoning_tokens=30,
            model="gpt-4o-mini-2024-07-18",
        )
    )
    request = LlmRequest(
        model="gpt-4o-mini",
        messages=(
            Message(role="system", content="Answer briefly."),
            Message(role="user", content="Capital of France?", name="ana"),
        ),
        max_tokens=50,
        temperature=0.2,
    )
    response = provider.complete(request)

    assert response == LlmResponse(
        text="Paris.",
        model="gpt-4o-mini-2024-07-18",
        input_tokens=120,
        output_tokens=40,
        cache_read_tokens=64,
        reasoning_tokens=30,
        response_id=response.response_id,
        finish_reason="stop",
    )
    assert response.response_id is not None
    assert response.response_id.startswith("chatcmpl-")
    [sent] = fake.server.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.body == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Capital of France?", "name": "ana"},
        ],
        "max_completion_tokens": 50,
        "temperature": 0.2,
    }


def test_token_counts_come_from_the_server_not_from_steptrace(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    fake.push("The answer is forty-two.")
    response = provider.complete(ask("x" * 400))
    # The fake counts ~4 characters a token plus 3 a message and 3 a request.
    assert response.input_tokens == 100 + 3 + 3
    assert response.output_tokens == count_openai_tokens("The answer is forty-two.")


def test_options_pass_through_and_max_tokens_field_for_older_servers(fake: FakeOpenAI) -> None:
    fake.push("ok")
    legacy = OpenAIProvider(api_key=API_KEY, base_url=fake.base_url, max_tokens_field="max_tokens")
    try:
        legacy.complete(ask(max_tokens=7, options={"seed": 11, "top_p": 0.5}))
    finally:
        legacy.close()
    body = fake.requests[0]
    assert body["max_tokens"] == 7
    assert "max_completion_tokens" not in body
    assert (body["seed"], body["top_p"]) == (11, 0.5)
    with pytest.raises(ValueError, match="max_tokens_field"):
        OpenAIProvider(max_tokens_field="tokens")  # type: ignore[arg-type]


# -- tools ----------------------------------------------------------------------------


def test_tool_definitions_calls_and_results_round_trip(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    fake.push(
        OpenAIReply(
            tool_calls=[
                OpenAIToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_a"),
                OpenAIToolCall(name="broken", arguments='{"city": "Par'),
            ]
        )
    )
    weather = ToolSpec(
        name="get_weather",
        description="Weather for a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
    earlier = ToolCall(id="call_0", name="get_time", arguments={"tz": "CET"})
    request = LlmRequest(
        model="gpt-4o",
        messages=(
            Message(role="user", content="Weather and time in Paris?"),
            Message(role="assistant", tool_calls=(earlier,)),
            Message(role="tool", content="14:00", tool_call_id="call_0"),
        ),
        tools=(weather, ToolSpec(name="get_time")),
    )
    response = provider.complete(request)

    assert response.text == ""
    assert response.finish_reason == "tool_calls"
    first, second = response.tool_calls
    assert first == ToolCall(
        id="call_a",
        name="get_weather",
        arguments={"city": "Paris"},
        raw_arguments='{"city": "Paris"}',
    )
    assert second.name == "broken"
    assert second.arguments == {}
    assert second.raw_arguments == '{"city": "Par'
    assert second.id.startswith("call_")
    body = fake.requests[0]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
        {
            "type": "function",
            "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
        },
    ]
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"tz": "CET"}'},
                }
            ],
        },
        {"role": "tool", "content": "14:00", "tool_call_id": "call_0"},
    ]


# -- structured output ----------------------------------------------------------------


def test_response_schema_is_sent_as_a_json_schema_response_format(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    fake.push(OpenAIReply.json({"city": "Paris"}))
    response = provider.complete(ask(response_schema={"name": "city answer!", "schema": schema}))

    assert json.loads(response.text) == {"city": "Paris"}
    assert fake.requests[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city_answer_", "schema": schema, "strict": False},
    }


def test_a_bare_schema_is_named_output_and_strict_can_be_asked_for(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    fake.push("{}", "{}")
    provider.complete(ask(response_schema={"type": "object"}))
    provider.complete(ask(response_schema={"name": "a", "schema": {}, "strict": True}))
    formats = [body["response_format"]["json_schema"] for body in fake.requests]
    assert formats == [
        {"name": "output", "schema": {"type": "object"}, "strict": False},
        {"name": "a", "schema": {}, "strict": True},
    ]


def test_a_refusal_becomes_the_text_with_finish_reason_refusal(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    fake.push(OpenAIReply(refusal="I can't help with that."))
    response = provider.complete(ask())
    assert (response.text, response.finish_reason) == ("I can't help with that.", "refusal")


# -- streaming ------------------------------------------------------------------------


def test_streaming_calls_on_text_per_delta_and_returns_the_whole_response(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    text = "Paris is the capital and largest city of France."
    fake.push(
        OpenAIReply(
            text=text,
            tool_calls=[OpenAIToolCall(name="lookup", arguments={"q": "Paris population 2024"})],
            cached_tokens=4,
        )
    )
    deltas: list[str] = []
    response = provider.complete(ask(stream=True, on_text=deltas.append))

    assert len(deltas) > 3
    assert "".join(deltas) == text == response.text
    [call] = response.tool_calls
    assert (call.name, dict(call.arguments)) == ("lookup", {"q": "Paris population 2024"})
    assert response.finish_reason == "tool_calls"
    expected_output = count_openai_tokens(
        text + "lookup" + json.dumps({"q": "Paris population 2024"})
    )
    assert (response.output_tokens, response.cache_read_tokens) == (expected_output, 4)
    assert response.input_tokens == count_openai_tokens(ask().messages[0].content) + 6
    assert response.response_id is not None
    body = fake.requests[0]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_a_stream_without_a_usage_chunk_is_estimated_never_free(shared_server: FakeServer) -> None:
    # An OpenAI-compatible server that ignores stream_options sends no usage.
    def ignore_usage(request: RecordedRequest) -> OpenAIReply:
        assert isinstance(request.body, dict)
        request.body["stream_options"] = None
        return OpenAIReply(text="abcdefghi")

    with FakeOpenAI(ignore_usage, server=shared_server) as server:
        provider = OpenAIProvider(api_key=API_KEY, base_url=server.base_url)
        try:
            response = provider.complete(ask("123456", stream=True))
        finally:
            provider.close()
    assert response.text == "abcdefghi"
    assert (response.input_tokens, response.output_tokens) == (2 + 4, 3)


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected", "status"),
    [
        (
            OpenAIErrorReply.authentication(f"Incorrect API key provided: {SECRET}."),
            AuthenticationFailed,
            401,
        ),
        (
            OpenAIErrorReply.permission_denied(f"key {SECRET} may not use this"),
            AuthenticationFailed,
            403,
        ),
        (OpenAIErrorReply.rate_limited(f"Slow down, {SECRET}", retry_after=7), RateLimited, 429),
        (OpenAIErrorReply.server_error(f"boom near {SECRET}"), ProviderUnavailable, 500),
        (OpenAIErrorReply(status=503, message=f"overloaded {SECRET}"), ProviderUnavailable, 503),
        (OpenAIErrorReply.bad_request(f"bad temperature ({SECRET})"), BadRequest, 400),
        (OpenAIErrorReply.not_found(f"no such model for {SECRET}"), BadRequest, 404),
        (OpenAIErrorReply(status=422, message=f"unprocessable {SECRET}"), BadRequest, 422),
    ],
)
def test_http_errors_are_translated_with_credentials_redacted(
    fake: FakeOpenAI,
    provider: OpenAIProvider,
    reply: OpenAIErrorReply,
    expected: type[ProviderError],
    status: int,
) -> None:
    fake.push(reply)
    with pytest.raises(ProviderError) as info:
        provider.complete(ask())
    error = info.value
    assert type(error) is expected
    assert error.status_code == status
    assert (error.provider, error.model) == ("openai", "gpt-4o-mini")
    assert error.request_id is not None
    assert error.request_id.startswith("req_")
    assert error.retryable is (status in (429, 500, 503))
    assert SECRET not in str(error)
    assert SECRET not in repr(error.args)
    assert "[REDACTED]" in str(error)
    # The SDK error (whose text holds the secret) is not chained for tracebacks.
    assert error.__cause__ is None
    assert error.__suppress_context__
    assert len(fake.requests) == 1  # no SDK retries behind steptrace's back
    if status == 429:
        assert error.retry_after == 7.0


def test_an_error_in_the_middle_of_a_stream_is_translated(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    fake.push(OpenAIErrorReply(status=500, message=f"stream broke {SECRET}", mid_stream=True))
    seen: list[str] = []
    with pytest.raises(ProviderUnavailable) as info:
        provider.complete(ask(stream=True, on_text=seen.append))
    assert seen  # the stream had started
    assert "server_error" in str(info.value)
    assert SECRET not in str(info.value)


def test_a_slow_server_is_a_provider_timeout(fake: FakeOpenAI) -> None:
    fake.push(OpenAIReply(text="late", delay=1.0))
    impatient = OpenAIProvider(api_key=API_KEY, base_url=fake.base_url, timeout=0.2)
    try:
        with pytest.raises(ProviderTimeout) as info:
            impatient.complete(ask())
    finally:
        impatient.close()
    assert info.value.retryable


def test_an_unreachable_server_is_provider_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = OpenAIProvider(api_key=API_KEY, base_url=f"http://127.0.0.1:{port}/v1")
    try:
        with pytest.raises(ProviderUnavailable, match="connection failed"):
            provider.complete(ask())
    finally:
        provider.close()


def test_missing_credentials_are_an_authentication_failure_with_a_hint(fake: FakeOpenAI) -> None:
    provider = OpenAIProvider(base_url=fake.base_url)  # conftest removed OPENAI_API_KEY
    with pytest.raises(AuthenticationFailed, match="OPENAI_API_KEY"):
        provider.complete(ask())
    assert fake.requests == []


def test_an_environment_key_is_redacted_even_without_a_known_prefix(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "plainkey-9f8e7d6c5b4a")
    fake.push(OpenAIErrorReply.authentication("Incorrect API key provided: plainkey-9f8e7d6c5b4a"))
    provider = OpenAIProvider(base_url=fake.base_url)
    try:
        with pytest.raises(AuthenticationFailed) as info:
            provider.complete(ask())
    finally:
        provider.close()
    assert "plainkey-9f8e7d6c5b4a" not in str(info.value)
    assert fake.server.requests[0].headers["authorization"] == "Bearer plainkey-9f8e7d6c5b4a"


# -- clients given by the caller ------------------------------------------------------


def test_a_given_client_is_used_as_a_copy_without_sdk_retries(fake: FakeOpenAI) -> None:
    client = fake.client(max_retries=3)
    provider = OpenAIProvider(client)
    fake.push(OpenAIErrorReply.server_error(), "fine")
    try:
        with pytest.raises(ProviderUnavailable):
            provider.complete(ask())
        assert len(fake.requests) == 1
        assert provider.complete(ask()).text == "fine"
        assert client.max_retries == 3
    finally:
        client.close()


def test_a_given_async_client_serves_async_and_lends_its_settings_to_sync(
    fake: FakeOpenAI,
) -> None:
    async_client = fake.async_client()
    provider = OpenAIProvider(async_client)
    fake.push("from sync", "from async")

    async def main() -> str:
        try:
            return (await provider.acomplete(ask())).text
        finally:
            await async_client.close()

    try:
        assert provider.complete(ask()).text == "from sync"
    finally:
        provider.close()
    assert asyncio.run(main()) == "from async"
    assert {r.headers["authorization"] for r in fake.server.requests} == {f"Bearer {fake.api_key}"}
    assert [r.headers["x-stainless-async"] for r in fake.server.requests] == [
        "false",
        "async:asyncio",
    ]


def test_the_provider_satisfies_the_protocol() -> None:
    from steptrace.llm._types import Provider

    assert isinstance(OpenAIProvider(), Provider)
    assert OpenAIProvider(name="vllm").name == "vllm"


# -- async ----------------------------------------------------------------------------


def test_async_completion_streaming_and_errors(fake: FakeOpenAI) -> None:
    provider = OpenAIProvider(api_key=API_KEY, base_url=fake.base_url)
    fake.push(
        OpenAIReply(text="Bonjour.", prompt_tokens=11, completion_tokens=3),
        "streamed hello world",
        OpenAIErrorReply.rate_limited(retry_after=2),
    )
    deltas: list[str] = []

    async def main() -> tuple[LlmResponse, LlmResponse, RateLimited]:
        try:
            plain = await provider.acomplete(ask())
            streamed = await provider.acomplete(ask(stream=True, on_text=deltas.append))
            with pytest.raises(RateLimited) as info:
                await provider.acomplete(ask())
            return plain, streamed, info.value
        finally:
            await provider.aclose()

    plain, streamed, limited = asyncio.run(main())
    assert (plain.text, plain.input_tokens, plain.output_tokens) == ("Bonjour.", 11, 3)
    assert streamed.text == "".join(deltas) == "streamed hello world"
    assert len(deltas) == 3
    assert streamed.output_tokens == count_openai_tokens("streamed hello world")
    assert limited.retry_after == 2.0
    assert [r.headers["x-stainless-async"] for r in fake.server.requests] == ["async:asyncio"] * 3


def test_each_event_loop_gets_its_own_async_client(fake: FakeOpenAI) -> None:
    # An AsyncOpenAI's connections belong to the loop they were opened on.
    provider = OpenAIProvider(api_key=API_KEY, base_url=fake.base_url)
    fake.push("one", "two")
    clients: list[openai.AsyncOpenAI] = []

    async def main() -> str:
        clients.append(provider.async_client)
        text = (await provider.acomplete(ask())).text
        await provider.aclose()
        return text

    assert [asyncio.run(main()), asyncio.run(main())] == ["one", "two"]
    assert clients[0] is not clients[1]


# -- the fake server itself -----------------------------------------------------------


def test_the_fake_refuses_what_the_real_api_refuses(fake: FakeOpenAI) -> None:
    anonymous = urllib.request.Request(
        fake.base_url + "/chat/completions",
        data=json.dumps(
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=5)
    assert refused.value.code == 401
    assert "didn't provide an API key" in json.loads(refused.value.read())["error"]["message"]
    refused.value.close()
    client = fake.client()
    try:
        with pytest.raises(openai.BadRequestError, match="empty array"):
            client.chat.completions.create(model="gpt-4o", messages=[])
        with pytest.raises(openai.BadRequestError, match="must contain the word 'json'"):
            client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "hi"}],
                response_format={"type": "json_object"},
            )
        with pytest.raises(openai.BadRequestError, match="only allowed when 'stream'"):
            client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "hi"}],
                stream_options={"include_usage": True},
            )
        with pytest.raises(openai.BadRequestError, match="script exhausted at request 5"):
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
    finally:
        client.close()


def test_the_fake_truncates_at_max_completion_tokens_and_answers_from_a_function() -> None:
    def echo(request: RecordedRequest) -> str:
        assert isinstance(request.body, dict)
        return "echo: " + str(request.body["messages"][-1]["content"])

    with FakeOpenAI(echo) as fake:
        client = fake.client()
        try:
            fake.push(OpenAIReply(text="one two three four five six seven eight"))
            cut = client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "count"}],
                max_completion_tokens=2,
            )
            echoed = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "ping"}]
            )
        finally:
            client.close()
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("one two ", "length")
    assert cut.usage is not None
    assert cut.usage.completion_tokens == 2
    assert echoed.choices[0].message.content == "echo: ping"


def test_the_fake_takes_a_list_of_replies_not_one_reply() -> None:
    with pytest.raises(TypeError, match="list of replies"):
        FakeOpenAI("just one")


def test_llm_call_records_and_prices_reasoning_tokens(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    """Reasoning tokens reach the span, and a model whose reasoning has its own
    price (Perplexity's deep research) is charged at it, as the table says."""
    from steptrace import llm
    from steptrace.llm.prices import PriceTable

    table = PriceTable()
    model = "perplexity:sonar-deep-research"
    steptrace.configure(price_source=table)
    fake.push(
        OpenAIReply(text="Deep.", prompt_tokens=1000, completion_tokens=5000, reasoning_tokens=4000)
    )
    with steptrace.run("reasoning") as run:
        result = llm.llm_call("Research it.", model=model, provider=provider)
    expected = table.cost_usd(model, 1000, 5000, reasoning_tokens=4000)
    assert expected is not None
    assert expected != table.cost_usd(model, 1000, 5000)
    assert result.cost_usd == pytest.approx(expected, rel=1e-12)
    assert run.usage().cost_usd == pytest.approx(expected, rel=1e-12)
    [request_span] = [s for s in run.spans if s.name == f"chat {model}"]
    assert request_span.metadata["steptrace.reasoning_tokens"] == 4000


def test_a_price_source_without_reasoning_tokens_prices_them_as_output(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    """``reasoning_tokens`` is optional in ``PriceSource``: a source written
    without it still prices a reasoning model's calls (reasoning as output)."""
    from steptrace import llm

    asked: list[tuple[str, int, int]] = []

    class OldSource:
        def cost_usd(
            self,
            model: str,
            input_tokens: int,
            output_tokens: int,
            *,
            cache_read_tokens: int = 0,
            cache_write_tokens: int = 0,
        ) -> float:
            asked.append((model, input_tokens, output_tokens))
            return (input_tokens + output_tokens) * 1e-6

    steptrace.configure(price_source=OldSource())
    fake.push(OpenAIReply(text="Hm.", prompt_tokens=10, completion_tokens=35, reasoning_tokens=15))
    with steptrace.run("reasoning"):
        result = llm.llm_call("Think.", model="o4-mini", provider=provider)
    assert result.cost_usd == pytest.approx(45e-6)
    assert asked[-1] == ("o4-mini", 10, 35)
