"""steptrace.llm: model calls that respect every budget and leave a record.

``llm_call``/``allm_call`` call a model through a ``Provider`` (OpenAI,
Anthropic, any OpenAI-compatible server, the scripted provider, or replay of a
recorded cassette): pre-flight budget check, retries of retryable provider
errors, the provider's real usage and priced cost recorded into the active
step, an ``LlmCall`` event and GenAI-attributed spans, and output-schema
validation with re-prompting. ``instrument(client)`` gives an SDK client you
already have the same accounting. Providers and SDKs load only when used.
"""

from typing import TYPE_CHECKING, Any

from .._redact import redact
from ..errors import (
    AuthenticationFailed,
    BadRequest,
    NoProviderConfigured,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    SchemaValidationFailed,
)
from ._call import DEFAULT_MAX_OUTPUT_TOKENS, allm_call, estimate_input_tokens, llm_call
from ._config import RetryPolicy, configure, override_provider
from ._types import LlmRequest, LlmResponse, LlmResult, Message, Provider, ToolCall, ToolSpec
from .instrument import instrument, uninstrument
from .prices import ModelPrice, PriceTable, install_default_prices, price_info
from .providers.replay import RecordingProvider, ReplayMissing, ReplayProvider
from .providers.scripted import ScriptedProvider

if TYPE_CHECKING:
    from .anthropic.provider import AnthropicProvider
    from .openai.provider import OpenAIProvider

_LAZY_PROVIDERS = {
    "OpenAIProvider": ".openai.provider",
    "AnthropicProvider": ".anthropic.provider",
}


def __getattr__(name: str) -> Any:
    # The SDK-backed providers load their SDK: import them only when asked for.
    module = _LAZY_PROVIDERS.get(name)
    if module is None:
        raise AttributeError(f"module 'steptrace.llm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
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
]
