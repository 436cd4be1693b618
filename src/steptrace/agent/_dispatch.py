"""Tool dispatch: one model turn's tool calls, from admission to results.

``ToolDispatcher.screen(calls)`` first makes the turn's calls safe to keep
(``_limits.screen``: hostile names escaped, oversized arguments refused, a
repeated call id dropped with a ``ToolRejected``); ``handle(screened)`` then
answers every kept call, in order: it refuses what screening refused and
arguments that are not a JSON object (saying so), rejects unknown tools,
tools outside the phase or the policy, invalid arguments, ``PreToolUse``
denials and refused approvals (``ToolRejected``, with a reason the model
sees); skips calls the loop tracker has blocked (``LoopIntervention`` skip);
runs the rest concurrently with their timeouts (``ToolExecution``; a raising
tool is an ``error`` result the model sees); and lets ``PostToolUse`` hooks
rewrite results and the tracker warn or block (``LoopIntervention``).
Results are cut to ``ToolLimits.max_result_chars``. A tool raising what is
not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``,
a ``CancelledError`` of its own...) ends the turn: the exception is raised
from ``handle`` (in the loop's own task, so the loop records its end) once the
other calls of the turn are done. Cancelling the loop cancels the turn's
running tools and waits for them. The built-in
``next_phase`` call moves the phase through the loop's ``advance`` callback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._context import get_frame
from .._redact import redact
from ..budget import Usage
from ..events import LoopIntervention, ToolExecution, ToolRejected
from ..hooks import HookContext, HookEvent, adispatch, matching_hooks, registered_hooks
from ..llm._types import Message, ToolCall
from ..spans import SpanKind
from ..tracing import emit_event, span
from ._limits import Screened, ToolLimits, is_plain, screen, shown_name, shown_text
from ._loop_detection import LoopTracker
from ._policy import NEXT_PHASE_TOOL, ToolPolicy
from ._state import LoopState
from ._tools import Tool, ToolTimeout

__all__ = ["ToolDispatcher"]

# Looked up once: an enum member read through its class costs a descriptor call.
_PRE_TOOL_USE = HookEvent.PRE_TOOL_USE
_POST_TOOL_USE = HookEvent.POST_TOOL_USE
_TOOL_SPAN = SpanKind.TOOL


class ToolDispatcher:
    """Answers the tool calls of an agent run's turns (see the module docstring)."""

    def __init__(
        self,
        tools: Mapping[str, Tool],
        policy: ToolPolicy,
        tracker: LoopTracker,
        state: LoopState,
        advance: Callable[[str], bool],
        limits: ToolLimits,
    ) -> None:
        self.tools = tools
        self.policy = policy
        self.tracker = tracker
        self.state = state
        self.advance = advance
        self.limits = limits
        # A policy's verdict depends only on the tool, persona and phase names;
        # on the tool's alone for a policy without persona or phase overrides.
        self._denials: dict[tuple[str, str | None, str | None], str | None] = {}
        self._by_name_only = not policy.personas and not policy.phases
        # Fixed per tool: its span's name, and whether its name needs escaping.
        self._span_names = {name: f"tool {name}" for name in tools}
        self._plain = frozenset(name for name in tools if is_plain(name))

    def screen(self, calls: Sequence[ToolCall]) -> list[Screened]:
        """The turn's calls as the transcript keeps them; duplicates rejected."""
        kept, duplicates = screen(calls, self.limits, self._plain)
        for call in duplicates:
            self.reject(
                call,
                f"duplicate tool call id `{shown_name(call.id)}`: "
                "only the first call with an id runs",
            )
        return kept

    def reject(self, call: ToolCall, reason: str) -> str:
        reason = shown_text(reason, 1000)
        emit_event(ToolRejected(tool_name=call.name, reason=reason, iteration=self.state.iteration))
        return f"Tool call rejected: {reason}"

    async def _hooks(self, event: HookEvent, payload: dict[str, Any]) -> list[Any]:
        if event not in registered_hooks:  # the common case: no tool hooks at all
            return []
        frame = get_frame()
        persona = None if frame is None or frame.persona is None else frame.persona.name
        step_name = None if frame is None or frame.step is None else frame.step.name
        hooks = matching_hooks(event, persona, step_name, None)
        if not hooks:
            return []
        context = HookContext(
            event=event,
            persona=persona,
            step=step_name,
            usage=Usage(),
            run_id=None if frame is None else frame.run.id,
            payload=payload,
        )
        return await adispatch(hooks, context, frame)

    def _check(self, call: ToolCall) -> tuple[Tool, dict[str, Any]] | str:
        """The tool and validated arguments, or the text answering a refused call,
        before hooks and approval (``_admit``)."""
        state = self.state
        if call.name == NEXT_PHASE_TOOL and state.phases:
            moved = self.advance("the model asked to move on")
            return "Moved to the next phase." if moved else "This is already the last phase."
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            return self.reject(call, f"unknown tool `{call.name}` (available: {known})")
        phase = state.phase
        if phase is not None and not phase.offers(tool.name):
            return self.reject(call, f"tool `{tool.name}` is not available in phase `{phase.name}`")
        if self._by_name_only:
            key: tuple[str, str | None, str | None] = (tool.name, None, None)
        else:
            frame = get_frame()
            persona = None if frame is None or frame.persona is None else frame.persona.name
            key = (tool.name, persona, None if phase is None else phase.name)
        try:
            denial = self._denials[key]
        except KeyError:
            denial = self._denials[key] = self.policy.denial(
                tool.name, persona=key[1], phase=key[2]
            )
        if denial is not None:
            return self.reject(call, denial)
        arguments, why = call.parsed_arguments()
        if arguments is None:
            return self.reject(call, f"invalid arguments: {why}")
        kwargs, errors = tool.validate(arguments)
        if kwargs is None:
            return self.reject(call, "invalid arguments: " + "; ".join(errors))
        return tool, kwargs

    async def _admit(
        self, call: ToolCall, tool: Tool, kwargs: dict[str, Any]
    ) -> tuple[Tool, dict[str, Any]] | str:
        """The checked call after ``PreToolUse`` hooks and approval: the tool and
        arguments to run, or the text answering a refused call."""
        for verdict in await self._hooks(
            _PRE_TOOL_USE, {"tool": tool.name, "arguments": kwargs, "call_id": call.id}
        ):
            if verdict is False:
                return self.reject(call, "denied by a PreToolUse hook")
            if isinstance(verdict, Mapping):
                rewritten, errors = tool.validate(verdict)
                if rewritten is None:
                    return self.reject(
                        call, "a PreToolUse hook's arguments are invalid: " + "; ".join(errors)
                    )
                kwargs = rewritten
        if tool.requires_approval:
            verdicts = await self._hooks(
                HookEvent.ON_APPROVAL_REQUESTED,
                {"tool": tool.name, "arguments": kwargs, "call_id": call.id},
            )
            if not verdicts:
                return self.reject(
                    call, f"tool `{tool.name}` needs approval and no approver is registered"
                )
            if any(v is not True for v in verdicts):
                return self.reject(call, f"approval for `{tool.name}` was denied")
        return tool, kwargs

    async def _execute(
        self, call: ToolCall, tool: Tool, kwargs: dict[str, Any]
    ) -> tuple[str, str, int, BaseException | None]:
        """(result text, status, duration ms, an exception that ends the loop)
        of one tool run."""
        fatal: BaseException | None = None
        started = time.perf_counter()
        # A plain ``with``: entering and leaving a span never awaits.
        with span(
            self._span_names[tool.name],
            kind=_TOOL_SPAN,
            **{
                "gen_ai.tool.name": tool.name,
                "gen_ai.tool.call.id": call.id,
                "steptrace.classification": tool.classification,
            },
        ) as tool_span:
            try:
                text, status = await tool.ainvoke(kwargs), "ok"
            except ToolTimeout as exc:
                text, status = f"Tool error: {exc}", "error"
            except Exception as exc:
                text, status = f"Tool error: {type(exc).__name__}: {redact(str(exc))}", "error"
            except asyncio.CancelledError as exc:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # this run is being cancelled (the loop is): not the tool's doing
                text, status, fatal = f"Tool error: {type(exc).__name__}", "error", exc
            except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit...
                # Raised here, in a task of the turn's, SystemExit and
                # KeyboardInterrupt would escape the event loop itself: each ends
                # the loop from its own task instead, once the turn's other
                # runs are done (which _run_all then needs no callback to see).
                text, status, fatal = f"Tool error: {type(exc).__name__}", "error", exc
            tool_span.set("steptrace.status", status)
        if len(text) > self.limits.max_result_chars:
            text = self.limits.cut_result(text)
        return text, status, round((time.perf_counter() - started) * 1000), fatal

    async def _run_all(
        self, runs: Sequence[tuple[int, ToolCall, Tool, dict[str, Any]]]
    ) -> list[tuple[str, str, int, BaseException | None]]:
        """The outcomes of the turn's tool runs, run concurrently, each in a task
        of its own (so in its own copy of the context), as ``asyncio.gather``
        would, without its bookkeeping in Python for every task: ``_execute``
        returns whatever the tool raises, so a task fails only when the loop
        is cancelled and the tasks can be awaited in order. Then (or should
        steptrace's own code fail) the other runs are cancelled and waited
        for, as gather does when it is cancelled.

        Sync tools declared ``thread=False`` at the head of the turn need no
        task: they run to their end in place, in order, before any other
        starts (as they would in their tasks: nothing else runs until a
        task awaits), in a copy of the context (``Tool.ainvoke``); one that
        returns an awaitable is awaited there, before the later runs start."""
        outcomes = []
        index = 0
        for _, call, tool, kwargs in runs:
            if tool.is_async or tool.thread:
                break
            outcomes.append(await self._execute(call, tool, kwargs))
            index += 1
        if index == len(runs):
            return outcomes
        create_task = asyncio.get_running_loop().create_task
        tasks = [create_task(self._execute(c, t, k)) for _, c, t, k in runs[index:]]
        try:
            for task in tasks:  # not a comprehension: in 3.11 that is one more coroutine
                outcomes.append(await task)  # noqa: PERF401
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            raise
        return outcomes

    async def handle(self, screened: Sequence[Screened]) -> None:
        state = self.state
        calls = [item.call for item in screened]
        answers: list[str | None] = []
        runs: list[tuple[int, ToolCall, Tool, dict[str, Any]]] = []
        for index, item in enumerate(screened):
            call = item.call
            if item.refusal is not None:
                answers.append(self.reject(call, item.refusal))
                continue
            admitted = self._check(call)
            if not isinstance(admitted, str) and (
                admitted[0].requires_approval or _PRE_TOOL_USE in registered_hooks
            ):  # else (the common case) no payload to build and nothing to await
                admitted = await self._admit(call, *admitted)
            if isinstance(admitted, str):
                answers.append(admitted)
                continue
            tool, kwargs = admitted
            skip = self.tracker.before_call(tool.name, kwargs)
            if skip is not None:
                emit_event(
                    LoopIntervention(
                        tool_name=tool.name,
                        kind=skip.kind,
                        count=skip.count,
                        iteration=state.iteration,
                    )
                )
                emit_event(
                    ToolExecution(
                        tool_name=tool.name,
                        tool_use_id=call.id,
                        duration_ms=0,
                        status="rejected",
                        classification=tool.classification,
                        iteration=state.iteration,
                    )
                )
                answers.append(skip.note)
                continue
            answers.append(None)
            runs.append((index, call, tool, kwargs))
        outcomes = await self._run_all(runs)
        for *_, fatal in outcomes:
            if fatal is not None:
                raise fatal
        for (index, call, tool, kwargs), (text, status, duration_ms, _) in zip(
            runs, outcomes, strict=True
        ):
            # Repeats are judged on what the tool returned, before hooks rewrite it.
            intervention = self.tracker.after_call(tool.name, kwargs, text)
            if _POST_TOOL_USE in registered_hooks:
                for rewrite in await self._hooks(
                    _POST_TOOL_USE,
                    {
                        "tool": tool.name,
                        "arguments": kwargs,
                        "call_id": call.id,
                        "result": text,
                        "status": status,
                    },
                ):
                    if isinstance(rewrite, str):
                        text = rewrite
            if intervention is not None:
                text = self.tracker.apply(text, intervention)
                emit_event(
                    LoopIntervention(
                        tool_name=tool.name,
                        kind=intervention.kind,
                        count=intervention.count,
                        iteration=state.iteration,
                    )
                )
            emit_event(
                ToolExecution(
                    tool_name=tool.name,
                    tool_use_id=call.id,
                    duration_ms=duration_ms,
                    status=status,
                    classification=tool.classification,
                    iteration=state.iteration,
                )
            )
            state.tools_used.setdefault(tool.name)
            if status == "ok":
                state.successful_tools.setdefault(tool.name)
            answers[index] = text
        for call, answer in zip(calls, answers, strict=True):
            state.add(
                Message(role="tool", content=answer or "", tool_call_id=call.id, name=call.name)
            )
        if not runs and all(c.name != NEXT_PHASE_TOOL for c in calls):
            state.rejected_turns += 1
        else:
            state.rejected_turns = 0
