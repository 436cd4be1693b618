"""The OpenAI provider: ``LlmRequest`` over the official ``openai`` SDK.

This module owns the translation between steptrace's provider-neutral types and
the Chat Completions API, and is the only provider module that imports the
``openai`` SDK. It serves OpenAI and any OpenAI-compatible server (vLLM,
llama.cpp server, Ollama, ...) through ``base_url``.

Request: messages map one to one (assistant tool calls become ``tool_calls``
with JSON-text arguments, tool results ``role: tool`` messages); ``max_tokens``
is sent as ``max_completion_tokens`` (``max_tokens_field="max_tokens"`` for
older compatible servers); tools are function tools; a ``response_schema``
(``{"name": ..., "schema": {...}}``) becomes ``response_format`` of type
``json_schema`` with ``strict`` false unless the schema mapping says otherwise
(strict mode rejects many ordinary schemas; ``llm_call`` validates anyway).
``request.options`` are passed to ``chat.completions.create`` as keyword
arguments (``seed``, ``top_p``, ``reasoning_effort``, ``extra_body``, ...).
Streaming sends ``stream_options={"include_usage": True}`` so streamed calls
are accounted too, calls ``on_text`` with each content delta and assembles tool
calls from their deltas.

Usage follows the steptrace convention, which is OpenAI's: ``input_tokens`` is
``prompt_tokens`` (cached tokens included), ``cache_read_tokens`` is
``prompt_tokens_details.cached_tokens``, ``reasoning_tokens`` comes from
``completion_tokens_details`` (already inside ``output_tokens``). A server that
returns no usage at all (some compatible ones), or counts that are not token
counts (negative, strings, absurd), is counted by a conservative estimate of
~3 characters a token, never as free, and the response says so
(``usage_estimated``, with the refused values in ``usage_refused``).

``timeout`` is an overall deadline per request (``_guard``). An answer that is
not a chat completion (a body that is not JSON, HTML from a proxy, a stream
event that does not parse) is a retryable ``ProviderUnavailable``, and so is a
stream that ends before its finish reason: a cut stream is never a success.

SDK clients are created on first use with ``max_retries=0`` (``llm_call``
retries, each retry visible in the trace), and a client passed in is copied
with ``max_retries=0``. An ``AsyncOpenAI`` is bound to the event loop it first
ran on, so the async clients this provider creates are kept one per loop.
SDK errors are translated into the ``ProviderError`` tree with credentials
redacted, and raised without the SDK error chained (its text may hold them).
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import re
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Literal

try:
    import openai
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the OpenAI provider needs the openai SDK: pip install 'steptrace[openai]'"
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

__all__ = ["DEFAULT_TIMEOUT_S", "OpenAIProvider", "translate_error"]

DEFAULT_TIMEOUT_S = 600.0
"""Seconds a request may take in all, from sending it to the answer's last byte."""

_SCHEMA_NAME = re.compile(r"[^a-zA-Z0-9_-]")


class OpenAIProvider:
    """OpenAI's Chat Completions API (or a compatible server) as a ``Provider``.

    ``client`` may be an ``openai.OpenAI`` or ``AsyncOpenAI`` (copied with
    ``max_retries=0``); the kind not given is created when first needed from
    ``api_key`` and ``base_url`` (default: the SDK's environment variables,
    ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``), or from the given client's key,
    URL, organization and project. ``timeout`` (seconds) is the overall
    deadline of each request, whichever client sends it; the clients the
    provider creates also use it as the SDK's timeout. ``close()`` /
    ``aclose()`` release the clients it created.
    """

    def __init__(
        self,
        client: openai.OpenAI | openai.AsyncOpenAI | None = None,
        *,
        async_client: openai.AsyncOpenAI | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        name: str = "openai",
        timeout: float = DEFAULT_TIMEOUT_S,
        max_tokens_field: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens",
    ) -> None:
        if max_tokens_field not in ("max_completion_tokens", "max_tokens"):
            raise ValueError(
                "OpenAIProvider: max_tokens_field must be 'max_completion_tokens' or "
                f"'max_tokens', got {max_tokens_field!r}"
            )
        register_credentials(api_key, client, async_client)  # redacted wherever it shows
        if isinstance(client, openai.AsyncOpenAI):
            client, async_client = None, async_client or client
        self.name = name
        self.max_tokens_field = max_tokens_field
        self._given = client
        self._given_async = async_client
        self._api_key = api_key
        self._base_url = base_url
        self._timeout = check_timeout("OpenAIProvider", timeout)
        self._client: openai.OpenAI | None = None
        self._async_copy: openai.AsyncOpenAI | None = None
        self._async_by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, openai.AsyncOpenAI
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _settings(self) -> dict[str, Any]:
        """Constructor arguments for a client this provider creates."""
        source = self._given or self._given_async
        out: dict[str, Any] = {"max_retries": 0, "timeout": self._timeout}
        api_key, base_url = self._api_key, self._base_url
        if source is not None:
            api_key = api_key or source.api_key
            base_url = base_url or str(source.base_url)
            out["organization"] = source.organization
            out["project"] = source.project
        if api_key is not None:
            out["api_key"] = api_key
        if base_url is not None:
            out["base_url"] = base_url
        return out

    @property
    def client(self) -> openai.OpenAI:
        """The synchronous SDK client (created on first use)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    if self._given is not None:
                        self._client = self._given.with_options(max_retries=0)
                    else:
                        self._client = openai.OpenAI(**self._settings())
        return self._client

    @property
    def async_client(self) -> openai.AsyncOpenAI:
        """The asynchronous SDK client for the running event loop (created on first use)."""
        if self._given_async is not None:
            if self._async_copy is None:
                with self._lock:
                    if self._async_copy is None:
                        self._async_copy = self._given_async.with_options(max_retries=0)
            return self._async_copy
        loop = asyncio.get_running_loop()
        found = self._async_by_loop.get(loop)
        if found is None:
            with self._lock:
                found = self._async_by_loop.get(loop)
                if found is None:
                    found = self._async_by_loop[loop] = openai.AsyncOpenAI(**self._settings())
        return found

    def close(self) -> None:
        """Close the synchronous client if this provider created or copied it."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._given is None:
            client.close()

    async def aclose(self) -> None:
        """Close the asynchronous client this provider created for the running loop."""
        if self._given_async is not None:
            return
        with self._lock:
            client = self._async_by_loop.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def complete(self, request: LlmRequest) -> LlmResponse:
        params = self.params(request)
        try:
            completions = self.client.chat.completions
            if not request.stream:
                create = functools.partial(completions.create, **params)
                completion = call_sync(create, self._timeout)
                return parsed(response_from_completion, completion, request, self.name)
            assembler = _StreamAssembler(request)
            opened = functools.partial(completions.create, **params, **_STREAM)
            for chunk in iterate_sync(opened, self._timeout):
                assembler.take(chunk)
            return parsed(assembler.response)
        except Exception as error:
            raise self._translate(error, request) from None

    async def acomplete(self, request: LlmRequest) -> LlmResponse:
        params = self.params(request)
        try:
            completions = self.async_client.chat.completions
            async with deadline(self._timeout):
                if not request.stream:
                    completion = await completions.create(**params)
                    return parsed(response_from_completion, completion, request, self.name)
                assembler = _StreamAssembler(request)
                async with await completions.create(**params, **_STREAM) as chunks:
                    async for chunk in chunks:
                        assembler.take(chunk)
                return parsed(assembler.response)
        except Exception as error:
            raise self._translate(error, request) from None

    def _translate(self, error: Exception, request: LlmRequest) -> Exception:
        """The ``ProviderError`` for a failed request; anything else (the
        caller's ``on_text`` raising, a bug) as it is."""
        if isinstance(error, openai.OpenAIError):
            return translate_error(error, self.name, request.model)
        if isinstance(error, DeadlineExceeded):
            return timed_out(self.name, request.model, self._timeout)
        if isinstance(error, UNDECODABLE):
            return malformed(self.name, request.model, error)
        if isinstance(error, PoolExhausted):
            return ProviderUnavailable(
                f"{self.name}: {error}", provider=self.name, model=request.model
            )
        return error

    def params(self, request: LlmRequest) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for ``request``
        (without the streaming ones)."""
        params: dict[str, Any] = {
            "model": request.model,
            "messages": to_openai_messages(request.messages),
        }
        if request.max_tokens is not None:
            params[self.max_tokens_field] = request.max_tokens
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        **({"description": tool.description} if tool.description else {}),
                        "parameters": dict(tool.parameters),
                    },
                }
                for tool in request.tools
            ]
        if request.response_schema is not None:
            params["response_format"] = response_format(request.response_schema)
        params.update(request.options)
        return params


_STREAM: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}


def response_format(response_schema: Mapping[str, Any]) -> dict[str, Any]:
    """The ``json_schema`` response format for ``{"name": ..., "schema": {...}}``
    (a bare JSON Schema is accepted too, named ``output``)."""
    if "schema" in response_schema:
        schema = response_schema["schema"]
        name = str(response_schema.get("name") or "output")
    else:
        schema, name = response_schema, "output"
    json_schema: dict[str, Any] = {
        "name": _SCHEMA_NAME.sub("_", name)[:64] or "output",
        "schema": dict(schema),
        "strict": bool(response_schema.get("strict", False)),
    }
    description = response_schema.get("description")
    if isinstance(description, str) and description:
        json_schema["description"] = description
    return {"type": "json_schema", "json_schema": json_schema}


def to_openai_messages(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Chat messages as Chat Completions message objects."""
    out: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role}
        if message.role == "assistant" and message.tool_calls:
            if message.content:
                item["content"] = message.content
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": call.raw_arguments or json.dumps(dict(call.arguments)),
                    },
                }
                for call in message.tool_calls
            ]
        else:
            item["content"] = message.content
        if message.role == "tool":
            item["tool_call_id"] = message.tool_call_id or ""
        elif message.name:
            item["name"] = message.name
        out.append(item)
    return out


def _tool_call(call_id: str, name: str, raw: str) -> ToolCall:
    if not isinstance(raw, str):
        raise Malformed(f"tool call arguments are {type(raw).__name__}, not text")
    arguments, _ = parse_json_object(raw)  # the agent loop tells the model what was wrong
    return ToolCall(id=call_id, name=name, arguments=arguments or {}, raw_arguments=raw)


def _usage(
    usage: Any, request: LlmRequest, text: str, calls: tuple[ToolCall, ...]
) -> dict[str, Any]:
    """``LlmResponse`` usage fields from an SDK ``CompletionUsage``: counts that
    are not token counts are refused, and missing or refused input or output
    counts estimated."""
    refused: list[str] = []

    def count(owner: Any, name: str) -> int | None:
        value = getattr(owner, name, None)
        return None if value is None else usage_count(value, name, refused)

    prompt = getattr(usage, "prompt_tokens_details", None)
    completion = getattr(usage, "completion_tokens_details", None)
    input_tokens = count(usage, "prompt_tokens")
    output_tokens = count(usage, "completion_tokens")
    estimated = input_tokens is None or output_tokens is None
    if input_tokens is None:
        input_tokens = estimate_input(request)
    if output_tokens is None:
        output_tokens = estimate_output(text, calls)
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": min(count(prompt, "cached_tokens") or 0, input_tokens),
        "cache_write_tokens": min(count(prompt, "cache_write_tokens") or 0, input_tokens),
        "reasoning_tokens": min(count(completion, "reasoning_tokens") or 0, output_tokens),
        "usage_estimated": estimated,
        "usage_refused": tuple(refused),
    }


def response_from_completion(
    completion: Any, request: LlmRequest, provider: str = "openai"
) -> LlmResponse:
    """An ``LlmResponse`` from an SDK ``ChatCompletion``.

    A refusal with no content becomes the text, with ``finish_reason`` ``refusal``.
    Raises ``Malformed`` when ``completion`` is not a chat completion."""
    if not isinstance(completion, openai.types.chat.ChatCompletion):
        raise Malformed(f"the answer is {type(completion).__name__}, not a chat completion")
    if not completion.choices:
        raise ProviderUnavailable(
            f"{provider}: the server returned no choices",
            provider=provider,
            model=request.model,
            request_id=completion.id,
        )
    choice = completion.choices[0]
    message = choice.message
    finish_reason: str | None = choice.finish_reason
    text = message.content
    if text is None:
        text = message.refusal or ""
        if message.refusal:
            finish_reason = "refusal"
    if not isinstance(text, str):
        raise Malformed(f"the message content is {type(text).__name__}, not text")
    calls: list[ToolCall] = []
    for call in message.tool_calls or ():
        if call.type == "function":
            calls.append(_tool_call(call.id, call.function.name, call.function.arguments))
        else:  # a custom (free-form) tool call: its input is not JSON
            calls.append(
                ToolCall(id=call.id, name=call.custom.name, raw_arguments=call.custom.input)
            )
    return LlmResponse(
        text=text,
        model=completion.model or request.model,
        tool_calls=tuple(calls),
        response_id=completion.id,
        finish_reason=finish_reason,
        **_usage(completion.usage, request, text, tuple(calls)),
    )


class _StreamAssembler:
    """Builds the ``LlmResponse`` of a stream from its chunks, calling
    ``on_text`` with every content delta (outside the parsing, so an error of
    the caller's callback is never taken for a malformed chunk)."""

    def __init__(self, request: LlmRequest) -> None:
        self.request = request
        self.on_text = request.on_text
        self.model = request.model
        self.response_id: str | None = None
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.texts: list[str] = []
        self.refusals: list[str] = []
        self.tools: dict[int, list[str]] = {}  # index -> [id, name, argument parts...]

    def take(self, chunk: Any) -> None:
        """Feed one chunk, then pass its text to ``on_text``."""
        text = parsed(self.feed, chunk)
        if text and self.on_text is not None:
            self.on_text(text)

    def feed(self, chunk: Any) -> str:
        """Take in one chunk; returns its content delta."""
        if not isinstance(chunk, openai.types.chat.ChatCompletionChunk):
            raise Malformed(f"a stream event is {type(chunk).__name__}, not a chunk")
        self.response_id = self.response_id or chunk.id
        self.model = chunk.model or self.model
        if chunk.usage is not None:
            self.usage = chunk.usage
        text = ""
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.content:
                if not isinstance(delta.content, str):
                    raise Malformed(f"a content delta is {type(delta.content).__name__}")
                self.texts.append(delta.content)
                text += delta.content
            if delta.refusal:
                self.refusals.append(delta.refusal)
            for call in delta.tool_calls or ():
                parts = self.tools.setdefault(call.index, ["", ""])
                if call.id:
                    parts[0] = call.id
                function = call.function
                if function is not None:
                    if function.name and not parts[1]:
                        parts[1] = function.name
                    if function.arguments:
                        parts.append(function.arguments)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        return text

    def response(self) -> LlmResponse:
        if self.finish_reason is None:
            raise Malformed("the stream ended before the answer did (no finish reason)")
        text = "".join(self.texts)
        finish_reason = self.finish_reason
        if not text and self.refusals:
            text, finish_reason = "".join(self.refusals), "refusal"
        calls = tuple(
            _tool_call(parts[0], parts[1], "".join(parts[2:]))
            for _, parts in sorted(self.tools.items())
        )
        return LlmResponse(
            text=text,
            model=self.model,
            tool_calls=calls,
            response_id=self.response_id,
            finish_reason=finish_reason,
            **_usage(self.usage, self.request, text, calls),
        )


# Error bodies' types and codes, for errors that arrive inside a 200 stream.
_BY_ERROR_TYPE: dict[str, type[ProviderError]] = {
    "invalid_request_error": BadRequest,
    "invalid_api_key": AuthenticationFailed,
    "requests": RateLimited,
    "tokens": RateLimited,
    "rate_limit_exceeded": RateLimited,
    "insufficient_quota": RateLimited,
    "timeout": ProviderTimeout,
    "server_error": ProviderUnavailable,
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


def _status_class(status: int) -> type[ProviderError]:
    if status in (401, 403):
        return AuthenticationFailed
    if status == 429:
        return RateLimited
    if status == 408:
        return ProviderTimeout
    if status == 409 or status >= 500:  # 409: a lock timeout, retried as the SDK does
        return ProviderUnavailable
    return BadRequest


def translate_error(error: openai.OpenAIError, provider: str, model: str | None) -> ProviderError:
    """The steptrace error for an SDK error, its message redacted.

    401/403 -> ``AuthenticationFailed``; 429 -> ``RateLimited`` (with the
    ``retry-after`` delay); 408 and timeouts -> ``ProviderTimeout``; connection
    failures, 409 and 5xx -> ``ProviderUnavailable``; other 4xx -> ``BadRequest``.
    """
    if isinstance(error, openai.APIStatusError):
        body = error.body if isinstance(error.body, Mapping) else {}
        detail = body.get("message") or error.message
        kind = f" {error.type}" if error.type else ""
        status = error.status_code
        return _status_class(status)(
            redact(f"{provider}: HTTP {status}{kind}: {detail}"),
            provider=provider,
            model=model,
            status_code=status,
            request_id=error.request_id,
            retry_after=_retry_after(error.response.headers),
        )
    if isinstance(error, openai.APITimeoutError):
        return ProviderTimeout(f"{provider}: request timed out", provider=provider, model=model)
    if isinstance(error, openai.APIConnectionError):
        cause = f" ({error.__cause__})" if error.__cause__ is not None else ""
        return ProviderUnavailable(
            redact(f"{provider}: connection failed{cause}"), provider=provider, model=model
        )
    if isinstance(error, openai.APIError):  # an error object inside a 200 stream
        kind = error.type or error.code or ""
        return _BY_ERROR_TYPE.get(kind, ProviderUnavailable)(
            redact(f"{provider}: error in stream{f' {kind}' if kind else ''}: {error.message}"),
            provider=provider,
            model=model,
        )
    if "credentials" in str(error).lower() or "api_key" in str(error):
        return AuthenticationFailed(
            f"{provider}: no OpenAI credentials: set OPENAI_API_KEY or pass api_key=",
            provider=provider,
            model=model,
        )
    return ProviderUnavailable(
        redact(f"{provider}: {type(error).__name__}: {error}"), provider=provider, model=model
    )
