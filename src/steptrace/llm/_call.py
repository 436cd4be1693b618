"""``llm_call`` and ``allm_call``: one model call, budgeted, traced and validated.

Each call: resolve the model and provider (``_config``), then per attempt
refuse before sending if the worst case cannot fit the active budgets, else
hold it on them (``reserve`` with a conservative input estimate and the
output cap; the hold is settled by the usage, released on any failure), send
the request with retries of retryable provider errors (each request its own
``chat <model>`` span with OpenTelemetry GenAI attributes, failed ones marked
``error``), record the provider's real usage and priced cost into the active
step and emit an ``LlmCall`` event (``conclusion``, priced once), and when an
``output_schema`` is given validate the answer: on failure re-prompt with the
errors (the nudge) up to ``schema_retries`` times, one ``SchemaRetry`` event a
retry, and raise ``SchemaValidationFailed`` after the last. ``_Call`` holds
the logic; the sync and async functions only differ in how they wait. Every
request (first try, provider retry, schema retry) is one span under the caller's
current span, as in the OpenTelemetry GenAI conventions.

The input estimate needs no tokenizer and no network: ``ceil(characters / 3)``
plus 4 tokens a message, an overestimate for English and code (which run at
about 4 characters a token), so the pre-flight errs on refusing. A call
without ``max_tokens`` is checked against ``DEFAULT_MAX_OUTPUT_TOKENS``.
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat
from typing import Any

from .. import _context, _json
from .. import spans as _spans
from .._accounting import Hold, check_budget, limits_in_force, reserve
from .._run import active_frame
from ..errors import ProviderError, SchemaValidationFailed
from ..events import SchemaRetry
from ..runtime import active_step_model_default
from ..spans import Span, SpanKind
from ..tracing import emit_event, span
from . import _config
from ._schema import OutputSchema, nudge
from ._types import (
    LlmRequest,
    LlmResponse,
    LlmResult,
    Message,
    Provider,
    ToolCall,
    ToolSpec,
    with_valid_usage,
)
from .conclusion import Concluded, TokenCounts, arecord, conclude, record
from .providers._cassette import response_to_dict

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "allm_call",
    "estimate_input_tokens",
    "llm_call",
    "sdk_preflight",
]

logger = logging.getLogger("steptrace")

agent_iteration: contextvars.ContextVar[int] = contextvars.ContextVar(
    "steptrace_agent_iteration", default=0
)
"""The agent loop's iteration, stamped on ``LlmCall`` events (0 outside a loop)."""

DEFAULT_MAX_OUTPUT_TOKENS = 4096
"""The output bound assumed by the pre-flight check of a call without max_tokens."""

ESTIMATE_CHARS_PER_TOKEN = 3
ESTIMATE_TOKENS_PER_MESSAGE = 4


_measured: dict[int, tuple[ToolSpec | ToolCall, int]] = {}

_dumps = _json.encoder()
"""``json.dumps`` (default options), built once: the text or the exception it gives."""


def _json_chars(item: ToolSpec | ToolCall) -> int:
    """Characters a tool spec or tool call adds to a prompt, measured once per
    object: the same specs are offered, and the same calls resent, every turn
    of an agent loop. The entry holds the object, so its id is not reused while
    cached."""
    cached = _measured.get(id(item))
    if cached is not None and cached[0] is item:
        return cached[1]
    if isinstance(item, ToolSpec):
        chars = len(item.name) + len(item.description) + len(_dumps(dict(item.parameters)))
    else:
        chars = len(item.name) + len(item.raw_arguments or _dumps(dict(item.arguments)))
    if len(_measured) > 8192:
        _measured.clear()
    _measured[id(item)] = (item, chars)
    return chars


def estimate_input_tokens(request: LlmRequest) -> int:
    """A conservative, offline bound on the request's prompt tokens."""
    return _tokens(_chars(request.messages), request)


def _chars(messages: Iterable[Message]) -> int:
    """The characters the estimate counts for ``messages``: text, tool call names and arguments."""
    chars = 0
    for message in messages:
        chars += len(message.content)
        for call in message.tool_calls:
            chars += _json_chars(call)
    return chars


def _tokens(message_chars: int, request: LlmRequest) -> int:
    """The estimate of ``request`` whose messages hold ``message_chars`` characters."""
    chars = message_chars
    for tool in request.tools:
        chars += _json_chars(tool)
    if request.response_schema is not None:
        chars += len(_dumps(dict(request.response_schema)))
    return math.ceil(chars / ESTIMATE_CHARS_PER_TOKEN) + ESTIMATE_TOKENS_PER_MESSAGE * len(
        request.messages
    )


def sdk_preflight(model: str, estimated_input_tokens: int, max_output_tokens: int) -> None:
    """The pre-flight of an instrumented SDK call: ``check_budget``, skipped
    when it could neither refuse nor has a hold of this context to replace
    (no limit in force, nothing pending), the common unbudgeted case, where
    the hold would hold nothing and cost a quarter of the wrapper's work."""
    frame = _context.get_frame() or active_frame()
    if frame.shared or _context.pending_hold.get() is not None:
        check_budget(model, estimated_input_tokens, max_output_tokens)
        return
    for ledger in frame.accounted:  # limits_in_force() without its generators
        if ledger.max_tokens is not None or ledger.max_pico is not None:
            check_budget(model, estimated_input_tokens, max_output_tokens)
            return


class CheckedMessages(list[Message]):
    """A list of ``Message`` objects only, checked when made, for a caller that
    keeps one transcript across many calls and only ever appends ``Message``
    objects to it (the agent loop's working transcript). ``llm_call`` takes
    its messages as they are, where it checks every message of any other
    sequence again on every call, and the pre-flight estimate measures only
    the messages appended since it last did (``chars``): two walks in Python
    that would grow with the run."""

    __slots__ = ("_chars", "_counted")

    def __init__(self, messages: Iterable[Message] = ()) -> None:
        super().__init__(messages)
        for index, message in enumerate(self):
            if not isinstance(message, Message):
                raise TypeError(
                    f"CheckedMessages: item {index} is a {type(message).__name__}, not a Message"
                )
        self._chars = self._counted = 0

    def chars(self) -> int:
        """The characters ``estimate_input_tokens`` counts for these messages,
        measuring only those appended since the last time."""
        chars = self._chars + _chars(self[self._counted :])
        self._chars, self._counted = chars, len(self)
        return chars


def _tool_spec(value: ToolSpec | Mapping[str, Any], index: int) -> ToolSpec:
    if isinstance(value, ToolSpec):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return ToolSpec(
            name=value["name"],
            description=str(value.get("description", "")),
            parameters=value.get("parameters") or {"type": "object", "properties": {}},
        )
    raise TypeError(
        f"llm_call: tools[{index}] must be a ToolSpec or a dict with a name, got {value!r}"
    )


class _Call:
    """The state of one ``llm_call`` across its attempts (no I/O here)."""

    def __init__(
        self,
        prompt: str | None,
        system: str | None,
        model: str | None,
        messages: Sequence[Message | Mapping[str, Any]] | None,
        output_schema: Any,
        schema_retries: int,
        max_tokens: int | None,
        temperature: float | None,
        provider: Provider | str | None,
        tools: Sequence[ToolSpec | Mapping[str, Any]] | None,
        on_text: Callable[[str], None] | None,
    ) -> None:
        if prompt is not None and not isinstance(prompt, str):
            raise TypeError(f"llm_call: prompt must be a string, got {type(prompt).__name__}")
        if system is not None and not isinstance(system, str):
            raise TypeError(f"llm_call: system must be a string, got {type(system).__name__}")
        if isinstance(schema_retries, bool) or not isinstance(schema_retries, int):
            raise TypeError(f"llm_call: schema_retries must be an int, got {schema_retries!r}")
        if schema_retries < 0:
            raise ValueError(f"llm_call: schema_retries must be >= 0, got {schema_retries}")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0
        ):
            raise ValueError(f"llm_call: max_tokens must be a positive int, got {max_tokens!r}")
        built: list[Message] = [] if system is None else [Message(role="system", content=system)]
        self._checked: tuple[CheckedMessages, int, int] | None = None
        """The caller's ``CheckedMessages``, where they start in ``messages``, and how many."""
        if type(messages) is CheckedMessages:
            self._checked = (messages, len(built), len(messages))
            built += messages  # what the walk below gives, without the walk
        else:
            for i, m in enumerate(messages or ()):
                built.append(
                    m if type(m) is Message else Message.coerce(m, f"llm_call: messages[{i}]")
                )
        if prompt is not None:
            built.append(Message(role="user", content=prompt))
        if not any(m.role != "system" for m in built):
            raise ValueError("llm_call: nothing to send: pass a prompt or messages")
        self.messages = tuple(built)
        """What each request sends (a schema retry adds its two messages)."""
        requested_model = model or active_step_model_default() or _config.settings.default_model
        self.provider, self.model = _config.resolve(requested_model, provider)
        self.schema = None if output_schema is None else OutputSchema.of(output_schema)
        self.schema_retries = schema_retries
        self.max_tokens = max_tokens
        if temperature is not None and (
            isinstance(temperature, bool) or not isinstance(temperature, int | float)
        ):
            raise TypeError(f"llm_call: temperature must be a number, got {temperature!r}")
        # 1 and 1.0 must fingerprint alike for replay.
        self.temperature = None if temperature is None else float(temperature)
        if type(tools) is tuple and all(map(isinstance, tools, repeat(ToolSpec))):
            self.tools = tools  # what the line below gives (the agent loop's offer)
        else:
            self.tools = tuple(_tool_spec(t, i) for i, t in enumerate(tools or ()))
        self.on_text = on_text
        self.errors: list[list[str]] = []
        self.input_tokens = self.output_tokens = self.cache_tokens = self.duration_ms = 0
        self.cost_usd: float | None = 0.0
        self.attempt = 0
        self.hold: Hold | None = None
        """The pre-flight hold of the request in flight (None without limits)."""
        self.usage_estimated = False

    # -- per attempt --------------------------------------------------------------

    def request(self) -> LlmRequest:
        request = LlmRequest(
            model=self.model,
            messages=self.messages,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            tools=self.tools,
            response_schema=None if self.schema is None else self.schema.request_format,
            stream=self.on_text is not None,
            on_text=self.on_text,
        )
        self.hold = None
        if limits_in_force():
            self.hold = reserve(
                self.model, self.estimate(request), self.max_tokens or DEFAULT_MAX_OUTPUT_TOKENS
            )
        return request

    def estimate(self, request: LlmRequest) -> int:
        """``estimate_input_tokens(request)``; the caller's ``CheckedMessages``
        (when they are still as they were) measured by their running count."""
        checked = self._checked
        if checked is None or len(checked[0]) != checked[2]:
            return estimate_input_tokens(request)
        transcript, start, count = checked
        messages = request.messages
        others = _chars(messages[:start]) + _chars(messages[start + count :])
        return _tokens(transcript.chars() + others, request)

    def release(self) -> None:
        """Free the request's hold: it failed, or was cancelled, before any usage."""
        if self.hold is not None:
            self.hold.release()

    def request_span(self, request: LlmRequest) -> span:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": self.provider.name,
            "gen_ai.request.model": self.model,
            "steptrace.schema_attempt": self.attempt,
        }
        iteration = agent_iteration.get()
        if iteration:
            attributes["steptrace.agent.iteration"] = iteration
        if request.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = request.max_tokens
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        return span(f"chat {self.model}", kind=SpanKind.LLM_CALL, **attributes)

    def retry_delay(self, error: ProviderError, retry: int, request_span: Span) -> float | None:
        """Seconds to wait before retry number ``retry``, or None to give up."""
        policy = _config.settings.retry
        if not error.retryable or retry > policy.max_retries:
            return None
        delay = policy.delay(retry, error.retry_after)
        request_span.set("steptrace.retry_in_s", delay)
        logger.info(
            "steptrace: %s %s failed (%s); retry %d of %d in %.2fs",
            self.provider.name,
            self.model,
            type(error).__name__,
            retry,
            policy.max_retries,
            delay,
        )
        return delay

    def usage(
        self, request: LlmRequest, response: LlmResponse, duration_ms: int, request_span: Span
    ) -> Concluded:
        """Conclude the call on its (still open) span (priced, described,
        ``LlmCall`` emitted); the caller records it after the span ends, so a
        budget error is not the request's error.

        Counts that are not token counts (a broken or hostile server's) are
        refused and estimated, never raised: the call was made and paid for,
        so it is recorded, marked ``estimated``."""
        response = with_valid_usage(response, lambda: estimate_input_tokens(request))
        if response.usage_estimated:
            self.usage_estimated = True
        if response.usage_refused:
            request_span.set("steptrace.usage_refused", list(response.usage_refused))
            logger.warning(
                "steptrace: %s %s reported usage that is not token counts (%s); "
                "recorded an estimate instead",
                self.provider.name,
                self.model,
                ", ".join(response.usage_refused),
            )
        concluded = conclude(
            request_span.metadata,
            model=self.model,
            counts=TokenCounts(
                response.input_tokens,
                response.output_tokens,
                response.cache_read_tokens,
                response.cache_write_tokens,
                response.reasoning_tokens,
            ),
            duration_ms=duration_ms,
            response_id=response.response_id,
            response_model=response.model,
            finish_reasons=[response.finish_reason],
            estimated=response.usage_estimated,
            iteration=agent_iteration.get(),
        )
        if _spans.transcript_processors:
            _spans.notify_transcript(
                request_span, lambda: (request.fingerprint_data(), response_to_dict(response))
            )
        cost = concluded.cost_usd
        self.input_tokens += response.input_tokens
        self.output_tokens += response.output_tokens
        self.cache_tokens += response.cache_read_tokens
        self.duration_ms += duration_ms
        self.cost_usd = None if cost is None or self.cost_usd is None else self.cost_usd + cost
        return concluded

    def conclude(self, response: LlmResponse) -> LlmResult | None:
        """The result, or None after queueing a schema retry; raises
        ``SchemaValidationFailed`` after the last retry."""
        data: Any = None
        if self.schema is not None and not response.tool_calls:
            data, errors = self.schema.validate(response.text)
            if errors:
                self.errors.append(errors)
                if self.attempt >= self.schema_retries:
                    raise SchemaValidationFailed(self.errors, response.text)
                self.attempt += 1
                emit_event(SchemaRetry(attempt=self.attempt, errors=tuple(errors), nudge_used=True))
                self.messages += (
                    Message(role="assistant", content=response.text),
                    Message(role="user", content=nudge(errors, self.schema)),
                )
                return None
        return LlmResult(
            text=response.text,
            data=data,
            tool_calls=response.tool_calls,
            model=response.model,
            provider=self.provider.name,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_tokens=self.cache_tokens,
            cost_usd=self.cost_usd,
            duration_ms=self.duration_ms,
            response_id=response.response_id,
            attempts=self.attempt + 1,
            finish_reason=response.finish_reason,
            usage_estimated=self.usage_estimated,
        )


def llm_call(
    prompt: str | None = None,
    system: str | None = None,
    *,
    model: str | None = None,
    messages: Sequence[Message | Mapping[str, Any]] | None = None,
    output_schema: Any = None,
    schema_retries: int = 2,
    max_tokens: int | None = None,
    temperature: float | None = None,
    provider: Provider | str | None = None,
    tools: Sequence[ToolSpec | Mapping[str, Any]] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> LlmResult:
    """Call a model once (plus schema retries), inside every active budget.

    ``model``: explicit, else the active step's, else the configured default.
    ``messages`` come after ``system`` and before ``prompt``. ``output_schema``:
    a pydantic model, dataclass, TypedDict or JSON Schema dict; the validated
    value is ``result.data``. ``on_text`` streams text deltas to a callback.
    Raises ``BudgetExhausted`` (before sending when the worst case cannot fit),
    ``SchemaValidationFailed``, ``ProviderError`` subclasses after retries, and
    ``NoProviderConfigured``.
    """
    call = _Call(
        prompt,
        system,
        model,
        messages,
        output_schema,
        schema_retries,
        max_tokens,
        temperature,
        provider,
        tools,
        on_text,
    )
    while True:
        request = call.request()
        retry = 0
        try:
            while True:
                started = time.perf_counter()
                try:
                    with call.request_span(request) as request_span:
                        response = call.provider.complete(request)
                        duration_ms = round((time.perf_counter() - started) * 1000)
                        usage = call.usage(request, response, duration_ms, request_span)
                    break
                except ProviderError as error:  # the request's span ended as an error
                    retry += 1
                    delay = call.retry_delay(error, retry, request_span)
                    if delay is None:
                        raise
                time.sleep(delay)
        except BaseException:
            call.release()  # no usage will come: failed, interrupted or cancelled
            raise
        record(usage, call.hold)
        result = call.conclude(response)
        if result is not None:
            return result


async def allm_call(
    prompt: str | None = None,
    system: str | None = None,
    *,
    model: str | None = None,
    messages: Sequence[Message | Mapping[str, Any]] | None = None,
    output_schema: Any = None,
    schema_retries: int = 2,
    max_tokens: int | None = None,
    temperature: float | None = None,
    provider: Provider | str | None = None,
    tools: Sequence[ToolSpec | Mapping[str, Any]] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> LlmResult:
    """``llm_call`` for async code (same arguments, same guarantees)."""
    import asyncio  # deferred: only async callers pay for it, and they have it loaded

    call = _Call(
        prompt,
        system,
        model,
        messages,
        output_schema,
        schema_retries,
        max_tokens,
        temperature,
        provider,
        tools,
        on_text,
    )
    while True:
        request = call.request()
        retry = 0
        try:
            while True:
                started = time.perf_counter()
                try:
                    async with call.request_span(request) as request_span:
                        response = await call.provider.acomplete(request)
                        duration_ms = round((time.perf_counter() - started) * 1000)
                        usage = call.usage(request, response, duration_ms, request_span)
                    break
                except ProviderError as error:  # the request's span ended as an error
                    retry += 1
                    delay = call.retry_delay(error, retry, request_span)
                    if delay is None:
                        raise
                await asyncio.sleep(delay)
        except BaseException:
            call.release()  # no usage will come: failed, interrupted or cancelled
            raise
        await arecord(usage, call.hold)
        result = call.conclude(response)
        if result is not None:
            return result
