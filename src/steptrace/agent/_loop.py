"""The agent loop: model turns and tool calls until done, inside every budget.

Each iteration: move phase if its cap or exit condition says so
(``PhaseChange``), compact the working transcript when it grows past the
threshold (``ContextCompaction``), ask the model through ``allm_call`` with the
tools the phase offers (``LlmCall``, ``SchemaRetry``), then hand the turn's
tool calls to the dispatcher (``_dispatch``: ``ToolRejected``,
``ToolExecution``, ``LoopIntervention``). A turn without tool calls ends the
loop: ``done`` when the model finished its answer, ``truncated`` when it hit
its output limit (``length``/``max_tokens``), ``refused`` when it refused or
its answer was filtered; ``AgentResult.stop_reason`` says which, in one
vocabulary for every provider (``stop``, ``length``, ``tool_calls``,
``refusal``, ``content_filter``, else the provider's own word).
``LoopComplete`` is emitted on every exit, whatever the status and whatever
ends it: a ``SystemExit``, ``KeyboardInterrupt`` or ``GeneratorExit`` from a
tool, a cancellation, ``asyncio.wait_for``'s timeout.

Budgets: a loop given ``budget=`` runs as a step of its own with
``error_boundary`` (default ``continue``). When a budget runs out the loop
stops cleanly: with ``continue`` on its own step the ``AgentResult`` (status
``budget_exhausted``) is returned; otherwise the error propagates with the
result attached as ``error.agent_result``. Other failures also carry it, and
so does the ``CancelledError`` of a cancelled loop; ``asyncio.wait_for``
raises a ``TimeoutError`` of its own from it, so ``agent_result_of(error)``
looks along the error's causes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._config import report_observer_failure
from ..budget import Budget, Usage
from ..definitions import ErrorBoundary, StepDefinition
from ..errors import BudgetExhausted
from ..events import (
    AgentEvent,
    ContextCompaction,
    LoopComplete,
    PhaseChange,
    summarize_events,
)
from ..llm._call import agent_iteration, allm_call
from ..llm._config import settings as llm_settings
from ..llm._types import Message, Provider, ToolSpec
from ..runtime import active_step_model_default, current_step, step
from ..spans import Span, SpanKind
from ..tracing import collect_events, current_span, emit_event, span
from ._compaction import Compaction, acompact, deterministic_summary
from ._dispatch import ToolDispatcher
from ._limits import ToolLimits
from ._loop_detection import LoopDetection, LoopTracker
from ._policy import NEXT_PHASE_TOOL, Phase, ToolPolicy
from ._state import LoopState
from ._tools import Tool

__all__ = ["AgentResult", "aagent_loop", "agent_loop", "agent_result_of"]

Status = Literal[
    "done",
    "truncated",
    "refused",
    "max_iterations",
    "budget_exhausted",
    "rejected",
    "error",
    "cancelled",
]

# Every provider's finish reasons in one vocabulary.
_STOP_REASONS = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_calls": "tool_calls",
    "tool_use": "tool_calls",
    "function_call": "tool_calls",
    "refusal": "refusal",
    "content_filter": "content_filter",
}
_ENDS: dict[str | None, Status] = {
    "length": "truncated",
    "refusal": "refused",
    "content_filter": "refused",
}


@dataclass(frozen=True)
class AgentResult:
    """What an agent run produced and cost.

    ``transcript`` is every message of the run, archived ones included;
    ``messages`` the working transcript at the end (after compactions);
    ``summary`` the seed-shaped rollup of this loop's own events.
    """

    status: Status
    text: str
    data: Any
    iterations: int
    transcript: tuple[Message, ...]
    messages: tuple[Message, ...]
    events: tuple[AgentEvent, ...]
    summary: dict[str, Any]
    usage: Usage
    cost_usd: float | None
    stop_reason: str | None = None
    """Why the model stopped on the last turn: ``stop``, ``length``,
    ``tool_calls``, ``refusal``, ``content_filter``, or the provider's word."""


def agent_result_of(error: BaseException) -> AgentResult | None:
    """The ``AgentResult`` an error out of ``agent_loop`` carries, looked up
    along its causes (``asyncio.wait_for`` raises ``TimeoutError`` from the
    loop's ``CancelledError``); None when there is none."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = getattr(current, "agent_result", None)
        if isinstance(found, AgentResult):
            return found
        current = current.__cause__ or current.__context__
    return None


_NEXT_PHASE_SPEC = ToolSpec(
    name=NEXT_PHASE_TOOL,
    description="Finish the current phase and move on to the next one.",
    parameters={"type": "object", "properties": {}},
)


class _Loop:
    """One agent run (no I/O of its own beyond the model and tool calls)."""

    def __init__(
        self,
        task: str,
        system: str | None,
        tools: Sequence[Tool],
        model: str | None,
        max_iterations: int,
        phases: Sequence[Phase] | None,
        policy: ToolPolicy | None,
        loop_detection: LoopDetection,
        compaction: Compaction,
        output_schema: Any,
        max_tokens: int | None,
        provider: Provider | str | None,
        max_rejected_turns: int,
        tool_limits: ToolLimits,
    ) -> None:
        if not isinstance(tool_limits, ToolLimits):
            raise TypeError(f"agent_loop: tool_limits must be a ToolLimits, got {tool_limits!r}")
        if not isinstance(task, str) or not task:
            raise ValueError("agent_loop: task must be a non-empty string")
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, int):
            raise TypeError(f"agent_loop: max_iterations must be an int, got {max_iterations!r}")
        if max_iterations <= 0:
            raise ValueError(f"agent_loop: max_iterations must be > 0, got {max_iterations}")
        self.tools: dict[str, Tool] = {}
        for tool in tools:
            if not isinstance(tool, Tool):
                raise TypeError(f"agent_loop: tools must be @tool functions, got {tool!r}")
            if tool.name in self.tools or tool.name == NEXT_PHASE_TOOL:
                raise ValueError(f"agent_loop: two tools are named `{tool.name}`")
            self.tools[tool.name] = tool
        phase_list = list(phases or ())
        if len({p.name for p in phase_list}) != len(phase_list):
            raise ValueError("agent_loop: phase names must be unique")
        first: list[Message] = []
        if system is not None:
            first.append(Message(role="system", content=system))
        first.append(Message(role="user", content=task))
        self.state = LoopState(messages=list(first), transcript=list(first), phases=phase_list)
        self.model = model
        self.max_iterations = max_iterations
        self.dispatcher = ToolDispatcher(
            self.tools,
            policy or ToolPolicy(),
            LoopTracker(loop_detection),
            self.state,
            self._advance,
            tool_limits,
        )
        self.compaction = compaction
        self.output_schema = output_schema
        self.max_tokens = max_tokens
        self.provider = provider
        self.max_rejected_turns = max_rejected_turns
        self.started = time.perf_counter()
        self.stop_reason: str | None = None
        # Both fixed for the run: the tools offered in each phase, and the
        # compaction threshold of each model name.
        self._offers: dict[int, tuple[ToolSpec, ...]] = {}
        self._thresholds: dict[str, int] = {}

    # -- phases ---------------------------------------------------------------------

    def _advance(self, reason: str) -> bool:
        state = self.state
        if not state.phases or state.phase_index + 1 >= len(state.phases):
            return False
        before = state.phases[state.phase_index].name
        state.phase_index += 1
        state.phase_turns = 0
        after = state.phases[state.phase_index].name
        emit_event(PhaseChange(from_phase=before, to_phase=after, iteration=state.iteration))
        note = f"Phase `{before}` is over ({reason}); now in phase `{after}`."
        instructions = state.phases[state.phase_index].instructions
        self.state.add(Message(role="user", content=f"{note} {instructions}".strip()))
        return True

    def _offered(self) -> tuple[ToolSpec, ...]:
        index = self.state.phase_index
        offered = self._offers.get(index)
        if offered is None:
            phase = self.state.phase
            specs = [t.spec() for t in self.tools.values() if phase is None or phase.offers(t.name)]
            if phase is not None and index + 1 < len(self.state.phases):
                specs.append(_NEXT_PHASE_SPEC)
            offered = self._offers[index] = tuple(specs)
        return offered

    # -- one model turn ---------------------------------------------------------------

    async def turn(self) -> bool:
        """One iteration; True when the loop is done."""
        state = self.state
        state.iteration += 1
        phase = state.phase
        cap = None if phase is None else phase.max_iterations
        if cap is not None and state.phase_turns >= cap:
            self._advance(f"its {cap}-turn cap was reached")
        state.phase_turns += 1
        if self.compaction.enabled:
            model = self.model or active_step_model_default() or ""
            tokens = state.tokens
            if tokens > self._threshold(model):  # else (the common case) nothing to await
                await self._compact(model, tokens)
        result = await allm_call(
            messages=state.messages,
            model=self.model,
            tools=self._offered(),
            output_schema=self.output_schema,
            max_tokens=self.max_tokens,
            provider=self.provider,
        )
        state.count(result)
        raw = result.finish_reason
        self.stop_reason = None if raw is None else _STOP_REASONS.get(raw, raw)
        screened = self.dispatcher.screen(result.tool_calls)
        calls = tuple([item.call for item in screened])
        state.add(Message(role="assistant", content=result.text, tool_calls=calls))
        if not result.tool_calls:
            state.text, state.data = result.text, result.data
            return True
        await self.dispatcher.handle(screened)
        phase = state.phase
        if phase is not None and phase.exit_when is not None and phase.exit_when(state.transcript):
            self._advance("its exit condition was met")
        return False

    async def _summarize(self, archived: Sequence[Message]) -> str:
        """The ``llm`` compaction strategy: a model call (budgeted and traced
        like any other) that summarizes the archived turns."""
        listing = deterministic_summary(archived, self.compaction.summary_max_chars * 4)
        result = await allm_call(
            "Summarize this earlier part of an agent's work for the agent itself: what "
            "was learned, decided and done, and what is still open. Be brief and factual."
            f"\n\n{listing}",
            model=self.model,
            provider=self.provider,
            max_tokens=max(64, self.compaction.summary_max_chars // 3),
        )
        self.state.count(result)
        return result.text

    def _threshold(self, model: str) -> int:
        threshold = self._thresholds.get(model)
        if threshold is None:
            threshold = self._thresholds[model] = self.compaction.threshold(model)
        return threshold

    async def _compact(self, model: str, tokens: int) -> None:
        """Compact the working transcript of ``tokens`` estimated tokens, over
        the threshold of ``model``."""
        config = self.compaction
        summarize = self._summarize if config.strategy == "llm" else None
        outcome = await acompact(
            self.state.messages, config, model, summarize=summarize, tokens=tokens
        )
        if outcome is None:
            return
        self.state.compacted(outcome.messages)
        emit_event(
            ContextCompaction(
                archived_messages=len(outcome.archived),
                new_summary_len=len(outcome.summary),
                iteration=self.state.iteration,
            )
        )

    # -- the whole run ------------------------------------------------------------------

    async def run(self) -> tuple[Status, BaseException | None]:
        state = self.state
        try:
            while True:
                if state.iteration >= self.max_iterations:
                    return "max_iterations", None
                token = agent_iteration.set(state.iteration + 1)
                try:
                    if await self.turn():
                        return _ENDS.get(self.stop_reason, "done"), None
                finally:
                    agent_iteration.reset(token)
                if state.rejected_turns >= self.max_rejected_turns:
                    return "rejected", None
        except BudgetExhausted as exc:
            return "budget_exhausted", exc
        except (asyncio.CancelledError, KeyboardInterrupt) as exc:
            return "cancelled", exc
        except BaseException as exc:  # anything else, SystemExit and GeneratorExit included
            return "error", exc

    def complete(self, status: Status, events: list[AgentEvent]) -> AgentResult:
        state = self.state
        emit_event(
            LoopComplete(
                status=status,
                iterations=state.iteration,
                total_duration_ms=round((time.perf_counter() - self.started) * 1000),
                tools_used=tuple(state.tools_used),
                successful_tools=tuple(state.successful_tools),
            )
        )
        return AgentResult(
            status=status,
            text=state.text,
            data=state.data,
            iterations=state.iteration,
            transcript=tuple(state.transcript),
            messages=tuple(state.messages),
            events=tuple(events),
            summary=summarize_events(events),
            usage=Usage(
                state.input_tokens, state.output_tokens, state.cost_usd or 0.0, state.llm_calls
            ),
            cost_usd=state.cost_usd,
            stop_reason=self.stop_reason,
        )


async def _run_loop(loop: _Loop) -> AgentResult:
    with collect_events() as events:
        status, error = await loop.run()
        result = loop.complete(status, events)
    if error is not None:
        error.agent_result = result  # type: ignore[attr-defined]
        raise error
    return result


async def aagent_loop(
    task: str,
    system: str | None = None,
    *,
    tools: Sequence[Tool] = (),
    model: str | None = None,
    max_iterations: int = 24,
    phases: Sequence[Phase] | None = None,
    tool_policy: ToolPolicy | None = None,
    loop_detection: LoopDetection | None = None,
    compaction: Compaction | None = None,
    output_schema: Any = None,
    max_tokens: int | None = None,
    budget: Budget | Mapping[str, Any] | None = None,
    error_boundary: ErrorBoundary | str = ErrorBoundary.CONTINUE,
    provider: Provider | str | None = None,
    name: str = "agent_loop",
    max_rejected_turns: int = 3,
    tool_limits: ToolLimits | None = None,
) -> AgentResult:
    """Run a tool-using agent until it answers without calling a tool.

    ``tools``: ``@tool`` functions. ``phases``: an ordered list of ``Phase``.
    ``tool_policy``: allow/deny by glob, per persona and phase.
    ``loop_detection``/``compaction``: thresholds (defaults on). ``max_tokens``
    caps each model turn's output (and is what each turn's pre-flight check
    reserves; without it, 4,096). ``budget``:
    run the loop as a step named ``name`` with this budget and
    ``error_boundary``. ``tool_limits``: caps on tool arguments and results
    (``ToolLimits``; 100,000 characters each by default). Returns an
    ``AgentResult``; see the module docstring for how budget exhaustion and
    errors end the loop.
    """
    loop = _Loop(
        task,
        system,
        tools,
        model,
        max_iterations,
        phases,
        tool_policy,
        loop_detection or LoopDetection(),
        compaction or Compaction(),
        output_schema,
        max_tokens,
        provider,
        max_rejected_turns,
        tool_limits or ToolLimits(),
    )
    if budget is None:
        # No step of its own, but a span: the loop's events and requests group
        # under it (an ``invoke_agent`` span once exported).
        agent_span = span(
            name,
            kind=SpanKind.CUSTOM,
            **{"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name},
        )
        async with agent_span:
            return await _run_loop(loop)
    holder: list[AgentResult] = []

    async def as_step() -> AgentResult:
        agent_span = current_span()  # the loop's own step
        agent_span.set("gen_ai.operation.name", "invoke_agent")
        agent_span.set("gen_ai.agent.name", name)
        try:
            result = await _run_loop(loop)
        except BaseException as exc:
            found = getattr(exc, "agent_result", None)
            if isinstance(found, AgentResult):
                holder.append(found)
            raise
        finally:
            _describe_agent_usage(agent_span)
        holder.append(result)
        return result

    limits = Budget.coerce(budget, f"agent_loop `{name}`")
    assert limits is not None
    definition = StepDefinition(
        name=name,
        function="agent_loop",
        model=model,
        max_tokens=limits.max_tokens,
        max_usd=limits.max_usd,
        error_boundary=error_boundary,
    )
    try:
        outcome = await step(definition)(as_step)()
    except BaseException as exc:
        if holder and getattr(exc, "agent_result", None) is None:
            exc.agent_result = holder[-1]  # type: ignore[attr-defined]
        raise
    return outcome if outcome is not None else holder[-1]


def _describe_agent_usage(agent_span: Span) -> None:
    """The model and tokens of the loop's step, in the GenAI attributes an
    ``invoke_agent`` span carries (its calls have all been recorded by now)."""
    active = current_step()
    if active is None:
        return
    model = active.last_model or active.model
    if model:
        agent_span.set("gen_ai.request.model", model)
    agent_span.set("gen_ai.usage.input_tokens", active.input_tokens)
    agent_span.set("gen_ai.usage.output_tokens", active.output_tokens)


def agent_loop(
    task: str,
    system: str | None = None,
    *,
    tools: Sequence[Tool] = (),
    model: str | None = None,
    max_iterations: int = 24,
    phases: Sequence[Phase] | None = None,
    tool_policy: ToolPolicy | None = None,
    loop_detection: LoopDetection | None = None,
    compaction: Compaction | None = None,
    output_schema: Any = None,
    max_tokens: int | None = None,
    budget: Budget | Mapping[str, Any] | None = None,
    error_boundary: ErrorBoundary | str = ErrorBoundary.CONTINUE,
    provider: Provider | str | None = None,
    name: str = "agent_loop",
    max_rejected_turns: int = 3,
    tool_limits: ToolLimits | None = None,
) -> AgentResult:
    """``aagent_loop`` for synchronous code (runs it in a fresh event loop, in
    this context: the run, step and persona carry over). From async code, await
    ``aagent_loop`` instead. Async SDK clients that providers opened for that
    event loop are closed with it."""

    async def run_then_close() -> AgentResult:
        try:
            return await aagent_loop(
                task,
                system,
                tools=tools,
                model=model,
                max_iterations=max_iterations,
                phases=phases,
                tool_policy=tool_policy,
                loop_detection=loop_detection,
                compaction=compaction,
                output_schema=output_schema,
                max_tokens=max_tokens,
                budget=budget,
                error_boundary=error_boundary,
                provider=provider,
                name=name,
                max_rejected_turns=max_rejected_turns,
                tool_limits=tool_limits,
            )
        finally:
            await _close_loop_clients(provider)

    return asyncio.run(run_then_close())


async def _close_loop_clients(provider: Provider | str | None) -> None:
    """Close the async clients providers opened for the ending event loop."""
    candidates: list[object] = [] if provider is None or isinstance(provider, str) else [provider]
    candidates.append(llm_settings.default_provider)
    candidates.extend(llm_settings.providers.values())
    seen: set[int] = set()
    for candidate in candidates:
        aclose = getattr(candidate, "aclose", None)
        if candidate is None or id(candidate) in seen or not callable(aclose):
            continue
        seen.add(id(candidate))
        try:
            await aclose()
        except Exception as exc:  # closing must not mask the run's outcome
            report_observer_failure(f"closing {candidate!r}", exc, None)
