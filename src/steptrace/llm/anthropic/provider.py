"""The Anthropic provider: ``LlmRequest`` over the official ``anthropic`` SDK.

This module owns the translation between steptrace's provider-neutral types
and the Messages API, and is the only provider module that imports the SDK.
System messages become the ``system`` parameter; assistant tool calls become
``tool_use`` blocks and tool results ``tool_result`` blocks of a user turn
(consecutive user turns are merged, as the API expects all results of one
assistant turn in the next user turn); tools are sent as ``{"name",
"description", "input_schema"}``. The API requires ``max_tokens``: a request
without it is sent with ``DEFAULT_MAX_TOKENS``. ``options`` are passed to
``messages.create`` as keyword arguments (parameters the SDK does not know go
in ``options["extra_body"]``).

``temperature`` is no longer a parameter of the SDK, and models after Claude
Opus 4.6 answer 400 to it, while older ones still honour it: it is sent as an
extra body field, and when a model rejects it the request is sent again at
once without it, and that model's later requests leave it out (logged once).

Structured output: by default (``structured_output="prompt"``) a request with
a ``response_schema`` gets an instruction appended to the system prompt to
answer with JSON matching the schema, which every Claude model and every
Anthropic-compatible server understands. ``structured_output="native"`` sends
the schema as ``output_config.format`` instead (constrained decoding, on the
models that support it). ``llm_call`` validates the answer either way.

Usage follows the steptrace convention: ``input_tokens`` counts every prompt
token, so it is Anthropic's ``input_tokens`` (the uncached part) plus
``cache_creation_input_tokens`` plus ``cache_read_input_tokens``; the last two
are ``cache_write_tokens`` and ``cache_read_tokens``; ``reasoning_tokens`` is
``output_tokens_details.thinking_tokens`` (part of ``output_tokens``, at most
all of it). Streaming reads usage from
``message_start`` and the final ``message_delta``. Counts that are missing or
are not token counts are refused and estimated (~3 characters a token), and
the response says so (``usage_estimated``, ``usage_refused``).

``timeout`` is an overall deadline per request (``_guard``). An answer that is
not a message (a body that is not JSON, HTML from a proxy, an event that does
not parse) is a retryable ``ProviderUnavailable``, and so is a stream that
ends before its stop reason.

SDK clients are created on first use with ``max_retries=0`` (``llm_call``
retries), and a client passed in is copied with ``max_retries=0``;
``close``/``aclose`` close the clients the provider created. SDK errors are
translated into the ``ProviderError`` tree with credentials redacted.
"""

from __future__ import annotations

import email.utils
import functools
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

try:
    import anthropic
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the Anthropic provider needs the anthropic SDK: pip install 'steptrace[anthropic]'"
    ) from exc

from ..._redact import redact, register_credentials
from ...errors import (
    AuthenticationFailed,
    BadRequest,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from .._types import LlmRequest, LlmResponse, Message, ToolCall, parse_json_object, usage_count
from ..providers._guard import (
    UNDECODABLE,
    DeadlineExceeded,
    Malformed,
    PoolExhausted,
    call_sync,
    check_timeout,
    deadline,
    estimate_input,
    estimate_output,
    iterate_sync,
    malformed,
    parsed,
    timed_out,
)

__all__ = ["DEFAULT_MAX_TOKENS", "DEFAULT_TIMEOUT_S", "AnthropicProvider"]

logger = logging.getLogger("steptrace")

DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` sent when the request has none (the Messages API requires one)."""

DEFAULT_TIMEOUT_S = 600.0
"""Seconds a request may take in all, from sending it to the answer's last byte."""

SCHEMA_INSTRUCTION = (
    "Answer with a single JSON value that matches this JSON Schema, and nothing else "
    "(no prose, no code fences):\n{schema}"
)


class AnthropicProvider:
    """Anthropic's Messages API as a steptrace ``Provider``.

    ``client`` may be an ``anthropic.Anthropic`` or ``AsyncAnthropic`` (copied
    with ``max_retries=0``); the kind not given is created when first needed
    from ``api_key`` and ``base_url`` (default: the SDK's environment variables,
    ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL``), or from the given
    client's key and URL. ``timeout`` (seconds) is the overall deadline of
    each request, whichever client sends it; the clients the provider creates
    also use it as the SDK's timeout.
    """

    def __init__(
        self,
        client: anthropic.Anthropic | anthropic.AsyncAnthropic | None = None,
        *,
        async_client: anthropic.AsyncAnthropic | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        name: str = "anthropic",
        timeout: float = DEFAULT_TIMEOUT_S,
        structured_output: Literal["prompt", "native"] = "prompt",
    ) -> None:
        if structured_output not in ("prompt", "native"):
            raise ValueError(
                f"AnthropicProvider: structured_output must be 'prompt' or 'native', "
                f"got {structured_output!r}"
            )
        register_credentials(api_key, client, async_client)  # redacted wherever it shows
        if isinstance(client, anthropic.AsyncAnthropic):
            client, async_client = None, async_client or client
        self.name = name
        self.structured_output = structured_output
        self._given = client
        self._given_async = async_client
        self._api_key = api_key
        self._base_url = base_url
        self._timeout = check_timeout("AnthropicProvider", timeout)
        self._client: anthropic.Anthropic | None = None
        self._async_client: anthropic.AsyncAnthropic | None = None
        self._lock = threading.Lock()
        self._no_temperature: set[str] = set()

    def _settings(self) -> dict[str, Any]:
        source = self._given or self._given_async
        api_key = self._api_key
        base_url = self._base_url
        out: dict[str, Any] = {"max_retries": 0, "timeout": self._timeout}
        if source is not None:
            api_key = api_key or source.api_key
            base_url = base_url or str(source.base_url)
            if api_key is None and source.auth_token is not None:
                out["auth_token"] = source.auth_token
        if api_key is not None:
            out["api_key"] = api_key
        if base_url is not None:
            out["base_url"] = base_url
        return out

    @property
    def client(self) -> anthropic.Anthropic:
        """The synchronous SDK client (created on first use)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    if self._given is not None:
                        self._client = self._given.with_options(max_retries=0)
                    else:
                        self._client = anthropic.Anthropic(**self._settings())
        return self._client

    @property
    def async_client(self) -> anthropic.AsyncAnthropic:
        """The asynchronous SDK client (created on first use)."""
        if self._async_client is None:
            with self._lock:
                if self._async_client is None:
                    if self._given_async is not None:
                        self._async_client = self._given_async.with_options(max_retries=0)
                    else:
                        self._async_client = anthropic.AsyncAnthropic(**self._settings())
        return self._async_client

    def complete(self, request: LlmRequest) -> LlmResponse:
        params = self.params(request)
        try:
            try:
                return self._send(request, params)
            except anthropic.BadRequestError as error:
                if not self._drop_rejected_temperature(error, params):
                    raise
            return self._send(request, params)
        except Exception as error:
            raise self._translate(error, request) from None

    async def acomplete(self, request: LlmRequest) -> LlmResponse:
        params = self.params(request)
        try:
            async with deadline(self._timeout):  # one deadline, a temperature resend included
                try:
                    return await self._asend(request, params)
                except anthropic.BadRequestError as error:
                    if not self._drop_rejected_temperature(error, params):
                        raise
                return await self._asend(request, params)
        except Exception as error:
            raise self._translate(error, request) from None

    def _translate(self, error: Exception, request: LlmRequest) -> Exception:
        """The ``ProviderError`` for a failed request; anything else (the
        caller's ``on_text`` raising, a bug) as it is."""
        if isinstance(error, anthropic.AnthropicError):
            return translate_error(error, self.name, request.model)
        if isinstance(error, DeadlineExceeded):
            return timed_out(self.name, request.model, self._timeout)
        if isinstance(error, UNDECODABLE):
            return malformed(self.name, request.model, error)
        if isinstance(error, PoolExhausted):
            return ProviderUnavailable(
                f"{self.name}: {error}", provider=self.name, model=request.model
            )
        if isinstance(error, TypeError):
            return _missing_credentials(error, self.name, request.model)
        return error

    def _send(self, request: LlmRequest, params: dict[str, Any]) -> LlmResponse:
        messages = self.client.messages
        if not request.stream:
            message = call_sync(functools.partial(messages.create, **params), self._timeout)
            return parsed(response_from_message, message, request)
        assembler = _StreamAssembler(request)
        opened = functools.partial(messages.create, **params, stream=True)
        for event in iterate_sync(opened, self._timeout):
            assembler.take(event)
        return parsed(assembler.response, request)

    async def _asend(self, request: LlmRequest, params: dict[str, Any]) -> LlmResponse:
        messages = self.async_client.messages
        if not request.stream:
            return parsed(response_from_message, await messages.create(**params), request)
        assembler = _StreamAssembler(request)
        async with await messages.create(**params, stream=True) as events:
            async for event in events:
                assembler.take(event)
        return parsed(assembler.response, request)

    def _drop_rejected_temperature(
        self, error: anthropic.BadRequestError, params: dict[str, Any]
    ) -> bool:
        """After a 400 that names ``temperature`` on a request that sent one:
        remember that the model rejects it, take it out, and say to resend."""
        extra = params.get("extra_body")
        if not isinstance(extra, dict) or "temperature" not in extra:
            return False
        if "temperature" not in (error.api_message or str(error)):
            return False
        model = params["model"]
        with self._lock:
            first = model not in self._no_temperature
            self._no_temperature.add(model)
        if first:
            logger.warning(
                "steptrace: %s rejects temperature; sending its requests without it", model
            )
        del extra["temperature"]
        if not extra:
            del params["extra_body"]
        return True

    def close(self) -> None:
        """Close the synchronous client if this provider created it."""
        client, self._client = self._client, None
        if client is not None and self._given is None:
            client.close()

    async def aclose(self) -> None:
        """Close both clients this provider created (the async one on this loop)."""
        self.close()
        client, self._async_client = self._async_client, None
        if client is not None and self._given_async is None:
            await client.close()

    def params(self, request: LlmRequest) -> dict[str, Any]:
        """The keyword arguments of ``messages.create`` for ``request`` (no ``stream``)."""
        system = [m.content for m in request.messages if m.role == "system" and m.content]
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": to_anthropic_messages(request.messages),
        }
        schema = request.response_schema
        if schema is not None:
            if self.structured_output == "native":
                body = schema.get("schema", schema)
                params["output_config"] = {"format": {"type": "json_schema", "schema": body}}
            else:
                system.append(schema_instruction(schema))
        if system:
            params["system"] = "\n\n".join(system)
        if request.tools:
            params["tools"] = [
                {
                    "name": tool.name,
                    **({"description": tool.description} if tool.description else {}),
                    "input_schema": dict(tool.parameters),
                }
                for tool in request.tools
            ]
        params.update(request.options)
        if request.temperature is not None and request.model not in self._no_temperature:
            # No longer an SDK parameter (newer models reject it): sent as an extra field.
            params["extra_body"] = {
                **(params.get("extra_body") or {}),
                "temperature": request.temperature,
            }
        return params


def schema_instruction(response_schema: Mapping[str, Any]) -> str:
    """The system-prompt instruction asking for JSON matching the schema.

    ``response_schema`` is ``{"name": ..., "schema": {...}}`` or a bare schema."""
    schema = response_schema.get("schema", response_schema)
    return SCHEMA_INSTRUCTION.format(schema=json.dumps(schema, sort_keys=True))


def to_anthropic_messages(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Chat messages as Messages API turns (system messages left out)."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "tool":
            role = "user"
            content: str | list[dict[str, Any]] = [
                {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id or "",
                    "content": message.content,
                }
            ]
        elif message.role == "assistant" and message.tool_calls:
            role = "assistant"
            content = [{"type": "text", "text": message.content}] if message.content else []
            content.extend(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.arguments)}
                for c in message.tool_calls
            )
        else:
            role, content = message.role, message.content
        if turns and turns[-1]["role"] == role == "user":
            turns[-1]["content"] = _blocks(turns[-1]["content"]) + _blocks(content)
        else:
            turns.append({"role": role, "content": content})
    return turns


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _tool_call(block_id: str, name: str, raw: str) -> ToolCall:
    arguments, _ = parse_json_object(raw)  # the agent loop tells the model what was wrong
    return ToolCall(id=block_id, name=name, arguments=arguments or {}, raw_arguments=raw)


_DETAILS = "output_tokens_details"
"""Where the Messages API reports ``thinking_tokens`` (part of ``output_tokens``)."""


def _usage(
    counts: Any, request: LlmRequest, text: str, calls: tuple[ToolCall, ...]
) -> dict[str, Any]:
    """``LlmResponse`` usage fields from Anthropic's counts (an SDK usage
    object or a dict): counts that are not token counts are refused, and
    missing or refused input or output counts estimated."""
    refused: list[str] = []

    def count(name: str, owner: Any = counts) -> int | None:
        value = owner.get(name) if isinstance(owner, dict) else getattr(owner, name, None)
        return None if value is None else usage_count(value, name, refused)

    uncached, output = count("input_tokens"), count("output_tokens")
    read = count("cache_read_input_tokens") or 0
    write = count("cache_creation_input_tokens") or 0
    details = counts.get(_DETAILS) if isinstance(counts, dict) else getattr(counts, _DETAILS, None)
    thinking = count("thinking_tokens", details) or 0  # part of output_tokens
    estimated = uncached is None or output is None
    input_tokens = estimate_input(request) if uncached is None else uncached + read + write
    output_tokens = estimate_output(text, calls) if output is None else output
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": min(read, input_tokens),
        "cache_write_tokens": min(write, input_tokens),
        "reasoning_tokens": min(thinking, output_tokens),
        "usage_estimated": estimated,
        "usage_refused": tuple(refused),
    }


def response_from_message(message: Any, request: LlmRequest) -> LlmResponse:
    """An ``LlmResponse`` from an SDK ``Message``; raises ``Malformed`` when
    ``message`` is not one."""
    if not isinstance(message, anthropic.types.Message):
        raise Malformed(f"the answer is {type(message).__name__}, not a message")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in message.content:
        if block.type == "text":
            if not isinstance(block.text, str):
                raise Malformed(f"a text block holds {type(block.text).__name__}")
            texts.append(block.text)
        elif block.type == "tool_use":
            calls.append(_tool_call(block.id, block.name, json.dumps(block.input)))
    text = "".join(texts)
    return LlmResponse(
        text=text,
        model=message.model,
        tool_calls=tuple(calls),
        response_id=message.id,
        finish_reason=message.stop_reason,
        **_usage(message.usage, request, text, tuple(calls)),
    )


class _StreamAssembler:
    """Builds the ``LlmResponse`` of a stream from its raw events, calling
    ``on_text`` with every text delta (outside the parsing, so an error of the
    caller's callback is never taken for a malformed event)."""

    def __init__(self, request: LlmRequest) -> None:
        self.on_text = request.on_text
        self.model = request.model
        self.message_id: str | None = None
        self.stop_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.texts: list[str] = []
        self.tools: dict[int, list[str]] = {}  # index -> [id, name, json parts...]

    def take(self, event: Any) -> None:
        """Feed one event, then pass its text to ``on_text``."""
        text = parsed(self.feed, event)
        if text and self.on_text is not None:
            self.on_text(text)

    def _take_usage(self, usage: Any) -> None:
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
            _DETAILS,
        ):
            value = getattr(usage, key, None)
            if value is not None:
                self.usage[key] = value

    def feed(self, event: Any) -> str:
        """Take in one event; returns its text delta."""
        if not _is_sdk_object(event):
            raise Malformed(f"a stream event is {type(event).__name__}, not an event")
        kind = event.type
        if kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                if not isinstance(delta.text, str):
                    raise Malformed(f"a text delta is {type(delta.text).__name__}")
                self.texts.append(delta.text)
                return delta.text
            elif delta.type == "input_json_delta" and event.index in self.tools:
                self.tools[event.index].append(delta.partial_json)
        elif kind == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                self.tools[event.index] = [block.id, block.name]
        elif kind == "message_start":
            self.message_id = event.message.id
            self.model = event.message.model or self.model
            self._take_usage(event.message.usage)
        elif kind == "message_delta":
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            self._take_usage(event.usage)
        return ""

    def response(self, request: LlmRequest) -> LlmResponse:
        if self.stop_reason is None:
            raise Malformed("the stream ended before the answer did (no stop reason)")
        calls = tuple(
            _tool_call(parts[0], parts[1], "".join(parts[2:]))
            for _, parts in sorted(self.tools.items())
        )
        text = "".join(self.texts)
        return LlmResponse(
            text=text,
            model=self.model,
            tool_calls=calls,
            response_id=self.message_id,
            finish_reason=self.stop_reason,
            **_usage(self.usage, request, text, calls),
        )


def _is_sdk_object(value: object) -> bool:
    return isinstance(value, anthropic.BaseModel)


# Error bodies' types, for errors that arrive inside a 200 stream.
_BY_ERROR_TYPE: dict[str, type[ProviderError]] = {
    "authentication_error": AuthenticationFailed,
    "permission_error": AuthenticationFailed,
    "rate_limit_error": RateLimited,
    "overloaded_error": RateLimited,
    "invalid_request_error": BadRequest,
    "not_found_error": BadRequest,
    "request_too_large": BadRequest,
    "timeout_error": ProviderTimeout,
    "api_error": ProviderUnavailable,
}


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _error_class(error: anthropic.APIStatusError) -> type[ProviderError]:
    status = error.status_code
    if isinstance(error, anthropic.AuthenticationError | anthropic.PermissionDeniedError):
        return AuthenticationFailed
    if isinstance(error, anthropic.RateLimitError) or status == 529:
        return RateLimited
    if status == 408:
        return ProviderTimeout
    if status >= 500:
        return ProviderUnavailable
    if status >= 400 and status not in (409,):
        return BadRequest
    # An error event inside a stream (status 200), or a conflict: go by its type.
    return _BY_ERROR_TYPE.get(error.type or "", ProviderUnavailable)


def _missing_credentials(error: TypeError, provider: str, model: str | None) -> Exception:
    """The SDK raises ``TypeError`` when it finds no credentials: that one is an
    authentication failure; any other ``TypeError`` is a bug, returned as is."""
    if "authentication method" not in str(error):
        return error
    return AuthenticationFailed(
        f"{provider}: no Anthropic credentials: set ANTHROPIC_API_KEY or pass api_key=",
        provider=provider,
        model=model,
    )


def translate_error(
    error: anthropic.AnthropicError, provider: str, model: str | None
) -> ProviderError:
    """The steptrace error for an SDK error, its message redacted."""
    if isinstance(error, anthropic.APIStatusError):
        detail = error.api_message or error.message
        kind = f" {error.type}" if error.type else ""
        status = error.status_code
        return _error_class(error)(
            redact(f"{provider}: HTTP {status}{kind}: {detail}"),
            provider=provider,
            model=model,
            status_code=status,
            request_id=error.request_id,
            retry_after=_retry_after(error.response.headers),
        )
    if isinstance(error, anthropic.APITimeoutError):
        return ProviderTimeout(f"{provider}: request timed out", provider=provider, model=model)
    if isinstance(error, anthropic.APIConnectionError):
        cause = f" ({error.__cause__})" if error.__cause__ is not None else ""
        return ProviderUnavailable(
            redact(f"{provider}: connection failed{cause}"), provider=provider, model=model
        )
    return ProviderUnavailable(
        redact(f"{provider}: {type(error).__name__}: {error}"), provider=provider, model=model
    )
