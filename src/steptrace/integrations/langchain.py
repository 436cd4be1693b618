"""Budgets and a record for LangChain and LangGraph (extra ``steptrace[langchain]``).

``StepTraceCallbackHandler`` is a LangChain callback handler: pass it in
``config={"callbacks": [handler]}``, or call ``instrument()`` once to have
LangChain add it to every run it configures (through
``langchain_core.tracers.context.register_configure_hook``, LangChain's way
of adding a handler globally); ``uninstrument()`` stops that. What it does:

- every chat model request (``ChatOpenAI``, ``ChatAnthropic``, any
  ``BaseChatModel``; sync, async, streaming, batches) is pre-flighted in
  ``on_chat_model_start`` against every steptrace budget in force: a request
  whose worst case (a prompt estimate plus the request's ``max_tokens``)
  cannot fit raises ``BudgetExhausted`` there, before LangChain sends it, and
  the chain stops with that error (the handler sets ``raise_error``);
- ``on_llm_end`` records the response's ``usage_metadata`` (cache reads and
  writes included, and reasoning tokens, on the span as
  ``steptrace.reasoning_tokens``) as a ``chat <model>`` span, an ``LlmCall``
  event and ``record_llm_usage`` in the step that made the call, priced by
  steptrace's price source under ``<ls_provider>:<model>``
  (``openai:gpt-4o-mini``); a failed request ends its span as failed and
  frees its hold;
- each tool run is an ``execute_tool <name>`` span and a ``ToolExecution``
  event whose ``tool_use_id`` is the model's tool-call id (``ok`` or
  ``error``), parallel tool calls included.

LangGraph nodes become budgeted steps by decorating the node function:
``@steptrace.step(budget={"max_usd": 0.05}, error_boundary="continue")``. A
node whose budget runs out under ``continue`` returns ``None`` (LangGraph
then applies no update and the graph goes on); ``fail`` and ``escalate``
raise out of ``graph.invoke``.

The handler runs inline (in the caller's context, which is where steptrace
keeps the active step) and works whether or not LangSmith tracing or other
callbacks are on. A failure of steptrace's own code is logged, never raised
into the chain (except in ``configure(strict=True)``); budget errors are.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

try:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.tracers.context import register_configure_hook
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "steptrace.integrations.langchain needs LangChain: pip install 'steptrace[langchain]'"
    ) from exc

from .._config import report_observer_failure
from ..errors import BudgetExhausted, PricingUnknown, StepTraceError
from ..events import ToolExecution
from ..llm.counts import part_count
from ..llm.prices import install_default_prices
from ..spans import Span, SpanKind, end_span
from ..tracing import emit_event, open_span
from ._chains_request import ModelRequest, TokenCounts, new_counts

__all__ = ["StepTraceCallbackHandler", "instrument", "is_instrumented", "uninstrument"]

DEFAULT_MAX_OUTPUT_TOKENS = 4096
"""The output bound of a request that sets no ``max_tokens`` (as ``llm_call``)."""
_CHARS_PER_TOKEN = 3
_TOKENS_PER_MESSAGE = 4
_BUDGET_ERRORS = (BudgetExhausted, PricingUnknown, StepTraceError)


def _content_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            text = part.get("text") if isinstance(part, dict) else part
            total += len(text) if isinstance(text, str) else len(json.dumps(part, default=str))
        return total
    return 0 if content is None else len(str(content))


def _tool_call_chars(calls: Any) -> int:
    total = 0
    for call in calls or ():
        if isinstance(call, dict):
            total += len(str(call.get("name") or ""))
            total += len(json.dumps(call.get("args") or {}, default=str))
    return total


def estimate_input_tokens(messages: Sequence[Any], tools: Any = None) -> int:
    """The pre-flight bound on a chat request's prompt tokens: the rule
    ``llm_call`` uses, ``ceil(characters / 3) + 4`` a message, over message
    contents, tool calls and tool definitions."""
    chars = 0
    for message in messages:
        content = getattr(message, "content", None)
        chars += len(content) if type(content) is str else _content_chars(content)
        # Only AI messages carry tool calls (asking others costs a pydantic miss).
        if getattr(message, "type", None) == "ai":
            chars += _tool_call_chars(getattr(message, "tool_calls", None))
    if tools:
        chars += len(json.dumps(tools, default=str))
    return -(-chars // _CHARS_PER_TOKEN) + _TOKENS_PER_MESSAGE * len(messages)


def _model_of(
    params: dict[str, Any], metadata: dict[str, Any], serialized: dict[str, Any] | None
) -> tuple[str, str, str]:
    """(steptrace model id, provider, model name as LangChain has it)."""
    name = metadata.get("ls_model_name") or params.get("model") or params.get("model_name")
    if not isinstance(name, str) or not name:
        ids = (serialized or {}).get("id")
        name = ids[-1] if isinstance(ids, list) and ids else "unknown"
    provider = metadata.get("ls_provider") or params.get("_type") or ""
    provider = provider if isinstance(provider, str) else ""
    if provider and ":" not in name and "/" not in name:
        return f"{provider}:{name}", provider, name
    return name, provider or "langchain", name


def _max_output(params: dict[str, Any], metadata: dict[str, Any]) -> int:
    value = params.get("max_completion_tokens")
    if type(value) is int and value > 0:
        return value
    value = params.get("max_tokens")
    if type(value) is int and value > 0:
        return value
    value = metadata.get("ls_max_tokens")
    if type(value) is int and value > 0:
        return value
    return DEFAULT_MAX_OUTPUT_TOKENS


_WRITES_5M, _WRITES_1H = "ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"
"""Cache writes split by cache lifetime, as langchain-anthropic reports them
(zeroing its ``cache_creation`` then)."""


def _usage_of(message: Any, llm_output: Any) -> TokenCounts | None:
    """The counts in a message's ``usage_metadata`` (else a legacy
    ``llm_output["token_usage"]``). Parts of a count that are not counts (a
    hostile server's) read as 0, and a part never exceeds its whole."""
    # Read on every response: a part that is absent or 0 (the usual case)
    # skips part_count, whose answer for any falsy value is 0.
    metadata = getattr(message, "usage_metadata", None)
    if isinstance(metadata, dict) and type(metadata.get("input_tokens")) is int:
        input_tokens = metadata["input_tokens"]
        output_tokens = metadata.get("output_tokens")
        output_tokens = output_tokens if type(output_tokens) is int else 0
        cache_read = cache_write = reasoning = 0
        details = metadata.get("input_token_details")
        if isinstance(details, dict) and details:
            value = details.get("cache_read")
            if value:
                cache_read = part_count(value, input_tokens)
            writes = details.get("cache_creation")
            if _WRITES_5M in details or _WRITES_1H in details:
                writes = (
                    part_count(writes, input_tokens)
                    + part_count(details.get(_WRITES_5M), input_tokens)
                    + part_count(details.get(_WRITES_1H), input_tokens)
                )
            if writes:
                cache_write = part_count(writes, input_tokens - cache_read)
        details = metadata.get("output_token_details")
        if isinstance(details, dict):
            value = details.get("reasoning")
            if value:
                reasoning = part_count(value, output_tokens)
        return new_counts(
            TokenCounts, (input_tokens, output_tokens, cache_read, cache_write, reasoning)
        )
    usage = llm_output.get("token_usage") if isinstance(llm_output, dict) else None
    if isinstance(usage, dict) and type(usage.get("prompt_tokens")) is int:
        output_tokens = usage.get("completion_tokens")
        output_tokens = output_tokens if type(output_tokens) is int else 0
        details = usage.get("completion_tokens_details")
        legacy = details.get("reasoning_tokens") if isinstance(details, dict) else None
        return TokenCounts(
            usage["prompt_tokens"],
            output_tokens,
            reasoning_tokens=part_count(legacy, output_tokens),
        )
    return None


def _received_anything(response: Any) -> bool:
    """Whether an errored request's partial ``LLMResult`` holds any answer."""
    for prompt in getattr(response, "generations", None) or ():
        for generation in prompt:
            message = getattr(generation, "message", None)
            if getattr(generation, "text", "") or getattr(message, "usage_metadata", None):
                return True
    return False


def _start(
    serialized: dict[str, Any] | None,
    messages: Sequence[Any],
    metadata: dict[str, Any],
    params: dict[str, Any],
) -> ModelRequest:
    """Pre-flight a request LangChain is about to send and open its span."""
    model, provider, name = _model_of(params, metadata, serialized)
    return ModelRequest.start(
        model,
        system=provider,
        estimated_input_tokens=estimate_input_tokens(messages, params.get("tools")),
        max_output_tokens=_max_output(params, metadata),
        request_model=name,
    )


def _finish(request: ModelRequest, response: Any, error: BaseException | None = None) -> None:
    """Record what a request's ``LLMResult`` says it used and how it ended."""
    outer: Sequence[Sequence[Any]] = getattr(response, "generations", None) or ()
    # One prompt (always, for a chat model's own call) is read as it is.
    generations = outer[0] if len(outer) == 1 else [g for prompt in outer for g in prompt]
    message = getattr(generations[0], "message", None) if generations else None
    usage = _usage_of(message, getattr(response, "llm_output", None))
    info = getattr(message, "response_metadata", None) or {}
    output_chars = 0
    if usage is None:
        for generation in generations:
            output_chars += len(getattr(generation, "text", "") or "")
            output_chars += _tool_call_chars(
                getattr(getattr(generation, "message", None), "tool_calls", None)
            )
    reasons: list[str] = []
    fallback: str | None = None  # the message's own reason, read once
    for generation in generations:
        reason = (getattr(generation, "generation_info", None) or {}).get("finish_reason")
        if reason:
            if type(reason) is not str:
                reason = str(reason)
            if reason:
                reasons.append(reason)
                continue
        if fallback is None:
            fallback = str(info.get("stop_reason") or info.get("finish_reason") or "unknown")
        reasons.append(fallback)
    response_id = info.get("id") or getattr(message, "id", None)
    request.finish(
        usage,
        response_id=response_id if isinstance(response_id, str) else None,
        response_model=info.get("model_name") or info.get("model"),
        finish_reasons=reasons,
        output_chars=output_chars,
        error=error,
    )


class _ToolRun:
    """A tool run between LangChain's ``on_tool_start`` and its end: its span,
    opened where the run started and never current (LangChain runs the tool
    itself), and that context, whose event collectors see its event."""

    __slots__ = ("context", "name", "span", "started", "tool_call_id")

    def __init__(self, name: str, tool_call_id: str) -> None:
        self.name = name
        self.tool_call_id = tool_call_id
        self.context = contextvars.copy_context()
        self.span: Span = open_span(
            f"execute_tool {name}",
            SpanKind.TOOL,
            **{
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": tool_call_id,
            },
        )
        self.started = time.perf_counter()

    def end(self, status: str, tool_call_id: str | None, error: str | None) -> None:
        duration_ms = round((time.perf_counter() - self.started) * 1000)
        tool_call_id = tool_call_id or self.tool_call_id
        if tool_call_id:
            self.span.set("gen_ai.tool.call.id", tool_call_id)
        try:
            self.context.run(
                emit_event,
                ToolExecution(
                    tool_name=self.name,
                    tool_use_id=tool_call_id,
                    duration_ms=duration_ms,
                    status=status,
                    classification="other",
                    iteration=0,
                ),
                span=self.span,
            )
        finally:
            end_span(self.span, error)


class StepTraceCallbackHandler(BaseCallbackHandler):
    """Pre-flight, record and trace every chat model request and tool run of
    the LangChain runs it is given to (see the module docstring)."""

    raise_error = True
    """A budget refusal must stop the chain (LangChain logs and swallows
    handler errors otherwise)."""
    run_inline = True
    """In the caller's context and thread, where the active step is."""
    # LangChain reads these before every event it would hand the handler:
    # plain attributes answer faster than BaseCallbackHandler's properties.
    # Model and tool events (``ignore_llm``, ``ignore_chat_model``,
    # ``ignore_agent``) are wanted; chain, retriever, retry and custom events
    # do nothing here, so LangChain need not call the handler for them (a
    # subclass that handles them sets its flag back to False).
    ignore_llm = ignore_chat_model = ignore_agent = False
    ignore_chain = ignore_retriever = ignore_retry = ignore_custom_event = True

    def __init__(self) -> None:
        install_default_prices()  # keeps a price source you configured
        # Keyed by the run id's int: a UUID's own hash is a Python call, made
        # twice a request (run ids are UUIDs; anything else is its own key).
        self._requests: dict[object, ModelRequest] = {}
        self._tools: dict[UUID, _ToolRun] = {}

    def _guard(self, what: str, action: Any, *args: Any) -> Any:
        try:
            return action(*args)
        except _BUDGET_ERRORS:
            raise
        except Exception as exc:
            report_observer_failure(f"StepTraceCallbackHandler.{what}", exc, None)
            return None

    # --- model requests -------------------------------------------------------
    # The two events of every model request guard their work inline (as
    # ``_guard`` does) rather than through it: one call fewer each.

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # One prompt (always, for a chat model's own call) is read as it is.
        prompt = messages[0] if len(messages) == 1 else [m for each in messages for m in each]
        params = kwargs.get("invocation_params") or {}
        try:
            self._requests[run_id.int if type(run_id) is UUID else run_id] = _start(
                serialized, prompt, metadata or {}, params
            )
        except _BUDGET_ERRORS:
            raise
        except Exception as exc:
            report_observer_failure("StepTraceCallbackHandler.on_chat_model_start", exc, None)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        class _Text:
            type = "human"

            def __init__(self, content: str) -> None:
                self.content = content

        messages = [_Text(p) for p in prompts]
        params = kwargs.get("invocation_params") or {}
        try:
            self._requests[run_id.int if type(run_id) is UUID else run_id] = _start(
                serialized, messages, metadata or {}, params
            )
        except _BUDGET_ERRORS:
            raise
        except Exception as exc:
            report_observer_failure("StepTraceCallbackHandler.on_llm_start", exc, None)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        request = self._requests.pop(run_id.int if type(run_id) is UUID else run_id, None)
        if request is None:
            return
        try:
            _finish(request, response)
        except _BUDGET_ERRORS:
            raise
        except Exception as exc:
            report_observer_failure("StepTraceCallbackHandler.on_llm_end", exc, None)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        request = self._requests.pop(run_id.int if type(run_id) is UUID else run_id, None)
        if request is None:
            return
        response = kwargs.get("response")
        if _received_anything(response):  # a stream broke midway: it was paid for
            self._guard("on_llm_error", _finish, request, response, error)
        else:
            self._guard("on_llm_error", request.fail, error)

    # --- tools ------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "tool"
        call_id = kwargs.get("tool_call_id")
        tool = self._guard(
            "on_tool_start", _ToolRun, str(name), call_id if isinstance(call_id, str) else ""
        )
        if tool is not None:
            self._tools[run_id] = tool

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        tool = self._tools.pop(run_id, None)
        if tool is None:
            return
        status = getattr(output, "status", "success")
        call_id = getattr(output, "tool_call_id", None)
        self._guard(
            "on_tool_end",
            tool.end,
            "error" if status == "error" else "ok",
            call_id if isinstance(call_id, str) else None,
            "tool returned an error" if status == "error" else None,
        )

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        tool = self._tools.pop(run_id, None)
        if tool is not None:
            self._guard("on_tool_error", tool.end, "error", None, type(error).__name__)


class _GlobalSwitch:
    """What LangChain's configure hook reads (only ``.get()`` is called): the
    global handler while instrumented, else None. Registered once a process."""

    def __init__(self) -> None:
        self.handler: StepTraceCallbackHandler | None = None
        self.registered = False

    def get(self, default: Any = None) -> StepTraceCallbackHandler | None:
        return self.handler


_switch = _GlobalSwitch()


def instrument() -> StepTraceCallbackHandler:
    """Add one ``StepTraceCallbackHandler`` to every LangChain run from now on
    (not where the caller already passes one). Idempotent: returns the same
    handler until ``uninstrument()``."""
    if not _switch.registered:
        register_configure_hook(_switch, True, StepTraceCallbackHandler)  # type: ignore[arg-type]
        _switch.registered = True
    if _switch.handler is None:
        _switch.handler = StepTraceCallbackHandler()
    return _switch.handler


def uninstrument() -> None:
    """Stop adding the global handler (a no-op when not instrumented)."""
    _switch.handler = None


def is_instrumented() -> bool:
    return _switch.handler is not None
