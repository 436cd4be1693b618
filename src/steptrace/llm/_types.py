"""The data that crosses the provider boundary, and what ``llm_call`` returns.

``LlmRequest`` is what ``llm_call`` hands a provider (the model already stripped
of any ``provider:`` prefix); ``LlmResponse`` is what a provider hands back,
with the provider's own token counts. Both are provider-neutral: each provider
module translates them to and from its SDK. ``LlmResult`` is the caller's view
of a finished call, with the priced cost and parsed output.

Token conventions (the same as the core's ``record_llm_usage``):
``input_tokens`` counts every prompt token, cached ones included;
``cache_read_tokens`` and ``cache_write_tokens`` say how many of them were read
from or written to the provider's prompt cache.

Model output is hostile data, and this module owns the two checks every
provider applies to it where it enters: ``parse_json_object`` (tool-call
arguments: a JSON object nested at most ``MAX_JSON_DEPTH`` deep, or the reason
it is not one) and ``usage_count`` (``counts.whole_count``, the one home of
the rule every reader shares: a token count is an int from 0 to
``MAX_USAGE_COUNT``; anything else is refused, named, and replaced by an
estimate that marks the response ``usage_estimated``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from .counts import MAX_USAGE_COUNT
from .counts import whole_count as usage_count

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_USAGE_COUNT",
    "LlmRequest",
    "LlmResponse",
    "LlmResult",
    "Message",
    "Provider",
    "ToolCall",
    "ToolSpec",
    "json_depth",
    "parse_json_object",
    "usage_count",
    "with_valid_usage",
]

MAX_JSON_DEPTH = 100
"""The deepest nesting of objects and arrays accepted in model output (tool
arguments, structured output) and in replay cassettes; deeper is refused."""


Role = Literal["system", "user", "assistant", "tool"]


def json_depth(value: Any) -> int:
    """How deeply objects and arrays nest in parsed JSON (a scalar is 0),
    computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


_JSON_KINDS = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


def parse_json_object(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(object, None)`` when ``raw`` is a JSON object nested at most
    ``MAX_JSON_DEPTH`` deep (empty text is ``{}``), else ``(None, why)`` with a
    short reason the model can act on. Never raises."""
    if not raw.strip():
        return {}, None
    try:
        parsed = json.loads(raw)
    except RecursionError:
        return None, f"arguments are nested too deeply (over {MAX_JSON_DEPTH} levels)"
    except json.JSONDecodeError as exc:
        return None, (
            f"arguments are not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        )
    except ValueError as exc:  # e.g. an integer too long to convert
        return None, f"arguments are not valid JSON ({str(exc)[:80]})"
    if not isinstance(parsed, dict):
        kind = _JSON_KINDS.get(type(parsed), "a number")
        return None, f"arguments must be a JSON object, got {kind}"
    if json_depth(parsed) > MAX_JSON_DEPTH:
        return None, f"arguments are nested too deeply (over {MAX_JSON_DEPTH} levels)"
    return parsed, None


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCall:
    """A tool call the model asked for. ``arguments`` is the parsed JSON object
    (empty when the model sent anything else; ``raw_arguments`` keeps the text,
    and ``parsed_arguments`` says what was wrong with it)."""

    id: str
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    raw_arguments: str = ""

    def parsed_arguments(self) -> tuple[Mapping[str, Any] | None, str | None]:
        """``(arguments, None)``, or ``(None, why)`` when the model's text is not
        a JSON object (see ``parse_json_object``). Without raw text (a call
        built by hand), ``arguments`` as they are."""
        if not self.raw_arguments:
            return self.arguments, None
        return parse_json_object(self.raw_arguments)


@dataclass(frozen=True, kw_only=True, slots=True)
class Message:
    """One chat message. ``tool_calls`` on assistant messages; ``tool_call_id``
    on tool results."""

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    @classmethod
    def coerce(cls, value: Message | Mapping[str, Any], where: str) -> Message:
        """Accept a ``Message`` or an OpenAI-style dict ``{"role": ..., "content": ...}``."""
        if isinstance(value, Message):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected a Message or a dict, got {type(value).__name__}")
        role = value.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise ValueError(f"{where}: role must be system, user, assistant or tool, got {role!r}")
        content = value.get("content", "")
        if not isinstance(content, str):
            raise TypeError(f"{where}: content must be a string, got {type(content).__name__}")
        return cls(
            role=role,
            content=content,
            tool_call_id=value.get("tool_call_id"),
            name=value.get("name"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolSpec:
    """A tool offered to the model: its name, description and JSON Schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class LlmRequest:
    """A provider-neutral completion request.

    ``response_schema`` asks for native structured output when the provider has
    it (``{"name": ..., "schema": {...}}``); the caller validates regardless.
    When ``stream`` is true the provider must use its streaming API, call
    ``on_text`` with each text delta as it arrives, and still return the whole
    response with its usage. ``options`` passes provider-specific parameters.
    """

    model: str
    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    tools: tuple[ToolSpec, ...] = ()
    response_schema: Mapping[str, Any] | None = None
    stream: bool = False
    on_text: Callable[[str], None] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def fingerprint_data(self) -> dict[str, Any]:
        """The request as plain data, for replay fingerprints and transcripts."""
        return {
            "model": self.model,
            "messages": [
                {
                    "role": m.role,
                    "content": m.content,
                    "tool_calls": [
                        {"id": c.id, "name": c.name, "arguments": dict(c.arguments)}
                        for c in m.tool_calls
                    ],
                    "tool_call_id": m.tool_call_id,
                }
                for m in self.messages
            ],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "tools": [
                {"name": t.name, "description": t.description, "parameters": dict(t.parameters)}
                for t in self.tools
            ],
            "response_schema": None if self.response_schema is None else dict(self.response_schema),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class LlmResponse:
    """What a provider returns: the text, tool calls and its real usage."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    tool_calls: tuple[ToolCall, ...] = ()
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    response_id: str | None = None
    finish_reason: str | None = None
    usage_estimated: bool = False
    """The provider reported no usable counts: ``input_tokens`` and/or
    ``output_tokens`` are steptrace's conservative estimate."""
    usage_refused: tuple[str, ...] = ()
    """The reported counts that were refused (``name=value``), if any."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LlmResult:
    """The result of ``llm_call``: the final attempt's output and the usage of
    every attempt (schema retries included) summed."""

    text: str
    data: Any
    """The validated output when ``output_schema`` was given, else None."""
    tool_calls: tuple[ToolCall, ...]
    model: str
    provider: str
    input_tokens: int
    output_tokens: int
    cache_tokens: int
    cost_usd: float | None
    """Priced cost of all attempts; None when the price is unknown."""
    duration_ms: int
    response_id: str | None
    attempts: int = 1
    finish_reason: str | None = None
    """Why the model stopped, as the provider said it (``stop``, ``length``,
    ``tool_calls``, ``end_turn``, ``max_tokens``, ``refusal``, ...)."""
    usage_estimated: bool = False
    """Some attempt's usage was estimated (see ``LlmResponse.usage_estimated``)."""


@runtime_checkable
class Provider(Protocol):
    """A model provider. Implementations: ``openai``, ``anthropic``,
    ``scripted``, ``replay`` (``steptrace.llm.providers``).

    Contract: translate ``LlmRequest`` to the provider's API and the response
    back, with the provider's real token counts; raise ``ProviderError``
    subclasses (never SDK exceptions) with messages free of credentials; do no
    retrying (``llm_call`` retries what is retryable) and no accounting.
    """

    name: str

    def complete(self, request: LlmRequest) -> LlmResponse: ...

    async def acomplete(self, request: LlmRequest) -> LlmResponse: ...


_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


def with_valid_usage(response: LlmResponse, estimate_input: Callable[[], int]) -> LlmResponse:
    """``response`` when its counts are token counts (what the built-in
    providers return), else a copy with the bad ones refused: input and output
    estimated (``estimate_input()``, ~3 characters a token of the answer),
    cache and reasoning counts zero, and the copy marked ``usage_estimated``."""
    values = [getattr(response, name) for name in _COUNTS]
    if all(type(v) is int and 0 <= v <= MAX_USAGE_COUNT for v in values):
        return response
    refused = list(response.usage_refused)
    checked = {name: usage_count(v, name, refused) for name, v in zip(_COUNTS, values, strict=True)}
    input_tokens = checked["input_tokens"]
    output_tokens = checked["output_tokens"]
    if input_tokens is None:
        input_tokens = estimate_input()
    if output_tokens is None:
        chars = len(response.text) + sum(
            len(c.name) + len(c.raw_arguments) for c in response.tool_calls
        )
        output_tokens = -(-chars // 3)
    return LlmResponse(
        text=response.text,
        model=response.model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        tool_calls=response.tool_calls,
        cache_read_tokens=min(checked["cache_read_tokens"] or 0, input_tokens),
        cache_write_tokens=min(checked["cache_write_tokens"] or 0, input_tokens),
        reasoning_tokens=min(checked["reasoning_tokens"] or 0, output_tokens),
        response_id=response.response_id,
        finish_reason=response.finish_reason,
        usage_estimated=response.usage_estimated
        or checked["input_tokens"] is None
        or checked["output_tokens"] is None,
        usage_refused=tuple(refused),
    )
