"""Budgets and accounting for every model request the OpenAI Agents SDK makes.

Every request of a run goes through a ``agents.models.interface.Model``'s
``get_response`` (``Runner.run``, ``run_sync``) or ``stream_response``
(``Runner.run_streamed``), retries included. ``install`` wraps those two
methods on every ``Model`` subclass that defines them, and on subclasses
defined later (through ``Model.__init_subclass__``), so OpenAI's Responses and
Chat Completions models, LiteLLM's and your own are all covered; ``uninstall``
puts the originals back. Only the wrapper on the instance's own class does the
accounting: a subclass calling ``super().get_response`` is counted once.

Each request is a ``ModelRequest`` (see ``_agents_common``): refused before it
is sent when its worst case cannot fit, then spanned, evented and recorded from
the response's ``usage`` (cached input and reasoning tokens included). A stream
is recorded when it ends; one that breaks or is closed early records what it
got (the usage event if it came, else an estimate), and a stream that failed
before any output records nothing.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from agents.models.fake_id import FAKE_RESPONSES_ID
from agents.models.interface import Model

import steptrace
from steptrace.llm.conclusion import Concluded, TokenCounts, arecord, record
from steptrace.llm.counts import part_count

from ._agents_common import (
    ModelRequest,
    current_tally,
    estimate_chars,
    estimate_schema_chars,
    estimate_tokens,
    price_name,
)
from ._chains_request import new_counts

__all__ = ["install", "installed", "uninstall"]

_METHODS = ("get_response", "stream_response")
_ORIGINAL = "_steptrace_original"
_patched: dict[type, dict[str, Any]] = {}
"""Class -> {method name: what its ``__dict__`` held before}."""
_ARGS = ("system_instructions", "input", "model_settings", "tools", "output_schema", "handoffs")


def installed() -> bool:
    return "__init_subclass__" in vars(Model) and bool(
        getattr(vars(Model)["__init_subclass__"], _ORIGINAL, False)
    )


def install() -> None:
    if installed():
        return
    for cls in _subclasses(Model):
        _wrap_class(cls)

    def init_subclass(cls: type[Model], /, **kwargs: Any) -> None:
        super(Model, cls).__init_subclass__(**kwargs)
        _wrap_class(cls)

    hook = classmethod(init_subclass)
    setattr(hook, _ORIGINAL, True)
    Model.__init_subclass__ = hook  # type: ignore[assignment]


def uninstall() -> None:
    if "__init_subclass__" in vars(Model) and installed():
        del Model.__init_subclass__
    for cls, methods in list(_patched.items()):
        for name, original in methods.items():
            type.__setattr__(cls, name, original)
    _patched.clear()


def _subclasses(cls: type) -> list[type]:
    found: list[type] = []
    pending: list[type] = list(cls.__subclasses__())
    while pending:
        sub = pending.pop()
        if sub not in found:
            found.append(sub)
            pending.extend(sub.__subclasses__())
    return found


def _wrap_class(cls: type) -> None:
    for name in _METHODS:
        method = vars(cls).get(name)
        if method is None or getattr(method, "__isabstractmethod__", False):
            continue
        if getattr(method, _ORIGINAL, None) is not None:
            continue
        wrapper = _wrap_get(method) if name == "get_response" else _wrap_stream(method)
        setattr(wrapper, _ORIGINAL, method)
        _patched.setdefault(cls, {})[name] = method
        type.__setattr__(cls, name, wrapper)


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    values = list(args[: len(_ARGS)])
    values.extend(kwargs.get(name) for name in _ARGS[len(values) :])
    return values


def _model_name(model: Model) -> str:
    name = getattr(model, "model", None)
    return name if isinstance(name, str) and name else type(model).__name__


def _begin(model: Model, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ModelRequest:
    system_instructions, items, settings, tools, output_schema, handoffs = _arguments(args, kwargs)
    chars = len(system_instructions) if isinstance(system_instructions, str) else 0
    count = 1 if chars else 0
    if isinstance(items, str):
        chars += len(items)
        count += 1
    elif items:
        chars += estimate_chars(items)
        count += len(items)
    for tool in tools or ():
        chars += len(str(getattr(tool, "name", ""))) + len(str(getattr(tool, "description", "")))
        chars += estimate_schema_chars(tool, getattr(tool, "params_json_schema", None))
    for handoff in handoffs or ():
        chars += len(str(getattr(handoff, "tool_name", "")))
        chars += len(str(getattr(handoff, "tool_description", "")))
        chars += estimate_schema_chars(handoff, getattr(handoff, "input_json_schema", None))
    if output_schema is not None and not output_schema.is_plain_text():
        chars += estimate_schema_chars(output_schema, output_schema.json_schema())
    name = price_name(_model_name(model))
    provider, colon, _ = name.partition(":")
    tally = current_tally.get()
    request = ModelRequest(
        name,
        provider if colon else "openai",
        estimate_tokens(chars, count),
        getattr(settings, "max_tokens", None),
        0 if tally is None else tally.iterations + 1,
    )
    if tally is not None:  # counted once it may be sent
        tally.iterations += 1
    return request


def _usage(usage: Any) -> TokenCounts | None:
    """Usage from the SDK's ``Usage`` or a Responses ``ResponseUsage``."""
    if usage is None:
        return None
    input_details = getattr(usage, "input_tokens_details", None)
    output_details = getattr(usage, "output_tokens_details", None)
    input_tokens = int(getattr(usage, "input_tokens", 0) or 0)
    output_tokens = int(getattr(usage, "output_tokens", 0) or 0)
    # Parts as the server sent them (the SDK checks their type only): never
    # negative, never more than their whole (part_count; a part that is 0 or
    # absent, the usual case, is 0 without it).
    cache_read = getattr(input_details, "cached_tokens", None)
    cache_read = part_count(cache_read, input_tokens) if cache_read else 0
    cache_write = getattr(input_details, "cache_write_tokens", None)
    cache_write = part_count(cache_write, input_tokens - cache_read) if cache_write else 0
    reasoning = getattr(output_details, "reasoning_tokens", None)
    reasoning = part_count(reasoning, output_tokens) if reasoning else 0
    return new_counts(
        TokenCounts, (input_tokens, output_tokens, cache_read, cache_write, reasoning)
    )


def _wrap_get(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def get_response(self: Model, *args: Any, **kwargs: Any) -> Any:
        if type(self).get_response is not get_response:  # a subclass's wrapper counts it
            return await original(self, *args, **kwargs)
        request = _begin(self, args, kwargs)
        with request.hold:  # released unless settled
            async with request.span() as request_span:
                response = await original(self, *args, **kwargs)
                reported = response.usage
                counted = (
                    _usage(reported) if reported.input_tokens or reported.output_tokens else None
                )
                usage = request.conclude(
                    request_span,
                    counted,
                    response_id=response.response_id or getattr(response, "request_id", None),
                    response_model=None,
                    # Only an estimate needs the output's text.
                    output_chars=0 if counted is not None else estimate_chars(response.output),
                )
            await arecord(usage, request.hold)
        return response

    return get_response


def _wrap_stream(original: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def stream_response(self: Model, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        if type(self).stream_response is not stream_response:
            async for event in original(self, *args, **kwargs):
                yield event
            return
        request = _begin(self, args, kwargs)  # before the stream is opened
        stream = original(self, *args, **kwargs)
        seen = _Seen()
        try:
            async for event in stream:
                seen.observe(event)
                yield event
        except BaseException:
            error = sys.exc_info()[1]
            await _aclose(stream)
            _conclude_broken(request, seen, error)
            raise
        usage = _conclude(request, seen, None)
        await arecord(usage, request.hold)

    return stream_response


class _Seen:
    """What a stream told us so far."""

    __slots__ = ("chars", "response_id", "response_model", "usage")

    def __init__(self) -> None:
        self.usage: TokenCounts | None = None
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.chars = 0

    def observe(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta":
            delta = getattr(event, "delta", "")
            self.chars += len(delta) if isinstance(delta, str) else 0
        elif kind in ("response.completed", "response.incomplete"):
            response = getattr(event, "response", None)
            self.usage = _usage(getattr(response, "usage", None))
            response_id = getattr(response, "id", None)
            self.response_id = response_id if response_id != FAKE_RESPONSES_ID else None
            model = getattr(response, "model", None)
            self.response_model = model if isinstance(model, str) else None


async def _aclose(stream: AsyncIterator[Any]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:
            pass


def _conclude(request: ModelRequest, seen: _Seen, error: BaseException | None) -> Concluded:
    """Span (backdated to the request's start: a span entered inside a
    generator would leak into its consumer's context between items) and event."""
    scope = request.span()
    request_span = scope.__enter__()
    request_span.start_ns = request.started_ns
    try:
        usage = request.conclude(
            request_span,
            seen.usage,
            response_id=seen.response_id,
            response_model=seen.response_model,
            output_chars=seen.chars,
        )
    finally:
        scope.__exit__(None if error is None else type(error), error, None)
    return usage


def _conclude_broken(request: ModelRequest, seen: _Seen, error: BaseException | None) -> None:
    """A stream broken by an error or closed early: record what it got; a
    request that failed before any output records nothing but its span."""
    if seen.usage is None and seen.chars == 0:
        request.hold.release()
        scope = request.span()
        scope.__enter__().start_ns = request.started_ns
        scope.__exit__(None if error is None else type(error), error, None)
        return
    usage = _conclude(request, seen, error)
    try:
        record(usage, request.hold)
    except (steptrace.BudgetExhausted, steptrace.PricingUnknown):
        pass  # recorded; the next pre-flight refuses
