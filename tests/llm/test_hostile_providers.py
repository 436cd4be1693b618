"""Both providers, through the official SDKs, against servers that misbehave.

Issue 15, cases 3-7: a server that keeps a request alive byte by byte meets
the per-request deadline; a 200 with broken usage is still recorded (the bad
counts refused, the call marked); a 200 whose body is not JSON, or a stream
cut before its end, is a ``ProviderError`` (retried), never a success; usage
a server did not report is estimated and marked so in the record."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import steptrace
from steptrace import LlmCall, event_from_dict, llm
from steptrace.errors import ProviderError, ProviderTimeout, ProviderUnavailable
from steptrace.llm import LlmRequest, Message, Provider
from steptrace.llm.anthropic.provider import AnthropicProvider
from steptrace.llm.openai.provider import OpenAIProvider
from steptrace.testing import FakeServer, HttpReply
from steptrace.testing._fake_anthropic import AnthropicReply, FakeAnthropic
from steptrace.testing._fake_openai import FakeOpenAI, OpenAIReply

KEY = "sk-test-hostile-0123456789abcdef"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer() as running:
        yield running


@dataclass
class Vendor:
    """One provider against its fake: how to script a reply and make a provider."""

    name: str
    model: str
    fake: Any
    reply: Callable[..., Any]
    make: Callable[..., Provider]

    def provider(self, **options: Any) -> Provider:
        return self.make(**options)

    def push(self, *items: Any) -> None:
        self.fake.push(*items)

    def broken_usage(self) -> dict[str, Any]:
        if self.name == "openai":
            return {"prompt_tokens": -5, "completion_tokens": "many", "total_tokens": 7}
        return {"input_tokens": -5, "output_tokens": "many"}

    def no_usage(self, **fields: Any) -> Any:
        if self.name == "openai":
            return self.reply(omit_usage=True, **fields)
        return self.reply(usage={}, **fields)


@pytest.fixture(params=["openai", "anthropic"])
def vendor(request: pytest.FixtureRequest, server: FakeServer) -> Iterator[Vendor]:
    made: list[Any] = []
    if request.param == "openai":
        fake: Any = FakeOpenAI(server=server)

        def make_openai(**options: Any) -> Provider:
            provider = OpenAIProvider(api_key=KEY, base_url=fake.base_url, **options)
            made.append(provider)
            return provider

        chosen = Vendor("openai", "gpt-4o-mini", fake, OpenAIReply, make_openai)
    else:
        fake = FakeAnthropic(server=server)

        def make_anthropic(**options: Any) -> Provider:
            provider = AnthropicProvider(api_key=KEY, base_url=fake.url, **options)
            made.append(provider)
            return provider

        chosen = Vendor("anthropic", "claude-haiku-4-5", fake, AnthropicReply, make_anthropic)
    with fake:
        yield chosen
    for provider in made:
        provider.close()


def ask(vendor: Vendor, stream: bool = False) -> LlmRequest:
    return LlmRequest(
        model=vendor.model,
        messages=(Message(role="user", content="Say hello."),),
        max_tokens=50,
        stream=stream,
        on_text=(lambda _: None) if stream else None,
    )


def send(provider: Provider, request: LlmRequest, mode: str) -> None:
    """One request, sync or in a fresh event loop (its client closed with it)."""
    if mode == "sync":
        provider.complete(request)
        return

    async def main() -> None:
        try:
            await provider.acomplete(request)
        finally:
            await provider.aclose()  # type: ignore[attr-defined]

    asyncio.run(main())


# -- case 3: an overall deadline per request ---------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_server_trickling_bytes_meets_the_per_request_deadline(
    vendor: Vendor, stream: bool, mode: str
) -> None:
    vendor.push(vendor.reply(text="Hello!", trickle_s=0.1, trickle_for=4.0))
    provider = vendor.provider(timeout=1.0)
    request = ask(vendor, stream)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="deadline") as caught:
        send(provider, request, mode)
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"the request ran {elapsed:.1f} s past a 1 s deadline"
    assert caught.value.retryable


def test_the_deadline_is_checked() -> None:
    with pytest.raises(ValueError, match="timeout"):
        OpenAIProvider(api_key=KEY, timeout=0)
    with pytest.raises(ValueError, match="timeout"):
        AnthropicProvider(api_key=KEY, timeout=float("nan"))


# -- case 4: broken usage on a 200 is still recorded -------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_200_with_broken_usage_is_recorded_with_an_estimate_and_marked(
    vendor: Vendor, stream: bool, collector: steptrace.InMemorySpanCollector
) -> None:
    vendor.push(vendor.reply(text="Hello there!", usage=vendor.broken_usage()))
    with steptrace.run() as run:
        result = llm.llm_call(
            "Say hello.",
            model=vendor.model,
            provider=vendor.provider(),
            max_tokens=50,
            on_text=(lambda _: None) if stream else None,
        )
    assert result.text == "Hello there!"
    (event,) = [e for e in run.events if isinstance(e, LlmCall)]
    assert event.estimated
    assert event.to_dict()["estimated"] is True
    assert event.input_tokens > 0
    assert event.output_tokens > 0
    assert run.usage().llm_calls == 1  # charged to the budget
    assert run.usage().input_tokens == event.input_tokens
    (chat,) = [s for s in collector.spans if s.name.startswith("chat ")]
    refused = chat.metadata["steptrace.usage_refused"]
    assert any("-5" in item for item in refused)
    assert any("'many'" in item for item in refused)
    assert chat.metadata["steptrace.usage_estimated"] is True


# -- case 5: a 200 whose body is not JSON ------------------------------------------------

NOT_JSON = [
    HttpReply(raw=b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
    HttpReply(raw=b'{"id": "x", "choices": [', content_type="application/json"),
    HttpReply(raw=b"[1, 2, 3]", content_type="application/json"),
    HttpReply(raw=b"null", content_type="application/json"),
]


@pytest.mark.parametrize("reply", NOT_JSON, ids=["html", "cut-json", "array", "null"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_200_that_is_not_a_completion_is_a_retryable_provider_error(
    vendor: Vendor, reply: HttpReply, mode: str
) -> None:
    vendor.push(reply)
    provider = vendor.provider()
    with pytest.raises(ProviderUnavailable) as caught:
        send(provider, ask(vendor), mode)
    assert caught.value.retryable
    assert "<html>" not in str(caught.value)


def test_llm_call_retries_a_body_that_is_not_json_then_succeeds(vendor: Vendor) -> None:
    vendor.push(NOT_JSON[0], vendor.reply(text="Hello!"))
    result = llm.llm_call("Say hello.", model=vendor.model, provider=vendor.provider())
    assert result.text == "Hello!"


def test_a_stream_whose_event_is_not_json_is_a_provider_error(vendor: Vendor) -> None:
    events = [(None, "{not json")] if vendor.name == "openai" else [("message_start", "{oops")]
    vendor.push(HttpReply(events=events))
    with pytest.raises(ProviderUnavailable):
        vendor.provider().complete(ask(vendor, stream=True))


# -- case 6: a stream cut before its end -------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stream_cut_midway_is_an_error_not_a_truncated_success(vendor: Vendor, mode: str) -> None:
    vendor.push(vendor.reply(text="Hello world, how are you today?", cut_after=4))
    provider = vendor.provider()
    texts: list[str] = []
    request = LlmRequest(
        model=vendor.model,
        messages=(Message(role="user", content="Say hello."),),
        stream=True,
        on_text=texts.append,
    )
    with pytest.raises(ProviderUnavailable, match="ended before") as caught:
        send(provider, request, mode)
    assert caught.value.retryable
    assert texts  # it did start


def test_llm_call_does_not_accept_a_cut_stream(vendor: Vendor) -> None:
    for _ in range(3):
        vendor.push(vendor.reply(text="Hello world, how are you today?", cut_after=4))
    with steptrace.run() as run, pytest.raises(ProviderError):
        llm.llm_call("Say hello.", model=vendor.model, provider=vendor.provider(), on_text=print)
    assert not [e for e in run.events if isinstance(e, LlmCall)]


# -- case 7: estimated usage is marked ---------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_usage_the_server_did_not_report_is_estimated_and_marked(
    vendor: Vendor, stream: bool, collector: steptrace.InMemorySpanCollector
) -> None:
    vendor.push(vendor.no_usage(text="Hello there, friend!"))
    with steptrace.run() as run:
        llm.llm_call(
            "Say hello.",
            model=vendor.model,
            provider=vendor.provider(),
            on_text=(lambda _: None) if stream else None,
        )
    (event,) = [e for e in run.events if isinstance(e, LlmCall)]
    assert event.estimated
    assert event.output_tokens >= 5  # "Hello there, friend!" at ~3 characters a token
    (chat,) = [s for s in collector.spans if s.name.startswith("chat ")]
    assert chat.metadata["steptrace.usage_estimated"] is True


def test_reported_usage_is_not_marked_and_keeps_the_seed_shape(vendor: Vendor) -> None:
    vendor.push(vendor.reply(text="Hi."))
    with steptrace.run() as run:
        llm.llm_call("Say hello.", model=vendor.model, provider=vendor.provider())
    (event,) = [e for e in run.events if isinstance(e, LlmCall)]
    assert not event.estimated
    assert "estimated" not in event.to_dict()


def test_the_estimated_mark_round_trips_and_is_the_only_key_beyond_the_seed() -> None:
    fields: dict[str, Any] = {
        "call_id": "c",
        "model": "m",
        "input_tokens": 3,
        "output_tokens": 4,
        "cache_tokens": 0,
        "duration_ms": 5,
        "iteration": 1,
    }
    marked = LlmCall(**fields, estimated=True)
    data = json.loads(json.dumps(marked.to_dict()))
    assert list(data) == ["type", *fields, "estimated"]
    assert event_from_dict(data) == marked
    plain = LlmCall(**fields)
    assert list(plain.to_dict()) == ["type", *fields]
    assert event_from_dict(plain.to_dict()) == plain
    with pytest.raises(TypeError, match="estimated"):
        event_from_dict({**data, "estimated": "yes"})
