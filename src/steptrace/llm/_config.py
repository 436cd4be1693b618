"""Which model and provider an ``llm_call`` uses, and how it retries.

The model is the explicit one, else the active step's, else the configured
default; none at all is an error. The provider is the explicit one (an
instance or a registered name), else the ``name:`` prefix of the model
(``openai:gpt-4o``), else the configured default provider, else inferred from a
bare model name (``gpt-*``, ``o1``/``o3``/``o4``/``chatgpt-*`` -> openai,
``claude-*`` -> anthropic), which needs that provider's API key in the
environment. The scripted provider is never chosen silently: every failure to
find a provider says how to configure one.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import NoProviderConfigured
from ._types import Provider

__all__ = ["RetryPolicy", "configure", "override_provider", "resolve"]

_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of retryable provider errors: exponential backoff from
    ``base_delay_s`` doubling up to ``max_delay_s``, or the provider's
    ``retry_after`` when it gives one (capped the same way)."""

    max_retries: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def delay(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(float(retry_after), 0.0), self.max_delay_s)
        return min(self.base_delay_s * 2.0 ** (retry - 1), self.max_delay_s)


class _Settings:
    def __init__(self) -> None:
        self.default_model: str | None = None
        self.default_provider: Provider | None = None
        self.providers: dict[str, Provider] = {}
        self.retry = RetryPolicy()
        self.lock = threading.Lock()
        self.override: Provider | None = None
        """Set by ``override_provider``: answers every call, whatever it asks for."""


settings = _Settings()

_BUILTIN = ("openai", "anthropic")

_INFERRED = (
    (("gpt-", "o1", "o3", "o4", "chatgpt-"), "openai", "OPENAI_API_KEY"),
    (("claude-",), "anthropic", "ANTHROPIC_API_KEY"),
)


def configure(
    *,
    default_model: str | None = _UNSET,
    provider: Provider | None = _UNSET,
    providers: Mapping[str, Provider] | None = _UNSET,
    retry: RetryPolicy = _UNSET,
) -> None:
    """Configure the LLM layer; arguments left out keep their value.

    ``default_model`` is used when neither the call nor the active step names
    one. ``provider`` is the provider for models without a ``name:`` prefix.
    ``providers`` registers providers by name (``{"local": OpenAIProvider(
    base_url=...)}`` makes ``local:llama3`` work), replacing earlier ones.
    """
    with settings.lock:
        if default_model is not _UNSET:
            if default_model is not None and (
                not isinstance(default_model, str) or not default_model
            ):
                raise TypeError(
                    f"configure: default_model must be a model name, got {default_model!r}"
                )
            settings.default_model = default_model
        if provider is not _UNSET:
            if provider is not None and not _is_provider(provider):
                raise TypeError(
                    f"configure: provider must implement complete/acomplete, got {provider!r}"
                )
            settings.default_provider = provider
        if providers is not _UNSET:
            registered: dict[str, Provider] = {}
            for name, value in (providers or {}).items():
                if not _is_provider(value):
                    raise TypeError(f"configure: providers[{name!r}] is not a provider: {value!r}")
                registered[name] = value
            settings.providers = registered
        if retry is not _UNSET:
            if not isinstance(retry, RetryPolicy):
                raise TypeError(f"configure: retry must be a RetryPolicy, got {retry!r}")
            settings.retry = retry


def reset_configuration() -> None:
    """Forget every setting (for tests)."""
    with settings.lock:
        settings.default_model = None
        settings.default_provider = None
        settings.providers = {}
        settings.retry = RetryPolicy()


_provider_types: set[type] = set()


def _is_provider(value: object) -> bool:
    """``isinstance(value, Provider)``, remembered per type: the protocol check
    costs tens of microseconds, and this runs on every call."""
    kind = type(value)
    if kind in _provider_types:
        return True
    if isinstance(value, Provider):
        _provider_types.add(kind)
        return True
    return False


def _builtin(name: str) -> Provider:
    """Create (once) the built-in provider of that name from the environment."""
    with settings.lock:
        existing = settings.providers.get(name)
        if existing is not None:
            return existing
    if name == "openai":
        from .openai.provider import OpenAIProvider

        created: Provider = OpenAIProvider()
    elif name == "anthropic":
        from .anthropic.provider import AnthropicProvider

        created = AnthropicProvider()
    else:  # pragma: no cover - callers pass only the two names above
        raise NoProviderConfigured(f"no provider named {name!r}")
    with settings.lock:
        return settings.providers.setdefault(name, created)


def _hint() -> str:
    return (
        "configure one with steptrace.llm.configure(provider=...) (for offline runs and "
        "tests: steptrace.testing.ScriptedProvider), or set OPENAI_API_KEY / "
        "ANTHROPIC_API_KEY for gpt-*/claude-* models"
    )


@contextlib.contextmanager
def override_provider(provider: Provider) -> Iterator[Provider]:
    """Answer every ``llm_call`` with ``provider`` while the block runs, whatever
    provider the code configures or passes; the model name sent is the one the
    call would have sent (a provider-name prefix removed). For replaying a
    program offline (``steptrace replay``) or running it against a scripted
    provider in a test. Overrides do not nest."""
    if not _is_provider(provider):
        raise TypeError(f"override_provider: expected a Provider, got {provider!r}")
    with settings.lock:
        if settings.override is not None:
            raise RuntimeError("override_provider: another override is already active")
        settings.override = provider
    try:
        yield provider
    finally:
        with settings.lock:
            settings.override = None


def resolve(model: str | None, provider: Provider | str | None) -> tuple[Provider, str]:
    """(provider, the model name to send it) for a call; raises NoProviderConfigured."""
    if model is None:
        raise NoProviderConfigured(
            "llm_call: no model: pass model=..., call it inside a step declared with "
            "model=..., or set steptrace.llm.configure(default_model=...)"
        )
    prefix, _, rest = model.partition(":")
    override = settings.override
    if override is not None:
        if rest and (
            prefix == provider
            or (provider is None and (prefix in settings.providers or prefix in _BUILTIN))
        ):
            return override, rest
        return override, model
    if isinstance(provider, str):
        return _named(provider, model), (rest if rest and prefix == provider else model)
    if provider is not None:
        if not _is_provider(provider):
            raise TypeError(f"llm_call: provider must be a Provider or a name, got {provider!r}")
        return provider, model
    if rest and (prefix in settings.providers or prefix in _BUILTIN):
        # Only a known provider name is a prefix: "ft:gpt-4o:org::id" is a model id.
        return _named(prefix, model), rest
    if settings.default_provider is not None:
        return settings.default_provider, model
    for prefixes, name, key in _INFERRED:
        if model.startswith(prefixes):
            if name in settings.providers:
                return settings.providers[name], model
            if not os.environ.get(key):
                raise NoProviderConfigured(
                    f"llm_call: model {model!r} needs the {name} provider, but {key} is not "
                    f"set; set it, or {_hint()}"
                )
            return _builtin(name), model
    raise NoProviderConfigured(f"llm_call: no provider for model {model!r}; {_hint()}")


def _named(name: str, model: str) -> Provider:
    with settings.lock:
        found = settings.providers.get(name)
    if found is not None:
        return found
    if name in ("openai", "anthropic"):
        return _builtin(name)
    known = sorted({"openai", "anthropic", *settings.providers})
    raise NoProviderConfigured(
        f"llm_call: unknown provider {name!r} for model {model!r}; known: {known}. "
        "Register one with steptrace.llm.configure(providers={...})"
    )
