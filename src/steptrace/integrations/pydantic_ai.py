"""steptrace for Pydantic AI (``pip install 'steptrace[pydantic-ai]'``).

``StepTrace`` is a Pydantic AI capability, the framework's own extension
point, so it works on ``Agent.run``, ``run_sync``, ``run_stream``,
``run_stream_events`` and ``iter`` alike:

- each model request (every attempt, streamed or not) is checked before it is
  sent against every active steptrace budget and not sent when its worst case
  cannot fit, then recorded from the response's usage (cache reads and writes;
  reasoning tokens on the span) and priced by the configured price source;
  a provider prefix written with a slash (``anthropic/claude-haiku-4-5``) is
  priced as the model it names. Each request is a ``chat <model>`` span and
  an ``LlmCall`` event;
- function tools are ``execute_tool <tool>`` spans and ``ToolExecution``
  events with the model's tool-call id; arguments that fail validation give
  ``ToolRejected``; output that fails validation and is sent back to the model
  gives ``SchemaRetry`` (``attempt`` 1, 2, ...); each run ends with
  ``LoopComplete`` (``done``, ``budget_exhausted``, ``error``, ``cancelled``).

``instrument()`` (idempotent; ``uninstrument()`` undoes it) adds a recording
``StepTrace()`` to every agent's runs. To give an agent a budget and a
boundary, add one with a scope to the agent you already have:
``Agent(..., capabilities=[StepTrace(step="triage", budget={"max_usd": 0.10},
error_boundary="continue")])`` or ``StepTrace(persona="support", budget=...)``;
each run of that agent then runs inside that step or persona. When its budget
refuses a request, the run ends the way the boundary says: ``fail`` raises
``BudgetExhausted`` from the run call; ``escalate`` raises it marked
escalated (the refusal itself is marked: Pydantic AI re-raises a run's own
error, it lets a capability recover a run but not translate its error);
``continue`` ends the run with a result whose ``output`` is ``None`` (the
ledger row says ``skipped``).

Pydantic AI's own ``UsageLimits`` keep working beside it: both are checked, and
whichever refuses first ends the run with its own error. Pydantic AI's
instrumentation (OpenTelemetry/Logfire) is untouched, on or off.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

try:
    from pydantic_ai.agent import Agent
    from pydantic_ai.capabilities import AbstractCapability
    from pydantic_ai.run import AgentRunResult
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "steptrace.integrations.pydantic_ai needs Pydantic AI: pip install 'steptrace[pydantic-ai]'"
    ) from exc

import steptrace
from steptrace import SchemaRetry, SpanKind, ToolExecution, ToolRejected
from steptrace.llm.conclusion import TokenCounts, arecord
from steptrace.llm.counts import part_count

from ._agents_common import (
    ModelRequest,
    RunTally,
    Scope,
    current_tally,
    estimate_chars,
    estimate_schema_chars,
    estimate_tokens,
    price_name,
    run_status,
)
from ._chains_request import new_counts

__all__ = ["StepTrace", "instrument", "is_instrumented", "uninstrument"]

_ORIGINAL = "_steptrace_original"
_tallied: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "steptrace_pydantic_run", default=None
)
"""The run id whose tally this context holds: one ``LoopComplete`` a run."""


@dataclass
class StepTrace(AbstractCapability[Any]):
    """steptrace budgets and records for an agent's runs (see the module docstring).

    ``step`` or ``persona`` names the scope each run runs in (at most one);
    ``budget`` and ``error_boundary`` are ``@steptrace.step``'s (a persona has
    no boundary). Without either, it only records.
    """

    step: str | None = None
    persona: str | None = None
    budget: Any = None
    error_boundary: str = "fail"
    model: str | None = None
    _scope: Scope | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.step is not None and self.persona is not None:
            raise ValueError("StepTrace: give `step` or `persona`, not both")
        if self.step is not None:
            self._scope = Scope(
                "step",
                self.step,
                budget=self.budget,
                error_boundary=self.error_boundary,
                model=self.model,
                function=f"pydantic_ai.Agent[{self.step}]",
            )
        elif self.persona is not None:
            self._scope = Scope(
                "persona",
                self.persona,
                budget=self.budget,
                error_boundary=self.error_boundary,
                model=None,
                function=f"pydantic_ai.Agent[{self.persona}]",
            )
        elif self.budget is not None or self.error_boundary != "fail":
            raise ValueError("StepTrace: a budget or boundary needs a `step` (or `persona`) name")

    # -- the run --------------------------------------------------------------------

    async def wrap_run(self, ctx: Any, *, handler: Callable[[], Awaitable[Any]]) -> Any:
        run_id = getattr(ctx, "run_id", None) or id(ctx)
        tally = current_tally.get()
        owner = tally is None or _tallied.get() != run_id
        tokens: tuple[Any, Any] | None = None
        if owner:
            tally = RunTally(owner=self)
            tokens = (current_tally.set(tally), _tallied.set(str(run_id)))
        assert tally is not None
        try:
            result = await (handler() if self._scope is None else self._scope.run(handler))
            if result is None:  # a `continue` step refused: the documented result
                tally.refused = True
                result = AgentRunResult(output=None)
        except BaseException as error:
            _escalate_original(error)
            if owner:
                tally.complete(run_status(error, _no_status))
            raise
        finally:
            if tokens is not None:
                current_tally.reset(tokens[0])
                _tallied.reset(tokens[1])
        if owner:
            tally.complete("budget_exhausted" if tally.refused else "done")
        return result

    def _records(self) -> bool:
        """Whether this ``StepTrace`` records the current run: the first one to
        wrap it does (an agent's own and ``instrument()``'s may both be there)."""
        tally = current_tally.get()
        return tally is None or tally.owner is self

    # -- model requests ---------------------------------------------------------------

    async def wrap_model_request(
        self, ctx: Any, *, request_context: Any, handler: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        if not self._records():
            return await handler(request_context)
        request = _begin(request_context)
        with request.hold:  # released unless settled
            async with request.span() as request_span:
                response = await handler(request_context)
                counted = _usage(response.usage)
                usage = request.conclude(
                    request_span,
                    counted,
                    response_id=getattr(response, "provider_response_id", None),
                    response_model=getattr(response, "model_name", None),
                    # Only an estimate needs the output's text.
                    output_chars=0 if counted is not None else estimate_chars(response.parts),
                )
            await arecord(usage, request.hold)
        return response

    # -- tools ------------------------------------------------------------------------

    async def wrap_tool_execute(
        self,
        ctx: Any,
        *,
        call: Any,
        tool_def: Any,
        args: Any,
        handler: Callable[[Any], Awaitable[Any]],
    ) -> Any:
        if not self._records():
            return await handler(args)
        call_id = str(call.tool_call_id or "")
        name = str(call.tool_name)
        started = time.perf_counter()
        status = "error"
        try:
            async with steptrace.span(
                f"execute_tool {name}",
                kind=SpanKind.TOOL,
                **{"gen_ai.tool.name": name, "gen_ai.tool.call.id": call_id},
            ) as tool_span:
                try:
                    result = await handler(args)
                    status = "ok"
                finally:
                    tool_span.set("status", status)
        finally:
            _tool_event(name, call_id, started, status)
        return result

    async def on_tool_validate_error(
        self, ctx: Any, *, call: Any, tool_def: Any, args: Any, error: Any
    ) -> Any:
        tally = current_tally.get()
        if not self._records():
            raise error
        steptrace.emit_event(
            ToolRejected(
                tool_name=str(call.tool_name),
                reason=f"arguments failed validation ({_error_count(error)} error(s))",
                iteration=0 if tally is None else tally.iterations,
            )
        )
        raise error

    # -- output -----------------------------------------------------------------------

    async def on_output_validate_error(
        self, ctx: Any, *, output_context: Any, output: Any, error: Any
    ) -> Any:
        retry = int(getattr(ctx, "retry", 0) or 0)
        asked_again = retry < int(getattr(ctx, "max_retries", 0) or 0)
        if self._records() and asked_again:
            steptrace.emit_event(
                SchemaRetry(attempt=retry + 1, errors=_error_texts(error), nudge_used=True)
            )
        raise error


def _no_status(error: BaseException) -> str | None:
    return None


def _escalate_original(error: BaseException) -> None:
    """Pydantic AI re-raises the run body's own error, not the one ``wrap_run``
    raised (which becomes its ``__context__``); so the escalated copy an
    ``escalate`` step makes is carried onto the refusal the caller will catch."""
    original = error.__cause__
    if (
        isinstance(error, steptrace.BudgetExhausted)
        and error.escalated
        and isinstance(original, steptrace.BudgetExhausted)
        and not original.escalated
    ):
        original.escalated = True
        original.category = error.category
        original.step = error.step
        original.function = error.function


def _begin(request_context: Any) -> ModelRequest:
    model = request_context.model
    name = price_name(str(getattr(model, "model_name", "") or type(model).__name__))
    chars = items = 0
    for message in request_context.messages or ():
        for part in getattr(message, "parts", None) or ():
            items += 1
            chars += _part_chars(part)
    parameters = request_context.model_request_parameters
    for tool in (*parameters.function_tools, *parameters.output_tools):
        chars += len(tool.name) + len(tool.description or "")
        chars += estimate_schema_chars(tool, tool.parameters_json_schema)
    chars += estimate_chars(getattr(parameters, "instruction_parts", None))
    settings = request_context.model_settings or {}
    tally = current_tally.get()
    request = ModelRequest(
        name,
        str(getattr(model, "system", "") or "pydantic_ai"),
        estimate_tokens(chars, items),
        settings.get("max_tokens"),
        0 if tally is None else tally.iterations + 1,
    )
    if tally is not None:  # counted once it may be sent
        tally.iterations += 1
    return request


def _part_chars(part: Any) -> int:
    """A message part's text: its content, or a tool call's name and arguments
    (walked generically only for other shapes; timestamps and ids are not sent)."""
    content = getattr(part, "content", None)
    if type(content) is str:
        chars = len(content)
    else:
        chars = estimate_chars(content) if content is not None else 0
    name = getattr(part, "tool_name", None)
    if type(name) is str:
        chars += len(name)
        args = getattr(part, "args", None)
        chars += len(args) if type(args) is str else estimate_chars(args)
    return chars


def _usage(usage: Any) -> TokenCounts | None:
    if usage is None or not (usage.input_tokens or usage.output_tokens):
        return None
    input_tokens = int(usage.input_tokens or 0)
    output_tokens = int(usage.output_tokens or 0)
    # Pydantic AI fills ``output_reasoning_tokens`` for some providers (Anthropic's
    # thinking tokens) and only ``details["reasoning_tokens"]`` for others (OpenAI).
    reasoning = getattr(usage, "output_reasoning_tokens", None)
    if type(reasoning) is not int or reasoning <= 0:
        details = getattr(usage, "details", None)
        reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    # Parts as the server sent them: never negative, never more than their whole
    # (part_count; a part that is 0 or absent, the usual case, is 0 without it).
    cache_read = getattr(usage, "cache_read_tokens", None)
    cache_read = part_count(cache_read, input_tokens) if cache_read else 0
    cache_write = getattr(usage, "cache_write_tokens", None)
    cache_write = part_count(cache_write, input_tokens - cache_read) if cache_write else 0
    reasoning = part_count(reasoning, output_tokens) if reasoning else 0
    return new_counts(
        TokenCounts, (input_tokens, output_tokens, cache_read, cache_write, reasoning)
    )


def _tool_event(name: str, call_id: str, started: float, status: str) -> None:
    tally = current_tally.get()
    steptrace.emit_event(
        ToolExecution(
            tool_name=name,
            tool_use_id=call_id,
            duration_ms=round((time.perf_counter() - started) * 1000),
            status=status,
            classification="other",
            iteration=0 if tally is None else tally.iterations,
        )
    )
    if tally is not None:
        tally.tool(name, status == "ok")


def _error_count(error: Any) -> int:
    errors = getattr(error, "errors", None)
    try:
        return len(errors()) if callable(errors) else 1
    except Exception:
        return 1


def _error_texts(error: Any) -> tuple[str, ...]:
    """Where and what failed, without echoing the model's output back."""
    errors = getattr(error, "errors", None)
    if callable(errors):
        try:
            return tuple(
                f"{'.'.join(str(part) for part in item.get('loc', ()))}: {item.get('msg', '')}"
                for item in errors(include_input=False, include_url=False)
            )
        except Exception:
            pass
    message = getattr(error, "message", None)
    return (str(message if message is not None else type(error).__name__),)


# -- instrument() -------------------------------------------------------------------

_RECORDER = StepTrace()


def instrument() -> None:
    """Add a recording ``StepTrace()`` to every Pydantic AI agent run (idempotent)."""
    if is_instrumented():
        return
    original = vars(Agent)["iter"]

    def iter(self: Agent[Any, Any], *args: Any, **kwargs: Any) -> Any:
        capabilities = kwargs.get("capabilities")
        kwargs["capabilities"] = [*(capabilities or ()), _RECORDER]
        return original(self, *args, **kwargs)

    setattr(iter, _ORIGINAL, original)
    iter.__doc__ = original.__doc__
    Agent.iter = iter  # type: ignore[method-assign]


def uninstrument() -> None:
    """Undo ``instrument()`` (a no-op when it is not in effect)."""
    original = getattr(vars(Agent)["iter"], _ORIGINAL, None)
    if original is not None:
        Agent.iter = original  # type: ignore[method-assign]


def is_instrumented() -> bool:
    """Whether ``instrument()`` is in effect."""
    return getattr(vars(Agent)["iter"], _ORIGINAL, None) is not None
