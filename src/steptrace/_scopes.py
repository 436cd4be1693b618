"""Scope operations: how steps and personas open, complete and fail.

A ``StepScope`` knows one step definition and does what entering and leaving
that step means: build its frame (span, ledger and all), announce it to span
processors and ``PreStep`` hooks, stamp and file it in the run's ledger, fire
``PostStep``, and apply the error boundary when a budget-exhausted error
reaches it. A ``PersonaScope`` does the same for a persona, which has no hooks
and no boundary. The wrappers in ``_wrappers`` drive these for each kind of
function; nothing here knows about generators or coroutines.
"""

from __future__ import annotations

from time import time_ns
from typing import Any

from . import _context
from . import spans as _spans
from ._run import active_frame
from .budget import PICO_PER_USD, Usage
from .definitions import ErrorBoundary, PersonaDefinition, StepDefinition
from .errors import BudgetExhausted, mark_escalated
from .hooks import (
    Call,
    HookContext,
    HookEvent,
    adispatch,
    arun_post_step,
    arun_pre_step,
    dispatch,
    has_hooks,
    matching_hooks,
    registered_hooks,
    run_post_step,
    run_pre_step,
)
from .spans import describe_error, end_span, notify_end, notify_start

_StepFrame = _context.StepFrame
_step_frame = _context.step_frame
_PersonaFrame = _context.PersonaFrame
_get_frame = _context.get_frame

# What a generator step "returns" to PostStep hooks: its output was streamed, so
# a RewriteOutput cannot apply.
NO_OUTPUT: Any = object()


# -- entering and leaving a step ------------------------------------------------


def _close_step(frame: _StepFrame, status: str, error: BaseException | None) -> None:
    """End the step's span and append it to the ledger. The seed's span
    metadata and the ledger row are derived from the frame when read."""
    frame.outcome = status
    end_span(frame, None if error is None else _error_text(error))
    frame.run.step_ended(frame)


def _error_text(error: BaseException) -> str:
    return error.message if isinstance(error, BudgetExhausted) else describe_error(error)


def _apply_boundary(frame: _StepFrame, exc: BaseException) -> tuple[str, BaseException | None]:
    """(status to record, error to raise or None to return None)."""
    if isinstance(exc, BudgetExhausted) and not exc.escalated:
        boundary = frame.definition.error_boundary
        if boundary is ErrorBoundary.CONTINUE:
            return "skipped", None
        if boundary is ErrorBoundary.ESCALATE:
            return "escalated", mark_escalated(
                exc, step=frame.definition.name, function=frame.definition.function
            )
    return "failed", exc


def _hook_context(frame: _StepFrame, event: HookEvent, **extra: Any) -> HookContext:
    with frame.run.lock:
        usage = Usage(
            frame.own_input_tokens,
            frame.own_output_tokens,
            frame.own_cost_pico / PICO_PER_USD,
            frame.own_llm_calls,
        )
        pct = None if frame.ledger is None else frame.ledger.budget_pct()
    return HookContext(
        event=event,
        persona=frame.persona_name,
        step=frame.definition.name,
        usage=usage,
        budget_pct=pct,
        run_id=frame.run.id,
        **extra,
    )


def _step_hooks(frame: _StepFrame, event: HookEvent) -> list[Any]:
    if not has_hooks(event):
        return []
    return matching_hooks(event, frame.persona_name, frame.definition.name, None)


def _pre_step(frame: _StepFrame, call: Call | None) -> Call | None:
    hooks = _step_hooks(frame, HookEvent.PRE_STEP)
    if hooks:
        return run_pre_step(hooks, _hook_context(frame, HookEvent.PRE_STEP), frame, call)
    return None


def _post_step(
    frame: _StepFrame, status: str, error: BaseException | None, output: Any = NO_OUTPUT
) -> Any:
    if status == "escalated":
        hooks = _step_hooks(frame, HookEvent.ON_HANDOFF_EMITTED)
        if hooks:
            context = _hook_context(frame, HookEvent.ON_HANDOFF_EMITTED, status=status, error=error)
            dispatch(hooks, context, frame)
    hooks = _step_hooks(frame, HookEvent.POST_STEP)
    if hooks:
        context = _hook_context(frame, HookEvent.POST_STEP, status=status, error=error)
        return run_post_step(hooks, context, frame, output, output is not NO_OUTPUT)
    return output


async def _apre_step(frame: _StepFrame, call: Call | None) -> Call | None:
    hooks = _step_hooks(frame, HookEvent.PRE_STEP)
    if hooks:
        return await arun_pre_step(hooks, _hook_context(frame, HookEvent.PRE_STEP), frame, call)
    return None


async def _apost_step(
    frame: _StepFrame, status: str, error: BaseException | None, output: Any = NO_OUTPUT
) -> Any:
    if status == "escalated":
        hooks = _step_hooks(frame, HookEvent.ON_HANDOFF_EMITTED)
        if hooks:
            context = _hook_context(frame, HookEvent.ON_HANDOFF_EMITTED, status=status, error=error)
            await adispatch(hooks, context, frame)
    hooks = _step_hooks(frame, HookEvent.POST_STEP)
    if hooks:
        context = _hook_context(frame, HookEvent.POST_STEP, status=status, error=error)
        return await arun_post_step(hooks, context, frame, output, output is not NO_OUTPUT)
    return output


class StepScope:
    """How a step opens, completes and fails; the wrappers below drive it.

    Opening is: build the frame, append it to the run's spans, then ``announce``
    it (span processors' ``on_start``, ``PreStep`` hooks) only if any are
    registered. Completing is: stamp the end, append to the ledger, then
    ``announce_end`` likewise. ``_wrap_sync_step`` inlines both for the hot path.
    """

    __slots__ = ("definition", "limits")

    def __init__(self, definition: StepDefinition) -> None:
        self.definition = definition
        self.limits = _context.step_limits(definition)

    def open(self) -> _StepFrame:
        parent = _get_frame() or active_frame()
        frame = _step_frame(self.definition, parent, self.limits)
        parent.run.add_span(frame)  # processors are told by announce
        if _spans.processors or registered_hooks:
            self.announce(frame)
        return frame

    def announce(self, frame: _StepFrame, call: Call | None = None) -> Call | None:
        """Tell processors and ``PreStep`` hooks; the arguments a hook rewrote
        ``call`` to (None: unchanged, or a generator step's ``call`` of None)."""
        notify_start(frame)
        if registered_hooks:
            token = _context.set_frame(frame)
            try:
                return _pre_step(frame, call)
            except BaseException as exc:  # a denial, or strict mode: close what was opened
                _close_step(frame, "failed", exc)
                raise
            finally:
                reset_token(token)
        return None

    async def aopen(self) -> _StepFrame:
        return (await self.aenter(None))[0]

    async def aenter(self, call: Call | None) -> tuple[_StepFrame, Call | None]:
        """``aopen`` for a call with these arguments: the frame, and the
        arguments a ``PreStep`` hook rewrote them to (None: unchanged)."""
        parent = _get_frame() or active_frame()
        frame = _step_frame(self.definition, parent, self.limits)
        parent.run.opened(frame)
        rewritten = None
        if registered_hooks:
            token = _context.set_frame(frame)
            try:
                rewritten = await _apre_step(frame, call)
            except BaseException as exc:  # a denial, or strict mode: close what was opened
                _close_step(frame, "failed", exc)
                raise
            finally:
                reset_token(token)
        return frame, rewritten

    def complete(self, frame: Any) -> None:
        # end_span, inlined for the common case.
        frame.end_ns = time_ns()
        frame.status = "ok"
        frame.outcome = "completed"
        frame.run.step_ended(frame)
        if _spans.processors or registered_hooks:
            self.announce_end(frame)

    def announce_end(self, frame: _StepFrame, output: Any = NO_OUTPUT) -> Any:
        """Tell processors and ``PostStep`` hooks; the output, as a hook rewrote it."""
        notify_end(frame)
        if registered_hooks:
            return _post_step(frame, "completed", None, output)
        return output

    async def acomplete(self, frame: Any, output: Any = NO_OUTPUT) -> Any:
        frame.outcome = "completed"
        end_span(frame)
        frame.run.step_ended(frame)
        if registered_hooks:
            return await _apost_step(frame, "completed", None, output)
        return output

    def fail(self, frame: Any, exc: BaseException) -> BaseException | None:
        status, to_raise = _apply_boundary(frame, exc)
        _close_step(frame, status, to_raise or exc)
        _post_step(frame, status, to_raise or exc)
        return to_raise

    async def afail(self, frame: Any, exc: BaseException) -> BaseException | None:
        status, to_raise = _apply_boundary(frame, exc)
        _close_step(frame, status, to_raise or exc)
        await _apost_step(frame, status, to_raise or exc)
        return to_raise


class PersonaScope:
    """How a persona opens and closes: no hooks, no boundary."""

    __slots__ = ("definition",)

    def __init__(self, definition: PersonaDefinition) -> None:
        self.definition = definition

    def open(self) -> _PersonaFrame:
        return _open_persona(self.definition)

    async def aopen(self) -> _PersonaFrame:
        return _open_persona(self.definition)

    async def aenter(self, call: Call | None) -> tuple[_PersonaFrame, None]:
        return _open_persona(self.definition), None

    def complete(self, frame: Any) -> None:
        _close_persona(frame, None)

    async def acomplete(self, frame: Any, output: Any = None) -> Any:
        _close_persona(frame, None)
        return output

    def fail(self, frame: Any, exc: BaseException) -> BaseException | None:
        _close_persona(frame, exc)
        return exc

    async def afail(self, frame: Any, exc: BaseException) -> BaseException | None:
        _close_persona(frame, exc)
        return exc


Scope = StepScope | PersonaScope


def reset_token(token: Any) -> None:
    try:
        _context.reset_frame(token)
    except ValueError:
        # The token belongs to another context: a generator finalized from
        # elsewhere. Nothing of ours is active in this one.
        pass


def _open_persona(definition: PersonaDefinition) -> _PersonaFrame:
    parent = _context.get_frame() or active_frame()
    frame = _PersonaFrame(definition, parent)
    parent.run.opened(frame)
    return frame


def _close_persona(frame: _PersonaFrame, error: BaseException | None) -> None:
    with frame.run.lock:
        usage = frame.ledger.usage()  # type: ignore[union-attr]  # personas always have one
    frame.metadata.update(
        status="completed" if error is None else "failed",
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=usage.cost_usd,
        llm_calls=usage.llm_calls,
    )
    end_span(frame, error)
