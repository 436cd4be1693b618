"""``instrument(client)``: steptrace accounting for an SDK client you already have.

Dispatches on the client's package: an ``openai`` client (``OpenAI``,
``AsyncOpenAI``, or a compatible subclass) goes to ``openai.instrument``, an
``anthropic`` client to ``anthropic.instrument``. Each wraps that one
instance's create method, so calls through it are budget-checked before
sending, accounted, traced and evented like ``llm_call``; ``uninstrument``
restores it. Nothing global is patched.
"""

from __future__ import annotations

from typing import TypeVar

from .._redact import register_credentials

__all__ = ["instrument", "uninstrument"]

C = TypeVar("C")


def _family(client: object) -> str:
    for cls in type(client).__mro__:
        root = cls.__module__.split(".", 1)[0]
        if root in ("openai", "anthropic"):
            return root
    raise TypeError(
        f"instrument: {type(client).__name__} is neither an openai nor an anthropic client"
    )


def instrument(client: C) -> C:
    """Account every call made through ``client``; returns the same client.
    The client's key is registered for redaction (``steptrace._redact``)."""
    register_credentials(client)
    if _family(client) == "openai":
        from .openai.instrument import instrument_openai

        instrument_openai(client)
    else:
        from .anthropic.instrument import instrument_anthropic

        instrument_anthropic(client)
    return client


def uninstrument(client: C) -> C:
    """Undo ``instrument``; returns the same client."""
    if _family(client) == "openai":
        from .openai.instrument import uninstrument_openai

        uninstrument_openai(client)
    else:
        from .anthropic.instrument import uninstrument_anthropic

        uninstrument_anthropic(client)
    return client
