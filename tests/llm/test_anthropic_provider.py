"""AnthropicProvider through the real anthropic SDK and its HTTP transport,
against the fake Messages API on 127.0.0.1: request mapping, usage and cache
tokens, streaming, tool use, error translation with secrets redacted, async."""

from __future__ import annotations

import asyncio
import importlib
import json
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

import steptrace
from steptrace import llm
from steptrace.errors import (
    AuthenticationFailed,
    BadRequest,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from steptrace.llm import LlmRequest, LlmResponse, Message, ToolCall, ToolSpec
from steptrace.llm.anthropic.provider import DEFAULT_MAX_TOKENS, AnthropicProvider
from steptrace.testing import FakeServer, RecordedRequest
from steptrace.testing._fake_anthropic import (
    AnthropicErrorReply,
    AnthropicReply,
    AnthropicToolUse,
    FakeAnthropic,
    count_anthropic_tokens,
)

MODEL = "claude-haiku-4-5"
KEY = "sk-ant-test-0123456789abcdef"
SECRET = "sk-ant-api03-LEAKEDLEAKEDLEAKED0123"

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    """One HTTP server for the module (stopping one takes half a second)."""
    with FakeServer() as running:
        yield running


@pytest.fixture
def fake(server: FakeServer) -> Iterator[FakeAnthropic]:
    with FakeAnthropic(server=server) as fresh:
        yield fresh


@pytest.fixture
def provider(fake: FakeAnthropic) -> Iterator[AnthropicProvider]:
    created = AnthropicProvider(api_key=KEY, base_url=fake.url)
    yield created
    created.close()


def ask(text: str, **fields: Any) -> LlmRequest:
    return LlmRequest(model=MODEL, messages=(Message(role="user", content=text),), **fields)


def test_plain_completion_maps_request_and_response(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.push("Paris is the capital of France.")
    response = provider.complete(ask("Capital of France?"))

    assert response.text == "Paris is the capital of France."
    assert response.model == MODEL
    assert response.output_tokens == count_anthropic_tokens(response.text)
    assert response.input_tokens == count_anthropic_tokens("Capital of France?")
    assert (response.cache_read_tokens, response.cache_write_tokens) == (0, 0)
    assert response.finish_reason == "end_turn"
    assert str(response.response_id).startswith("msg_")
    assert response.tool_calls == ()
    [body] = fake.requests
    assert body == {
        "model": MODEL,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": "Capital of France?"}],
    }
    recorded = fake.server.requests[-1]
    assert KEY in (recorded.headers.get("x-api-key") or recorded.headers["authorization"])


def test_system_messages_go_to_the_system_parameter(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.push("ok")
    request = LlmRequest(
        model=MODEL,
        messages=(
            Message(role="system", content="You are terse."),
            Message(role="system", content="Answer in French."),
            Message(role="user", content="Hello"),
            Message(role="assistant", content="Bonjour"),
            Message(role="user", content="Again"),
        ),
        max_tokens=50,
        options={"stop_sequences": ["END"], "extra_body": {"top_k": 5}},
    )
    provider.complete(request)
    [body] = fake.requests
    assert body["system"] == "You are terse.\n\nAnswer in French."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["max_tokens"] == 50
    assert body["stop_sequences"] == ["END"]
    assert body["top_k"] == 5
    assert "temperature" not in body


def test_temperature_is_sent_until_a_model_rejects_it(
    fake: FakeAnthropic, provider: AnthropicProvider, caplog: pytest.LogCaptureFixture
) -> None:
    def answer(request: RecordedRequest) -> AnthropicErrorReply | str:
        if request.body["model"] == "claude-opus-4-7" and "temperature" in request.body:
            return AnthropicErrorReply.bad_request("`temperature` is deprecated for this model.")
        return "ok"

    with FakeAnthropic(answer, server=fake.server) as picky:
        assert provider.complete(ask("hi", temperature=0.3)).text == "ok"
        newer = LlmRequest(
            model="claude-opus-4-7",
            messages=(Message(role="user", content="hi"),),
            temperature=0.3,
        )
        assert provider.complete(newer).text == "ok"
        assert provider.complete(newer).text == "ok"
    sent = [(body["model"], body.get("temperature")) for body in picky.requests]
    assert sent == [
        (MODEL, 0.3),
        ("claude-opus-4-7", 0.3),  # refused: 400
        ("claude-opus-4-7", None),  # sent again at once without it
        ("claude-opus-4-7", None),  # and left out from then on
    ]
    assert [r.message for r in caplog.records].count(
        "steptrace: claude-opus-4-7 rejects temperature; sending its requests without it"
    ) == 1


def test_other_bad_requests_are_not_resent(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.push(AnthropicErrorReply.bad_request("messages.0.content: too long"), "unused")
    with pytest.raises(BadRequest):
        provider.complete(ask("hi", temperature=0.3))
    assert len(fake.requests) == 1


def test_tool_use_round_trip(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.push(
        AnthropicReply(
            text="Let me check both.",
            tool_uses=[
                AnthropicToolUse(id="toolu_a", name="get_weather", input={"city": "Paris"}),
                AnthropicToolUse(id="toolu_b", name="get_weather", input={"city": "Oslo"}),
            ],
        ),
        "Paris is sunny, Oslo is snowy.",
    )
    first = provider.complete(ask("Weather in Paris and Oslo?", tools=(WEATHER,)))
    assert first.finish_reason == "tool_use"
    assert first.text == "Let me check both."
    assert first.tool_calls == (
        ToolCall(
            id="toolu_a",
            name="get_weather",
            arguments={"city": "Paris"},
            raw_arguments=json.dumps({"city": "Paris"}),
        ),
        ToolCall(
            id="toolu_b",
            name="get_weather",
            arguments={"city": "Oslo"},
            raw_arguments=json.dumps({"city": "Oslo"}),
        ),
    )
    assert fake.requests[0]["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]

    history = (
        Message(role="user", content="Weather in Paris and Oslo?"),
        Message(role="assistant", content=first.text, tool_calls=first.tool_calls),
        Message(role="tool", tool_call_id="toolu_a", content="sunny"),
        Message(role="tool", tool_call_id="toolu_b", content="snowy"),
        Message(role="user", content="Summarize."),
    )
    second = provider.complete(LlmRequest(model=MODEL, messages=history, tools=(WEATHER,)))
    paris, oslo = {"city": "Paris"}, {"city": "Oslo"}
    assert second.text == "Paris is sunny, Oslo is snowy."
    assert fake.requests[1]["messages"] == [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check both."},
                {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": paris},
                {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": oslo},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "snowy"},
                {"type": "text", "text": "Summarize."},
            ],
        },
    ]


def test_cache_tokens_map_to_the_steptrace_convention(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.push(
        AnthropicReply(
            text="cached", input_tokens=12, cache_read_tokens=1000, cache_write_tokens=300
        )
    )
    response = provider.complete(ask("long shared prefix ..."))
    # Anthropic's input_tokens leaves out the cached part; steptrace's counts it all.
    assert response.input_tokens == 12 + 1000 + 300
    assert response.cache_read_tokens == 1000
    assert response.cache_write_tokens == 300


def test_streaming_calls_on_text_and_returns_usage(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    fake.push(AnthropicReply(text=text, cache_read_tokens=40, input_tokens=7))
    deltas: list[str] = []
    response = provider.complete(ask("Tell me about foxes", stream=True, on_text=deltas.append))

    assert fake.requests[0]["stream"] is True
    assert len(deltas) > 1, "the text should arrive in several deltas"
    assert "".join(deltas) == text
    assert response.text == text
    # input from message_start, output from the final message_delta (not the 1 at start)
    assert response.output_tokens == count_anthropic_tokens(text) > 1
    assert response.input_tokens == 7 + 40
    assert response.cache_read_tokens == 40
    assert response.finish_reason == "end_turn"
    assert str(response.response_id).startswith("msg_")


def test_streaming_assembles_tool_use_input_from_json_deltas(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    arguments = {"city": "Reykjavik", "unit": "celsius", "days": [1, 2, 3]}
    fake.push(AnthropicReply(tool_uses=[AnthropicToolUse(name="get_weather", input=arguments)]))
    deltas: list[str] = []
    response = provider.complete(
        ask("Weather?", tools=(WEATHER,), stream=True, on_text=deltas.append)
    )
    assert deltas == []

    [call] = response.tool_calls
    assert call.name == "get_weather"
    assert call.id.startswith("toolu_")
    assert dict(call.arguments) == arguments
    assert json.loads(call.raw_arguments) == arguments
    assert response.finish_reason == "tool_use"


def test_response_schema_appends_an_instruction_to_the_system_prompt(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    fake.push('{"city": "Paris"}')
    request = LlmRequest(
        model=MODEL,
        messages=(Message(role="system", content="Be exact."), Message(role="user", content="?")),
        response_schema={"name": "answer", "schema": schema},
    )
    provider.complete(request)
    system = fake.requests[0]["system"]
    assert system.startswith("Be exact.\n\n")
    assert "JSON" in system
    assert json.dumps(schema, sort_keys=True) in system
    assert "output_config" not in fake.requests[0]


def test_native_structured_output_sends_output_config(fake: FakeAnthropic) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    native = AnthropicProvider(api_key=KEY, base_url=fake.url, structured_output="native")
    fake.push('{"n": 1}')
    native.complete(ask("?", response_schema={"name": "answer", "schema": schema}))
    native.close()
    body = fake.requests[0]
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "system" not in body


# -- errors ------------------------------------------------------------------------------

ERRORS = [
    (AnthropicErrorReply.rate_limited(f"slow down, {SECRET}", retry_after=7), RateLimited, 429),
    (AnthropicErrorReply.overloaded(f"Overloaded {SECRET}"), RateLimited, 529),
    (AnthropicErrorReply.server_error(f"boom {SECRET}"), ProviderUnavailable, 500),
    (AnthropicErrorReply.authentication(f"invalid x-api-key {SECRET}"), AuthenticationFailed, 401),
    (AnthropicErrorReply.permission_denied(f"no access for {SECRET}"), AuthenticationFailed, 403),
    (AnthropicErrorReply.bad_request(f"bad field; key={SECRET}"), BadRequest, 400),
    (AnthropicErrorReply.not_found(f"model: not found ({SECRET})"), BadRequest, 404),
]


@pytest.mark.parametrize(("reply", "expected", "status"), ERRORS)
def test_errors_are_translated_and_redacted(
    fake: FakeAnthropic,
    provider: AnthropicProvider,
    reply: AnthropicErrorReply,
    expected: type[ProviderError],
    status: int,
) -> None:
    fake.push(reply)
    with pytest.raises(expected) as info:
        provider.complete(ask("hi"))
    error = info.value
    assert type(error) is expected
    assert error.status_code == status
    assert error.provider == "anthropic"
    assert error.model == MODEL
    assert str(error.request_id).startswith("req_")
    assert error.retryable is (status in (429, 529, 500))
    assert SECRET not in str(error)
    assert "[REDACTED]" in str(error)
    assert reply.type in str(error)
    assert error.__cause__ is None, "the SDK error (and its request) is not chained"
    if status == 429:
        assert error.retry_after == 7.0


def test_an_error_event_in_the_middle_of_a_stream_is_translated(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.push(AnthropicErrorReply.overloaded(f"Overloaded {SECRET}", mid_stream=True))
    with pytest.raises(RateLimited) as info:
        provider.complete(ask("hi", stream=True, on_text=lambda _: None))
    assert SECRET not in str(info.value)
    assert "overloaded_error" in str(info.value)


def test_timeout_is_translated(fake: FakeAnthropic) -> None:
    impatient = AnthropicProvider(api_key=KEY, base_url=fake.url, timeout=0.1)
    fake.push(AnthropicReply(text="too late", delay=0.5))
    with pytest.raises(ProviderTimeout):
        impatient.complete(ask("hi"))
    impatient.close()


def test_connection_failure_is_translated() -> None:
    with socket.socket() as sock:  # a free port with nobody listening once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = AnthropicProvider(api_key=KEY, base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(ProviderUnavailable) as info:
        unreachable.complete(ask("hi"))
    unreachable.close()
    assert info.value.retryable


def test_missing_credentials_is_an_authentication_failure(
    fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    keyless = AnthropicProvider(base_url=fake.url)
    with pytest.raises(AuthenticationFailed, match="ANTHROPIC_API_KEY"):
        keyless.complete(ask("hi"))
    keyless.close()
    assert fake.requests == []


def test_a_given_client_is_used_without_sdk_retries(fake: FakeAnthropic) -> None:
    fake.push(AnthropicErrorReply.server_error(), "never reached")
    with anthropic.Anthropic(api_key=KEY, base_url=fake.url, max_retries=3) as client:
        provider = AnthropicProvider(client)
        with pytest.raises(ProviderUnavailable):
            provider.complete(ask("hi"))
        provider.close()  # leaves the caller's client alone
        assert not client.is_closed()
    assert len(fake.requests) == 1, "llm_call retries; the SDK must not"


def test_missing_sdk_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anthropic", None)
    monkeypatch.delitem(sys.modules, "steptrace.llm.anthropic.provider")
    with pytest.raises(ImportError, match=r"pip install 'steptrace\[anthropic\]'"):
        importlib.import_module("steptrace.llm.anthropic.provider")


# -- async -------------------------------------------------------------------------------


def test_async_completion_streaming_and_errors(fake: FakeAnthropic) -> None:
    provider = AnthropicProvider(api_key=KEY, base_url=fake.url)
    fake.push(
        AnthropicReply(text="async hello", input_tokens=3, cache_write_tokens=5),
        "streamed async answer",
        AnthropicErrorReply.rate_limited(f"slow down {SECRET}", retry_after=0.5),
    )
    deltas: list[str] = []

    async def main() -> tuple[LlmResponse, LlmResponse, RateLimited]:
        try:
            plain = await provider.acomplete(ask("hi"))
            streamed = await provider.acomplete(ask("hi", stream=True, on_text=deltas.append))
            with pytest.raises(RateLimited) as info:
                await provider.acomplete(ask("hi"))
            return plain, streamed, info.value
        finally:
            await provider.aclose()

    plain, streamed, error = asyncio.run(main())
    assert error.retry_after == 0.5
    assert SECRET not in str(error)

    assert (plain.text, plain.input_tokens, plain.cache_write_tokens) == ("async hello", 8, 5)
    assert streamed.text == "".join(deltas) == "streamed async answer"
    assert streamed.output_tokens == count_anthropic_tokens("streamed async answer")
    assert [r.get("stream") for r in fake.requests] == [None, True, None]


def test_given_clients_serve_both_sync_and_async_calls(fake: FakeAnthropic) -> None:
    fake.push("from the async client", "async, derived from the sync client", "sync")

    async def main() -> list[str]:
        async with anthropic.AsyncAnthropic(api_key=KEY, base_url=fake.url) as given:
            from_async = AnthropicProvider(given)
            texts = [(await from_async.acomplete(ask("a"))).text]
            await from_async.aclose()
            assert not given.is_closed()
        with anthropic.Anthropic(api_key=KEY, base_url=fake.url) as given_sync:
            from_sync = AnthropicProvider(given_sync)
            try:
                texts.append((await from_sync.acomplete(ask("b"))).text)
                texts.append(from_sync.complete(ask("c")).text)
            finally:
                await from_sync.aclose()
        return texts

    assert asyncio.run(main()) == [
        "from the async client",
        "async, derived from the sync client",
        "sync",
    ]
    assert all(KEY in r.headers.get("authorization", "") for r in fake.server.requests[-3:])


# -- through llm_call ----------------------------------------------------------------------


def test_llm_call_over_the_provider_records_usage_and_retries(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.push(
        AnthropicErrorReply.rate_limited(retry_after=0),
        AnthropicReply(text="done", input_tokens=20, cache_read_tokens=80, output_tokens=4),
    )

    @steptrace.step(model=MODEL)
    def summarize() -> llm.LlmResult:
        return llm.llm_call("Summarize the report.", provider=provider)

    with steptrace.run("anthropic-provider") as run:
        result = summarize()
    assert result.text == "done"
    assert (result.input_tokens, result.output_tokens, result.cache_tokens) == (100, 4, 80)
    assert len(fake.requests) == 2
    [row] = run.completed_steps
    assert (row.input_tokens, row.output_tokens, row.llm_calls) == (100, 4, 1)


# -- the fake itself ---------------------------------------------------------------------


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(
        url + "/v1/messages",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def test_the_fake_streams_the_real_event_sequence(fake: FakeAnthropic) -> None:
    fake.push(
        AnthropicReply(
            text="Hi there", tool_uses=[AnthropicToolUse(name="f", input={"a": 1})], output_tokens=9
        )
    )
    messages = [{"role": "user", "content": "x"}]
    body = {"model": MODEL, "max_tokens": 5, "stream": True, "messages": messages}
    status, text = post(fake.url, body, {"x-api-key": KEY})
    assert status == 200
    events = [line[len("event: ") :] for line in text.splitlines() if line.startswith("event: ")]
    assert events == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert data[0]["message"]["usage"]["output_tokens"] == 1
    assert data[0]["message"]["content"] == []
    assert data[-2]["usage"] == {**data[0]["message"]["usage"], "output_tokens": 9}
    assert data[-2]["delta"]["stop_reason"] == "tool_use"


def test_the_fake_refuses_like_the_real_api(fake: FakeAnthropic) -> None:
    message = {"role": "user", "content": "x"}
    status, text = post(fake.url, {"model": MODEL, "max_tokens": 5, "messages": [message]}, {})
    assert status == 401
    assert json.loads(text)["error"]["type"] == "authentication_error"
    status, text = post(fake.url, {"model": MODEL, "messages": [message]}, {"x-api-key": KEY})
    assert status == 400
    assert json.loads(text) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
        "request_id": json.loads(text)["request_id"],
    }


def test_the_fake_answers_from_a_function_and_says_when_the_script_ran_out(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.push("first")
    assert provider.complete(ask("a")).text == "first"
    with pytest.raises(BadRequest, match="script exhausted at request 2"):
        provider.complete(ask("b"))

    def echo(request: RecordedRequest) -> str:
        return "echo: " + str(request.body["messages"][-1]["content"])

    with FakeAnthropic(echo, server=fake.server) as echoing:
        assert provider.complete(ask("ping")).text == "echo: ping"
        echoing.push("queued first")
        assert provider.complete(ask("pong")).text == "queued first"
        assert provider.complete(ask("pong")).text == "echo: pong"
