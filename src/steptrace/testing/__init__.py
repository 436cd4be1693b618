"""Test doubles for steptrace users: the scripted provider and its ``Reply``,
a price source with flat made-up prices (``FakePrices``), fake model API
servers (built on ``FakeServer``, whose handlers return an ``HttpReply``), and
a guard that fails a test which reaches a real network address."""

from ..llm.providers.scripted import Reply, ScriptedProvider, count_tokens
from ._fake_anthropic import (
    AnthropicErrorReply,
    AnthropicReply,
    AnthropicScript,
    AnthropicToolUse,
    FakeAnthropic,
    FakeAnthropicRoutes,
    add_anthropic_routes,
    count_anthropic_tokens,
)
from ._fake_openai import (
    FAKE_OPENAI_API_KEY,
    FakeOpenAI,
    FakeOpenAIRoutes,
    OpenAIErrorReply,
    OpenAIReply,
    OpenAIScript,
    OpenAIToolCall,
    add_openai_routes,
    count_openai_tokens,
)
from ._network import NetworkBlocked, block_network
from ._prices import FakePrices, PricedCall
from ._server import FakeServer, HttpReply, RecordedRequest

__all__ = [
    "FAKE_OPENAI_API_KEY",
    "AnthropicErrorReply",
    "AnthropicReply",
    "AnthropicScript",
    "AnthropicToolUse",
    "FakeAnthropic",
    "FakeAnthropicRoutes",
    "FakeOpenAI",
    "FakeOpenAIRoutes",
    "FakePrices",
    "FakeServer",
    "HttpReply",
    "NetworkBlocked",
    "OpenAIErrorReply",
    "OpenAIReply",
    "OpenAIScript",
    "OpenAIToolCall",
    "PricedCall",
    "RecordedRequest",
    "Reply",
    "ScriptedProvider",
    "add_anthropic_routes",
    "add_openai_routes",
    "block_network",
    "count_anthropic_tokens",
    "count_openai_tokens",
    "count_tokens",
]
