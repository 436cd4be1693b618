"""Each public subpackage's surface is one sorted ``__all__``, frozen here like
the top level's (``test_public_api.py``), so changes to it are deliberate.
``steptrace.store``'s is frozen in ``tests/store/test_public_names.py``."""

from __future__ import annotations

import importlib
import inspect
import types

import pytest

PUBLIC_NAMES: dict[str, list[str]] = {
    "steptrace.agent": [
        "NEXT_PHASE_TOOL",
        "AgentResult",
        "Compaction",
        "LoopDetection",
        "MutationClass",
        "Phase",
        "Tool",
        "ToolLimits",
        "ToolPolicy",
        "ToolTimeout",
        "aagent_loop",
        "agent_loop",
        "agent_result_of",
        "configure_tool_threads",
        "tool",
        "tool_threads",
    ],
    "steptrace.cli": ["main"],
    "steptrace.export": [
        "ExportFormat",
        "OpenTelemetryExporter",
        "export_run",
        "jsonl_records",
        "otlp_json",
        "otlp_span_id",
        "otlp_trace_id",
    ],
    "steptrace.integrations.langchain": [
        "StepTraceCallbackHandler",
        "instrument",
        "is_instrumented",
        "uninstrument",
    ],
    "steptrace.integrations.litellm": [
        "LiteLLMPrices",
        "instrument",
        "is_instrumented",
        "steptrace_model",
        "uninstrument",
    ],
    "steptrace.integrations.openai_agents": [
        "instrument",
        "is_instrumented",
        "persona",
        "step",
        "uninstrument",
    ],
    "steptrace.integrations.pydantic_ai": [
        "StepTrace",
        "instrument",
        "is_instrumented",
        "uninstrument",
    ],
    "steptrace.llm": [
        "DEFAULT_MAX_OUTPUT_TOKENS",
        "AnthropicProvider",
        "AuthenticationFailed",
        "BadRequest",
        "LlmRequest",
        "LlmResponse",
        "LlmResult",
        "Message",
        "ModelPrice",
        "NoProviderConfigured",
        "OpenAIProvider",
        "PriceTable",
        "Provider",
        "ProviderError",
        "ProviderTimeout",
        "ProviderUnavailable",
        "RateLimited",
        "RecordingProvider",
        "ReplayMissing",
        "ReplayProvider",
        "RetryPolicy",
        "SchemaValidationFailed",
        "ScriptedProvider",
        "ToolCall",
        "ToolSpec",
        "allm_call",
        "configure",
        "estimate_input_tokens",
        "install_default_prices",
        "instrument",
        "llm_call",
        "override_provider",
        "price_info",
        "redact",
        "uninstrument",
    ],
    "steptrace.portal": ["create_app", "serve"],
    "steptrace.shared": [
        "DEFAULT_RESERVATION_TTL",
        "PoolTotals",
        "PostgresPool",
        "RedisPool",
        "SharedPool",
        "SharedPoolUnavailable",
        "register_pool_kind",
    ],
    "steptrace.testing": [
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
    ],
}
"""``__all__`` of each public subpackage, in its order (ruff sorts constants first)."""

SUBPACKAGES = sorted(PUBLIC_NAMES)


def _module(name: str) -> types.ModuleType:
    return importlib.import_module(name)


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_the_public_surface_is_frozen(name: str) -> None:
    assert _module(name).__all__ == PUBLIC_NAMES[name]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_all_is_unique_and_every_name_resolves(name: str) -> None:
    module = _module(name)
    assert len(set(module.__all__)) == len(module.__all__)
    assert [n for n in module.__all__ if getattr(module, n, None) is None] == []


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_public_functions_are_fully_annotated(name: str) -> None:
    module = _module(name)
    for attribute in module.__all__:
        value = getattr(module, attribute)
        if not inspect.isfunction(value):
            continue
        signature = inspect.signature(value)
        assert signature.return_annotation is not inspect.Signature.empty, attribute
        for parameter in signature.parameters.values():
            assert parameter.annotation is not inspect.Parameter.empty, (attribute, parameter.name)
