"""An OpenAI Agents SDK run as steptrace sees it: its scope, its tally, and its
agents, tools, handoffs and guardrails as spans and agent events.

``install`` patches three places, all restored by ``uninstall``:

- ``AgentRunner.run`` (behind ``Runner.run`` and ``Runner.run_sync``) and the
  streaming loop ``run_streamed`` starts (``agents.run.start_streaming``):
  the run gets a ``RunTally`` (its ``LoopComplete`` event), the user's
  ``RunHooks`` are wrapped by ``_Hooks`` (which delegates every hook to them),
  and when the starting agent was given a steptrace scope
  (``openai_agents.step``/``persona``) the whole run runs inside it;
- the SDK's two span classes (``SpanImpl``, and ``NoOpSpan``, which the SDK
  uses when its tracing is off): an agent, function-tool, handoff or guardrail
  span the SDK starts as current also opens a steptrace span in the same
  context (``invoke_agent <agent>``, ``execute_tool <tool>``, ``handoff
  <from> -> <to>``, ``guardrail <name>``), so model requests and tools nest
  under their agent whether or not the SDK's tracing is enabled, and the SDK's
  own tracing is untouched.

A tool span ends with a ``ToolExecution`` event carrying the model's tool-call
id (from ``on_tool_start``'s ``ToolContext``), ``status`` ``error`` when the
tool raised or the SDK recorded a tool error, and a tool that never started (a
tool guardrail or an approval refused it) gives ``ToolRejected``. A handoff
gives ``PhaseChange(from_phase=<agent>, to_phase=<agent>)``. A tripped
guardrail's span ends in error and the run's ``LoopComplete`` status is
``guardrail_tripped``.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import agents.run as _run_module
from agents import RunHooks
from agents.exceptions import (
    InputGuardrailTripwireTriggered,
    MaxTurnsExceeded,
    OutputGuardrailTripwireTriggered,
)
from agents.run import AgentRunner
from agents.tracing.span_data import (
    AgentSpanData,
    FunctionSpanData,
    GuardrailSpanData,
    HandoffSpanData,
)
from agents.tracing.spans import NoOpSpan, SpanImpl

import steptrace
from steptrace import PhaseChange, SpanKind, ToolExecution, ToolRejected

from ._agents_common import RunTally, Scope, current_tally, run_status

__all__ = ["SCOPE_ATTRIBUTE", "install", "installed", "uninstall"]

SCOPE_ATTRIBUTE = "_steptrace_scope"
_ORIGINAL = "_steptrace_original"
_SPAN_METHODS = ("start", "finish", "__exit__", "set_error")
_saved: list[tuple[Any, str, Any]] = []


def installed() -> bool:
    return getattr(AgentRunner.run, _ORIGINAL, None) is not None


def install() -> None:
    if installed():
        return
    _patch(AgentRunner, "run", _wrap_run(AgentRunner.run))
    # run_streamed's loop task calls this module global by name.
    _patch(_run_module, "start_streaming", _wrap_streaming(vars(_run_module)["start_streaming"]))
    for cls in (SpanImpl, NoOpSpan):
        for name in _SPAN_METHODS:
            original = vars(cls)[name]
            _patch(cls, name, _SPAN_WRAPPERS[name](original))


def uninstall() -> None:
    while _saved:
        owner, name, original = _saved.pop()
        setattr(owner, name, original)


def _patch(owner: Any, name: str, wrapper: Any) -> None:
    original = vars(owner)[name]
    setattr(wrapper, _ORIGINAL, original)
    _saved.append((owner, name, original))
    setattr(owner, name, wrapper)


# -- runs -------------------------------------------------------------------------


def _framework_status(error: BaseException) -> str | None:
    if isinstance(error, InputGuardrailTripwireTriggered | OutputGuardrailTripwireTriggered):
        return "guardrail_tripped"
    if isinstance(error, MaxTurnsExceeded):
        return "max_turns"
    return None


async def _run_governed(agent: Any, call: Callable[[], Awaitable[Any]]) -> Any:
    """``call()`` inside the agent's scope (if it has one), as one tallied run."""
    tally = RunTally()
    token = current_tally.set(tally)
    scope: Scope | None = getattr(agent, SCOPE_ATTRIBUTE, None)
    try:
        result = await (call() if scope is None else scope.run(call))
    except BaseException as error:
        tally.complete(run_status(error, _framework_status))
        raise
    finally:
        current_tally.reset(token)
    tally.complete("budget_exhausted" if scope is not None and result is None else "done")
    return result


def _wrap_run(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def run(self: Any, starting_agent: Any, input: Any, **kwargs: Any) -> Any:
        kwargs["hooks"] = _Hooks(kwargs.get("hooks"))
        return await _run_governed(
            starting_agent, lambda: original(self, starting_agent, input, **kwargs)
        )

    return run


def _wrap_streaming(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def start_streaming(**kwargs: Any) -> Any:
        kwargs["hooks"] = _Hooks(kwargs.get("hooks"))
        return await _run_governed(kwargs.get("starting_agent"), lambda: original(**kwargs))

    return start_streaming


# -- hooks ------------------------------------------------------------------------


_NO_HOOKS: RunHooks[Any] = RunHooks()


class _Hooks(RunHooks[Any]):
    """The user's ``RunHooks`` (or none), plus what steptrace learns from them."""

    _OWN = frozenset({"on_tool_start", "on_tool_end", "on_handoff"})
    _delegated: ClassVar[dict[type, tuple[str, ...]]] = {}
    """Per hooks class, the hooks passed straight through (found once)."""

    def __init__(self, user: RunHooks[Any] | None) -> None:
        self._user = user if user is not None else _NO_HOOKS
        names = self._delegated.get(type(self._user))
        if names is None:
            names = self._delegated[type(self._user)] = tuple(
                name
                for name in dir(type(self._user))
                if name.startswith("on_") and name not in self._OWN
            )
        for name in names:
            setattr(self, name, getattr(self._user, name))

    async def on_tool_start(self, context: Any, agent: Any, tool: Any) -> None:
        record = _current_tool.get()
        if record is not None:
            record.started(str(getattr(context, "tool_call_id", "") or ""))
        await self._user.on_tool_start(context, agent, tool)

    async def on_tool_end(self, context: Any, agent: Any, tool: Any, result: Any) -> None:
        record = _current_tool.get()
        if record is not None:
            record.returned = True
        await self._user.on_tool_end(context, agent, tool, result)

    async def on_handoff(self, context: Any, from_agent: Any, to_agent: Any) -> None:
        tally = current_tally.get()
        steptrace.emit_event(
            PhaseChange(
                from_phase=str(getattr(from_agent, "name", "")),
                to_phase=str(getattr(to_agent, "name", "")),
                iteration=0 if tally is None else tally.iterations,
            )
        )
        await self._user.on_handoff(context, from_agent, to_agent)


# -- spans ------------------------------------------------------------------------


class GuardrailTripped(Exception):
    """Describes a tripped guardrail on its steptrace span."""


@dataclass(slots=True)
class _ToolRecord:
    name: str
    span: steptrace.Span
    begun: float
    call_id: str = ""
    invoked: bool = False
    returned: bool = False

    def started(self, call_id: str) -> None:
        self.call_id = call_id
        self.invoked = True
        if call_id:
            self.span.set("gen_ai.tool.call.id", call_id)


_current_tool: contextvars.ContextVar[_ToolRecord | None] = contextvars.ContextVar(
    "steptrace_agents_tool", default=None
)


@dataclass(slots=True)
class _Open:
    """A steptrace span opened for an SDK span (held by the SDK span's id)."""

    sdk_span: Any
    scope: steptrace.span
    span: steptrace.Span
    tool: _ToolRecord | None = None
    tool_token: contextvars.Token[_ToolRecord | None] | None = None
    error: BaseException | str | None = None


_open: dict[int, _Open] = {}


def _describe(data: Any) -> steptrace.span | None:
    kind = type(data)
    if kind is AgentSpanData:
        return steptrace.span(
            f"invoke_agent {data.name}",
            kind=SpanKind.CUSTOM,
            **{"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": data.name},
        )
    if kind is FunctionSpanData:
        return steptrace.span(
            f"execute_tool {data.name}", kind=SpanKind.TOOL, **{"gen_ai.tool.name": data.name}
        )
    if kind is HandoffSpanData:
        return steptrace.span(f"handoff {data.from_agent}", kind=SpanKind.CUSTOM)
    if kind is GuardrailSpanData:
        return steptrace.span(f"guardrail {data.name}", kind=SpanKind.CUSTOM)
    return None


def _opened(sdk_span: Any) -> None:
    scope = _describe(sdk_span.span_data)
    if scope is None:
        return
    span = scope.__enter__()
    entry = _Open(sdk_span, scope, span)
    if type(sdk_span.span_data) is FunctionSpanData:
        entry.tool = _ToolRecord(sdk_span.span_data.name, span, time.perf_counter())
        entry.tool_token = _current_tool.set(entry.tool)
    _open[id(sdk_span)] = entry


def _closed(sdk_span: Any) -> None:
    entry = _open.pop(id(sdk_span), None)
    if entry is None or entry.sdk_span is not sdk_span:
        return
    data = sdk_span.span_data
    error = entry.error
    if type(data) is HandoffSpanData and data.to_agent:
        entry.span.name = f"handoff {data.from_agent} -> {data.to_agent}"
    if type(data) is GuardrailSpanData:
        entry.span.set("steptrace.guardrail.triggered", bool(data.triggered))
        if data.triggered and error is None:
            error = GuardrailTripped(f"guardrail `{data.name}` tripped")
    if entry.tool_token is not None:
        try:
            _current_tool.reset(entry.tool_token)
        except ValueError:
            pass  # finished from another context
    if entry.tool is not None:
        _tool_event(entry.tool, error)
    if isinstance(error, str):
        error = RuntimeError(error)
    entry.scope.__exit__(None if error is None else type(error), error, None)


def _tool_event(record: _ToolRecord, error: BaseException | str | None) -> None:
    tally = current_tally.get()
    iteration = 0 if tally is None else tally.iterations
    if not record.invoked and error is None:
        steptrace.emit_event(
            ToolRejected(
                tool_name=record.name,
                reason="not run: refused by a tool guardrail or an approval",
                iteration=iteration,
            )
        )
        return
    ok = error is None and record.returned
    record.span.set("status", "ok" if ok else "error")
    steptrace.emit_event(
        ToolExecution(
            tool_name=record.name,
            tool_use_id=record.call_id,
            duration_ms=round((time.perf_counter() - record.begun) * 1000),
            status="ok" if ok else "error",
            classification="other",
            iteration=iteration,
        )
    )
    if tally is not None:
        tally.tool(record.name, ok)


def _wrap_start(original: Callable[..., Any]) -> Callable[..., Any]:
    def start(self: Any, mark_as_current: bool = False) -> Any:
        result = original(self, mark_as_current)
        if mark_as_current:
            _opened(self)
        return result

    return start


def _wrap_finish(original: Callable[..., Any]) -> Callable[..., Any]:
    def finish(self: Any, reset_current: bool = False) -> Any:
        if reset_current and _open:
            _closed(self)
        return original(self, reset_current)

    return finish


def _wrap_exit(original: Callable[..., Any]) -> Callable[..., Any]:
    def __exit__(self: Any, exc_type: Any, exc_val: Any, exc_tb: Any) -> Any:
        entry = _open.get(id(self)) if exc_val is not None else None
        if entry is not None and entry.sdk_span is self:
            entry.error = exc_val
        return original(self, exc_type, exc_val, exc_tb)

    return __exit__


def _wrap_set_error(original: Callable[..., Any]) -> Callable[..., Any]:
    def set_error(self: Any, error: Any) -> Any:
        entry = _open.get(id(self))
        if entry is not None and entry.sdk_span is self and entry.error is None:
            message = error.get("message") if isinstance(error, dict) else None
            entry.error = str(message or "error")
        return original(self, error)

    return set_error


_SPAN_WRAPPERS: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    "start": _wrap_start,
    "finish": _wrap_finish,
    "__exit__": _wrap_exit,
    "set_error": _wrap_set_error,
}
