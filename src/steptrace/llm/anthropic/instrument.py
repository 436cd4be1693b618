"""Budgets, usage and traces for an ``anthropic`` client the user already has.

``instrument_anthropic(client)`` replaces ``messages.create`` and
``messages.stream`` on that one client instance (``Anthropic``,
``AsyncAnthropic``, or the Bedrock/Vertex variants; never the SDK's classes),
so that every call through it behaves as an ``llm_call`` does:

1. the model defaults to the active step's model when omitted;
2. before anything is sent, ``check_budget(model, estimate, max_tokens)``
   refuses a call whose worst case cannot fit the active budgets (the
   estimate is ``estimate_anthropic_input_tokens``: conservative, offline);
3. after the response: a ``chat <model>`` span of kind ``LLM_CALL`` with
   OpenTelemetry GenAI attributes, an ``LlmCall`` event (``call_id`` is the
   message id), and the usage recorded with every prompt token counted
   (uncached + cache writes + cache reads), the cache reads as
   ``cache_tokens``, priced once with cache writes priced as such
   (``conclusion``); ``output_tokens_details.thinking_tokens`` (part of the
   output tokens) is on the span as ``steptrace.reasoning_tokens``.

Streams (``stream=True``, or ``messages.stream(...)``) are returned wrapped:
events pass through unchanged and the call is accounted when the stream ends,
is closed, or fails, with the usage known at that point. A stream is
accounted where it ends, which is the calling step unless the stream outlives
it. Every call's span is opened once the call is over and dated from the
request, so no span is left open in the caller's context while it iterates a
stream. SDK errors are not translated: the caller gets what the SDK raises,
and the span is marked ``error``.

Calls made through ``client.beta.messages``, ``client.with_options(...)``
copies or ``with_raw_response`` are not instrumented. ``uninstrument_anthropic``
restores the client. Both are idempotent. The ``anthropic`` package is never
imported unless a client is.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..._accounting import release_budget_hold
from ...runtime import active_step_model_default
from ...spans import SpanKind
from ...tracing import span
from .._call import sdk_preflight
from ..conclusion import Concluded, TokenCounts, conclude
from ..counts import part_count
from ._streams import (
    AsyncInstrumentedStream,
    InstrumentedStream,
    StreamManager,
    arecord_usage,
    record_usage,
)

__all__ = [
    "ESTIMATE_CHARS_PER_TOKEN",
    "ESTIMATE_IMAGE_TOKENS",
    "ESTIMATE_TOKENS_PER_MESSAGE",
    "estimate_anthropic_input_tokens",
    "instrument_anthropic",
    "uninstrument_anthropic",
]

ClientT = TypeVar("ClientT")

ESTIMATE_CHARS_PER_TOKEN = 3
"""Characters per token in the pre-flight estimate: English and code run at
about 4, so counting 3 overestimates, and the pre-flight errs on refusing."""
ESTIMATE_TOKENS_PER_MESSAGE = 4
ESTIMATE_IMAGE_TOKENS = 1600
"""An image block's estimate: the API scales images to about 1.15 megapixels,
about 1,600 tokens, whatever the size of the upload."""

_SAVED = "_steptrace_saved"
_WRAPPED = ("create", "stream")


def _field(block: Any, name: str) -> Any:
    """A field of a content block given as a dict or as an SDK model."""
    return block.get(name) if isinstance(block, Mapping) else getattr(block, name, None)


def _content_chars(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    chars = 0
    for block in content:
        kind = _field(block, "type")
        if kind == "text":
            chars += len(_field(block, "text") or "")
        elif kind == "tool_use":
            chars += len(_field(block, "name") or "") + len(
                json.dumps(_field(block, "input"), default=str)
            )
        elif kind == "tool_result":
            chars += _content_chars(_field(block, "content"))
        elif kind == "image":
            chars += ESTIMATE_IMAGE_TOKENS * ESTIMATE_CHARS_PER_TOKEN
        elif isinstance(block, Mapping):
            chars += len(json.dumps(block, default=str))
        else:
            chars += len(str(block))
    return chars


def estimate_anthropic_input_tokens(params: Mapping[str, Any]) -> int:
    """A conservative, offline bound on the prompt tokens of a ``messages.create``
    call: ``ceil(characters / 3) + 4`` per message, counting the system prompt,
    every message's text, tool-use inputs and tool results (images at
    ``ESTIMATE_IMAGE_TOKENS``, other blocks by their JSON) and the tool
    definitions."""
    chars = _content_chars(params.get("system"))
    messages = params.get("messages") or ()
    count = 0
    for message in messages:
        count += 1
        chars += _content_chars(_field(message, "content"))
    tools = params.get("tools")
    if tools:
        chars += len(json.dumps(list(tools), default=str))
    return math.ceil(chars / ESTIMATE_CHARS_PER_TOKEN) + ESTIMATE_TOKENS_PER_MESSAGE * count


class _Call:
    """One instrumented call: what was asked, and the usage seen so far."""

    __slots__ = (
        "kwargs",
        "message_id",
        "model",
        "response_model",
        "start_ns",
        "started",
        "stop_reason",
        "usage",
    )

    def __init__(self, kwargs: dict[str, Any], model: str) -> None:
        self.kwargs = kwargs
        self.model = model
        self.message_id: str | None = None
        self.response_model: str | None = None
        self.stop_reason: str | None = None
        self.usage: dict[str, int] = {}
        self.started = time.perf_counter()
        self.start_ns = time.time_ns()

    @classmethod
    def begin(cls, kwargs: dict[str, Any]) -> _Call | None:
        """Fill in the model and run the pre-flight check; None when the call
        lacks ``model`` or ``max_tokens`` (the SDK will say so)."""
        model = kwargs.get("model") or active_step_model_default()
        max_tokens = kwargs.get("max_tokens")
        if not isinstance(model, str) or not model or type(max_tokens) is not int:
            return None
        kwargs["model"] = model
        sdk_preflight(model, estimate_anthropic_input_tokens(kwargs), max(max_tokens, 0))
        return cls(kwargs, model)

    def attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "anthropic",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": self.model,
            "gen_ai.request.max_tokens": self.kwargs["max_tokens"],
        }
        temperature = self.kwargs.get("temperature")
        if isinstance(temperature, int | float):
            attributes["gen_ai.request.temperature"] = temperature
        return attributes

    def take_usage(self, usage: Any) -> None:
        if usage is None:
            return
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ):
            value = getattr(usage, key, None)
            if type(value) is int:
                self.usage[key] = value
        # Thinking tokens are part of output_tokens (Anthropic bills them as output).
        thinking = getattr(getattr(usage, "output_tokens_details", None), "thinking_tokens", None)
        if type(thinking) is int:
            self.usage["thinking_tokens"] = thinking

    def take_message(self, message: Any) -> None:
        self.message_id = getattr(message, "id", None)
        self.response_model = getattr(message, "model", None)
        self.stop_reason = getattr(message, "stop_reason", None) or self.stop_reason
        self.take_usage(getattr(message, "usage", None))

    def take_event(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            self.take_message(event.message)
        elif kind == "message_delta":
            self.stop_reason = getattr(event.delta, "stop_reason", None) or self.stop_reason
            self.take_usage(getattr(event, "usage", None))

    def account(self, error: BaseException | None = None) -> Concluded | None:
        """Conclude the call (``conclusion.conclude``: priced once, ``LlmCall``
        emitted) and emit its span; None when no response was seen."""
        usage = self.usage
        read = usage.get("cache_read_input_tokens", 0)
        write = usage.get("cache_creation_input_tokens", 0)
        output = usage.get("output_tokens", 0)
        attributes = self.attributes()
        concluded = None
        if self.message_id is not None:
            concluded = conclude(
                attributes,
                model=self.model,
                counts=TokenCounts(
                    usage.get("input_tokens", 0) + read + write,
                    output,
                    read,
                    write,
                    part_count(usage.get("thinking_tokens"), output),
                ),
                duration_ms=round((time.perf_counter() - self.started) * 1000),
                response_id=self.message_id,
                response_model=self.response_model,
                finish_reasons=[self.stop_reason],
            )
        _ended_span(f"chat {self.model}", attributes, self.start_ns, error)
        if concluded is None:
            release_budget_hold()  # no response: the call's shared-budget hold is freed
        return concluded


def _ended_span(
    name: str, attributes: dict[str, Any], start_ns: int, error: BaseException | None
) -> None:
    """Open and end a span at once, dated from ``start_ns`` (``error`` marks it)."""
    manager = span(name, kind=SpanKind.LLM_CALL, **attributes)
    opened = manager.__enter__()
    opened.start_ns = start_ns
    if error is None or isinstance(error, GeneratorExit):
        manager.__exit__(None, None, None)
    else:
        manager.__exit__(type(error), error, error.__traceback__)


def _sync_create(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create(**kwargs: Any) -> Any:
        call = _Call.begin(kwargs)
        if call is None:
            return original(**kwargs)
        if kwargs.get("stream"):
            try:
                stream = original(**kwargs)
            except BaseException as error:
                call.account(error)
                raise
            return InstrumentedStream(stream, call)
        try:
            message = original(**kwargs)
        except BaseException as error:
            call.account(error)
            raise
        call.take_message(message)
        record_usage(call.account(), None)
        return message

    return create


def _async_create(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def create(**kwargs: Any) -> Any:
        call = _Call.begin(kwargs)
        if call is None:
            return await original(**kwargs)
        if kwargs.get("stream"):
            try:
                stream = await original(**kwargs)
            except BaseException as error:
                call.account(error)
                raise
            return AsyncInstrumentedStream(stream, call)
        try:
            message = await original(**kwargs)
        except BaseException as error:
            call.account(error)
            raise
        call.take_message(message)
        await arecord_usage(call.account(), None)
        return message

    return create


def _stream(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def stream(**kwargs: Any) -> Any:
        call = _Call.begin(kwargs)
        manager = original(**kwargs)
        return manager if call is None else StreamManager(manager, call)

    return stream


def instrument_anthropic(client: ClientT) -> ClientT:
    """Account, budget-check and trace every ``messages.create`` and
    ``messages.stream`` call made through ``client``; returns ``client``."""
    messages = getattr(client, "messages", None)
    if messages is None or not callable(getattr(messages, "create", None)):
        raise TypeError(
            f"instrument_anthropic: expected an anthropic client, got {type(client).__name__}"
        )
    state = vars(messages)
    if _SAVED in state:
        return client
    from anthropic.resources.messages import AsyncMessages  # the client's SDK is loaded

    is_async = isinstance(messages, AsyncMessages)
    state[_SAVED] = {name: state[name] for name in _WRAPPED if name in state}
    create = messages.create
    state["create"] = _async_create(create) if is_async else _sync_create(create)
    state["stream"] = _stream(messages.stream)
    return client


def uninstrument_anthropic(client: ClientT) -> ClientT:
    """Undo ``instrument_anthropic`` (a client not instrumented is left as is)."""
    messages = getattr(client, "messages", None)
    state = vars(messages) if messages is not None else {}
    saved = state.pop(_SAVED, None)
    if saved is not None:
        for name in _WRAPPED:
            state.pop(name, None)
            if name in saved:
                state[name] = saved[name]
    return client
