"""Budgets, spans and events for an ``openai.OpenAI`` / ``AsyncOpenAI`` client
the user already has.

This module owns patching the client (``instrument_openai``,
``uninstrument_openai``, ``is_instrumented``), the pre-flight estimate
(``estimate_openai_input_tokens`` and its constants) and ``_Call``: one
call's model, pre-flight check, span, ``LlmCall`` event and usage, and the
accounting of a whole response. Streams are handed to ``_streams``,
which owns the stream wrappers (``InstrumentedStream`` and
``AsyncInstrumentedStream``, still importable from here).

``instrument_openai(client)`` wraps ``chat.completions.create`` (and
``chat.completions.parse``) on that one client instance, never the SDK class,
so every call through it gets what ``llm_call`` gives:

- the model defaults to the active step's model when the caller leaves it out;
- a pre-flight ``check_budget`` before anything is sent: the prompt estimate is
  ``ceil(characters / ESTIMATE_CHARS_PER_TOKEN) + ESTIMATE_TOKENS_PER_MESSAGE``
  per message (characters of message contents, assistant tool calls, tool
  definitions and the response schema: a conservative bound for ordinary
  text, no network needed; image and audio parts count by their JSON length,
  which is not a bound), and the output bound is the request's
  ``max_completion_tokens`` / ``max_tokens`` or ``DEFAULT_MAX_OUTPUT_TOKENS``;
- a ``chat <model>`` span of kind ``llm_call`` with OpenTelemetry GenAI
  attributes, an ``LlmCall`` event (``call_id`` the response id) and
  the usage recorded with the response's real token counts and cached prompt
  tokens, priced once (``conclusion``); the response's
  ``completion_tokens_details.reasoning_tokens`` (part of the output tokens)
  is on the span as ``steptrace.reasoning_tokens``. A count that is not a
  token count (``counts.whole_count``: text, a float, a bool, negative, past
  any real call) is refused, named on the span (``steptrace.usage_refused``)
  and in a warning, and estimated: the call is still recorded, its hold
  settled, its span ended, marked ``steptrace.usage_estimated``.

Streaming too: ``stream=True`` forces ``stream_options.include_usage`` and
returns a wrapper (sync or async) that passes every chunk through and does the
accounting when the stream ends. A stream closed early, or broken by an error,
records what is known: the usage chunk if it came, else the pre-flight input
estimate and the streamed characters (span attribute
``steptrace.usage_estimated``). A stream's span, event and usage belong to the
step that made the call, wherever the stream is consumed (if that step has
already ended, the usage goes to the scope where the stream ends, so ledger
rows still add up); a budget exceeded by a stream is raised when the stream
ends, except when the stream is only finalized by garbage collection (the
usage is recorded, and the next call's pre-flight check refuses).

SDK errors pass through unchanged (the caller catches ``openai`` exceptions);
their spans record the message redacted. ``uninstrument_openai`` restores the
original methods; both are idempotent. The SDK's ``chat.completions.stream()``
helper goes through ``create`` and is covered; ``with_raw_response`` is covered
when first used after instrumenting (the SDK caches it). Clients made later
from this one (``client.with_options(...)``) are separate instances and are
not instrumented.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

try:
    import openai
    from openai.resources.chat.completions import AsyncCompletions
    from openai.types.chat import ChatCompletion
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "instrument_openai needs the openai SDK: pip install 'steptrace[openai]'"
    ) from exc

from ..._accounting import release_budget_hold
from ..._config import report_observer_failure
from ...errors import BudgetExhausted, PricingUnknown
from ...runtime import active_step_model_default
from ...spans import Span, SpanKind
from ...tracing import span as _span
from .._call import DEFAULT_MAX_OUTPUT_TOKENS, sdk_preflight
from ..conclusion import Concluded, TokenCounts, arecord, conclude, record
from ..counts import part_count, whole_count
from ._streams import AsyncInstrumentedStream as AsyncInstrumentedStream
from ._streams import InstrumentedStream as InstrumentedStream
from ._streams import astart_stream, fail_span, start_stream

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "ESTIMATE_CHARS_PER_TOKEN",
    "ESTIMATE_TOKENS_PER_MESSAGE",
    "estimate_openai_input_tokens",
    "instrument_openai",
    "is_instrumented",
    "uninstrument_openai",
]

ESTIMATE_CHARS_PER_TOKEN = 3
"""Pre-flight estimate: English text runs ~4 characters a token; 3 errs high."""

ESTIMATE_TOKENS_PER_MESSAGE = 4
"""Pre-flight estimate: each message's framing costs ~3 tokens; 4 errs high."""

logger = logging.getLogger("steptrace")

_METHODS = ("create", "parse")
_ABSENT = (openai.Omit, openai.NotGiven)
_ORIGINAL = "_steptrace_original"

ClientT = TypeVar("ClientT")


def instrument_openai(client: ClientT) -> ClientT:
    """Account, budget-check and trace every chat completion made through
    ``client`` (an ``openai.OpenAI`` or ``AsyncOpenAI``). Returns the client."""
    if not isinstance(client, openai.OpenAI | openai.AsyncOpenAI):
        raise TypeError(
            f"instrument_openai: expected an openai.OpenAI or AsyncOpenAI client, got {client!r}"
        )
    completions = client.chat.completions
    is_async = isinstance(completions, AsyncCompletions)
    for method in _METHODS:
        if _original(completions, method) is not None:
            continue  # already instrumented
        original = getattr(completions, method)
        wrapper = _async_wrapper(original) if is_async else _sync_wrapper(original)
        setattr(wrapper, _ORIGINAL, original)
        setattr(completions, method, wrapper)
    return client


def uninstrument_openai(client: ClientT) -> ClientT:
    """Undo ``instrument_openai`` on ``client`` (a no-op if it is not
    instrumented). Returns the client."""
    if not isinstance(client, openai.OpenAI | openai.AsyncOpenAI):
        raise TypeError(
            f"uninstrument_openai: expected an openai.OpenAI or AsyncOpenAI client, got {client!r}"
        )
    completions = client.chat.completions
    for method in _METHODS:
        if _original(completions, method) is not None:
            delattr(completions, method)
    return client


def is_instrumented(client: object) -> bool:
    """Whether ``instrument_openai`` is in effect on ``client``."""
    if not isinstance(client, openai.OpenAI | openai.AsyncOpenAI):
        return False
    return _original(client.chat.completions, "create") is not None


def _original(completions: object, method: str) -> Any:
    current = vars(completions).get(method)
    return None if current is None else getattr(current, _ORIGINAL, None)


def _content_chars(content: Any) -> int:
    if type(content) is str:
        return len(content)
    if not isinstance(content, list | tuple):
        return 0 if content is None else len(str(content))
    total = 0
    for part in content:
        text = part.get("text") if isinstance(part, Mapping) else None
        total += len(text) if isinstance(text, str) else len(json.dumps(part, default=str))
    return total


def _get(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, Mapping) else getattr(item, key, None)


def _schema_chars(response_format: Any) -> int:
    if response_format is None or isinstance(response_format, _ABSENT):
        return 0
    if isinstance(response_format, type):  # a pydantic model given to parse()
        schema = getattr(response_format, "model_json_schema", None)
        return len(json.dumps(schema())) if callable(schema) else 0
    return len(json.dumps(response_format, default=str))


def estimate_openai_input_tokens(
    messages: Any, tools: Any = None, response_format: Any = None
) -> int:
    """The pre-flight bound on a Chat Completions request's prompt tokens
    (see the module docstring). ``messages`` items may be dicts or SDK objects."""
    chars = 0
    count = 0
    if messages is None or isinstance(messages, _ABSENT):
        messages = ()
    for message in messages:
        count += 1
        if type(message) is dict:  # the common case, kept cheap
            content = message.get("content")
            calls = message.get("tool_calls")
        else:
            content = _get(message, "content")
            calls = _get(message, "tool_calls")
        chars += len(content) if type(content) is str else _content_chars(content)
        for call in calls or ():
            function = _get(call, "function")
            if function is not None:
                chars += len(str(_get(function, "name") or ""))
                chars += len(str(_get(function, "arguments") or ""))
    if tools and not isinstance(tools, _ABSENT):
        chars += len(json.dumps(tools, default=str))
    if response_format is not None:
        chars += _schema_chars(response_format)
    return -(-chars // ESTIMATE_CHARS_PER_TOKEN) + ESTIMATE_TOKENS_PER_MESSAGE * count


def _one_shot(value: Any) -> bool:
    """Whether ``value`` is an iterable that reading would use up."""
    return not (value is None or type(value) is list or isinstance(value, (tuple, *_ABSENT)))


class _Call:
    """One instrumented call: its model, arguments and pre-flight figures."""

    __slots__ = ("estimate", "kwargs", "max_output", "model", "started")

    def __init__(self, model: str, kwargs: dict[str, Any]) -> None:
        self.model = model
        self.kwargs = kwargs
        messages: Any = kwargs.get("messages")
        if _one_shot(messages):
            messages = kwargs["messages"] = list(messages)
        tools: Any = kwargs.get("tools")
        if _one_shot(tools):
            tools = kwargs["tools"] = list(tools)
        self.estimate = estimate_openai_input_tokens(messages, tools, kwargs.get("response_format"))
        max_output = kwargs.get("max_completion_tokens")
        if type(max_output) is not int:
            max_output = kwargs.get("max_tokens")
        self.max_output: int | None = (
            max_output if type(max_output) is int and max_output > 0 else None
        )
        self.started = 0.0

    @classmethod
    def prepare(cls, kwargs: dict[str, Any]) -> _Call | None:
        """Fill in the model and run the pre-flight check; None when there is
        no model at all (the SDK then reports its own error)."""
        model = kwargs.get("model")
        if type(model) is not str or not model:
            model = active_step_model_default()
            if not model:
                return None
        call = cls(model, {**kwargs, "model": model})
        sdk_preflight(model, call.estimate, call.max_output or DEFAULT_MAX_OUTPUT_TOKENS)
        if kwargs.get("stream") is True:
            options = kwargs.get("stream_options")
            options = dict(options) if isinstance(options, Mapping) else {}
            call.kwargs["stream_options"] = {**options, "include_usage": True}
        call.started = time.perf_counter()
        return call

    @property
    def streaming(self) -> bool:
        return self.kwargs.get("stream") is True

    def open_span(self) -> _span:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": self.model,
        }
        if self.max_output is not None:
            attributes["gen_ai.request.max_tokens"] = self.max_output
        temperature = self.kwargs.get("temperature")
        if type(temperature) is float or type(temperature) is int:
            attributes["gen_ai.request.temperature"] = temperature
        return _span(f"chat {self.model}", kind=SpanKind.LLM_CALL, **attributes)

    def conclude(
        self,
        request_span: Span,
        *,
        usage: Any,
        response_id: str | None,
        response_model: str | None,
        finish_reasons: list[str],
        output_chars: int,
    ) -> Concluded:
        """Conclude the call on its span (priced once, ``LlmCall`` emitted);
        without ``usage``, on an estimate."""
        duration_ms = round((time.perf_counter() - self.started) * 1000)
        # The SDK does not validate what the server sent: a whole count that is
        # not a token count is refused (named on the span and logged) and
        # estimated; parts of a count that are not counts read as 0, and never
        # exceed their whole.
        refused: list[str] = []
        input_tokens = _whole(usage, "prompt_tokens", refused)
        output_tokens = _whole(usage, "completion_tokens", refused)
        estimated = input_tokens is None or output_tokens is None
        cached = reasoning = 0
        if input_tokens is None:
            input_tokens = self.estimate
        else:
            details = getattr(usage, "prompt_tokens_details", None)
            cached = part_count(getattr(details, "cached_tokens", None), input_tokens)
        if output_tokens is None:
            output_tokens = -(-output_chars // ESTIMATE_CHARS_PER_TOKEN)
        else:
            details = getattr(usage, "completion_tokens_details", None)
            reasoning = part_count(getattr(details, "reasoning_tokens", None), output_tokens)
        if refused:
            request_span.set("steptrace.usage_refused", refused)
            logger.warning(
                "steptrace: openai %s reported usage that is not token counts (%s); "
                "recorded an estimate instead",
                self.model,
                ", ".join(refused),
            )
        return conclude(
            request_span.metadata,
            model=self.model,
            counts=TokenCounts(input_tokens, output_tokens, cached, 0, reasoning),
            duration_ms=duration_ms,
            response_id=response_id,
            response_model=response_model,
            finish_reasons=finish_reasons,
            estimated=estimated,
        )

    def conclude_completion(self, request_span: Span, result: Any) -> Concluded | None:
        """``conclude`` for a whole response (None if it is not a chat completion)."""
        completion = result
        if not isinstance(completion, ChatCompletion):
            parse = getattr(result, "parse", None)  # a with_raw_response response
            completion = parse() if callable(parse) else None
            if not isinstance(completion, ChatCompletion):
                request_span.set("steptrace.unaccounted", type(result).__name__)
                return None
        choices = completion.choices
        output_chars = 0
        if not _counted(completion.usage):  # only an estimate needs the text
            for choice in choices:
                message = choice.message
                output_chars += len(message.content or "") + len(message.refusal or "")
                for tool_call in message.tool_calls or ():
                    output_chars += len(tool_call.model_dump_json())
        return self.conclude(
            request_span,
            usage=completion.usage,
            response_id=completion.id,
            response_model=completion.model,
            finish_reasons=[choice.finish_reason for choice in choices],
            output_chars=output_chars,
        )


def _whole(usage: Any, name: str, refused: list[str]) -> int | None:
    """The whole count ``name`` of ``usage`` (None: no usage, the count missing,
    or refused into ``refused``)."""
    value = getattr(usage, name, None)
    return None if value is None else whole_count(value, name, refused)


def _counted(usage: Any) -> bool:
    """Whether ``usage`` has both whole counts, each a token count."""
    refused: list[str] = []
    return (
        _whole(usage, "prompt_tokens", refused) is not None
        and _whole(usage, "completion_tokens", refused) is not None
    )


def _sync_wrapper(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def instrumented(*args: Any, **kwargs: Any) -> Any:
        call = _Call.prepare(kwargs)
        if call is None:
            return original(*args, **kwargs)
        if call.streaming:
            return start_stream(call, original, args)
        with call.open_span() as request_span:
            try:
                result = original(*args, **call.kwargs)
            except BaseException as error:
                fail_span(request_span, error)
                raise
            usage = _observed(call.conclude_completion, request_span, result)
        if usage is not None:
            record(usage)
        else:
            release_budget_hold()  # a response it cannot read: nothing to settle
        return result

    return instrumented


def _async_wrapper(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(original)
    async def instrumented(*args: Any, **kwargs: Any) -> Any:
        call = _Call.prepare(kwargs)
        if call is None:
            return await original(*args, **kwargs)
        if call.streaming:
            return await astart_stream(call, original, args)
        async with call.open_span() as request_span:
            try:
                result = await original(*args, **call.kwargs)
            except BaseException as error:
                fail_span(request_span, error)
                raise
            usage = _observed(call.conclude_completion, request_span, result)
        if usage is not None:
            await arecord(usage)
        else:
            release_budget_hold()  # a response it cannot read: nothing to settle
        return result

    return instrumented


def _observed(
    conclude: Callable[[Span, Any], Concluded | None], request_span: Span, result: Any
) -> Concluded | None:
    """Run ``conclude``; a failure of steptrace's own code is reported, not raised
    (except in strict mode), so the caller still gets the response."""
    try:
        return conclude(request_span, result)
    except (BudgetExhausted, PricingUnknown):
        raise
    except Exception as exc:
        report_observer_failure("instrument_openai accounting", exc, request_span)
        return None
