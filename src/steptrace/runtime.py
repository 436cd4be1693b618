"""``@step`` and ``@persona``: entering and leaving scopes, and error boundaries.

Calling a decorated function pushes its frame for exactly as long as its body
runs (the seed's frame depth, made structural): a plain or ``async`` function
for the whole call, a generator or async generator for each resumption, so
whatever the consumer does between items is not charged to the step. Entry
opens the step's span and fires ``PreStep``; exit writes the seed's span
metadata, appends a ``CompletedStep`` to the run's ledger and fires
``PostStep``. When a budget-exhausted error reaches a step, its boundary
decides: ``fail`` re-raises it, ``continue`` returns None (``skipped``),
``escalate`` re-raises it marked escalated (``escalated``) after firing
``OnHandoffEmitted``. An error that is already escalated passes every outer
boundary unchanged; any other error is recorded as ``failed`` and propagates.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from time import time_ns
from typing import Any, NamedTuple, ParamSpec, TypeVar, overload

from . import _context
from . import spans as _spans
from ._run import active_frame, new_default_run
from .budget import PICO_PER_USD, Budget, Usage, pico_to_usd
from .definitions import (
    ErrorBoundary,
    PersonaDefinition,
    StepDefinition,
    function_key,
    register_persona,
    register_step,
)
from .errors import BudgetExhausted, mark_escalated
from .hooks import (
    HookContext,
    HookEvent,
    adispatch,
    clear_hooks,
    dispatch,
    has_hooks,
    matching_hooks,
    registered_hooks,
)
from .spans import describe_error, end_span, notify_end, notify_start

__all__ = [
    "ActiveStep",
    "active_step_model_default",
    "current_persona_name",
    "current_step",
    "persona",
    "reset",
    "step",
]

P = ParamSpec("P")
R = TypeVar("R")

_StepFrame = _context.StepFrame
_PersonaFrame = _context.PersonaFrame
_get_frame = _context.get_frame
_set_frame = _context.set_frame
_reset_frame = _context.reset_frame


# -- entering and leaving a step ------------------------------------------------


def _close_step(frame: _StepFrame, status: str, error: BaseException | None) -> None:
    """End the step's span and append it to the ledger. The seed's span
    metadata and the ledger row are derived from the frame when read."""
    frame.outcome = status
    end_span(frame, None if error is None else _error_text(error))
    frame.run.ended_steps.append(frame)


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


def _pre_step(frame: _StepFrame) -> None:
    hooks = _step_hooks(frame, HookEvent.PRE_STEP)
    if hooks:
        dispatch(hooks, _hook_context(frame, HookEvent.PRE_STEP), frame)


def _post_step(frame: _StepFrame, status: str, error: BaseException | None) -> None:
    if status == "escalated":
        hooks = _step_hooks(frame, HookEvent.ON_HANDOFF_EMITTED)
        if hooks:
            context = _hook_context(frame, HookEvent.ON_HANDOFF_EMITTED, status=status, error=error)
            dispatch(hooks, context, frame)
    hooks = _step_hooks(frame, HookEvent.POST_STEP)
    if hooks:
        dispatch(
            hooks, _hook_context(frame, HookEvent.POST_STEP, status=status, error=error), frame
        )


async def _apre_step(frame: _StepFrame) -> None:
    hooks = _step_hooks(frame, HookEvent.PRE_STEP)
    if hooks:
        await adispatch(hooks, _hook_context(frame, HookEvent.PRE_STEP), frame)


async def _apost_step(frame: _StepFrame, status: str, error: BaseException | None) -> None:
    if status == "escalated":
        hooks = _step_hooks(frame, HookEvent.ON_HANDOFF_EMITTED)
        if hooks:
            context = _hook_context(frame, HookEvent.ON_HANDOFF_EMITTED, status=status, error=error)
            await adispatch(hooks, context, frame)
    hooks = _step_hooks(frame, HookEvent.POST_STEP)
    if hooks:
        context = _hook_context(frame, HookEvent.POST_STEP, status=status, error=error)
        await adispatch(hooks, context, frame)


class _StepScope:
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
        frame = _StepFrame(self.definition, parent, self.limits)
        parent.run.spans.append(frame)
        if _spans.processors or registered_hooks:
            self.announce(frame)
        return frame

    def announce(self, frame: _StepFrame) -> None:
        notify_start(frame)
        if registered_hooks:
            token = _context.set_frame(frame)
            try:
                _pre_step(frame)
            except BaseException as exc:  # only in strict mode: close what was opened
                _close_step(frame, "failed", exc)
                raise
            finally:
                _reset(token)

    async def aopen(self) -> _StepFrame:
        parent = _get_frame() or active_frame()
        frame = _StepFrame(self.definition, parent, self.limits)
        parent.run.opened(frame)
        if registered_hooks:
            token = _context.set_frame(frame)
            try:
                await _apre_step(frame)
            except BaseException as exc:  # only in strict mode: close what was opened
                _close_step(frame, "failed", exc)
                raise
            finally:
                _reset(token)
        return frame

    def complete(self, frame: Any) -> None:
        # end_span, inlined for the common case.
        frame.end_ns = time_ns()
        frame.status = "ok"
        frame.outcome = "completed"
        frame.run.ended_steps.append(frame)
        if _spans.processors or registered_hooks:
            self.announce_end(frame)

    def announce_end(self, frame: _StepFrame) -> None:
        notify_end(frame)
        if registered_hooks:
            _post_step(frame, "completed", None)

    async def acomplete(self, frame: Any) -> None:
        frame.outcome = "completed"
        end_span(frame)
        frame.run.ended_steps.append(frame)
        if registered_hooks:
            await _apost_step(frame, "completed", None)

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


class _PersonaScope:
    """How a persona opens and closes: no hooks, no boundary."""

    __slots__ = ("definition",)

    def __init__(self, definition: PersonaDefinition) -> None:
        self.definition = definition

    def open(self) -> _PersonaFrame:
        return _open_persona(self.definition)

    async def aopen(self) -> _PersonaFrame:
        return _open_persona(self.definition)

    def complete(self, frame: Any) -> None:
        _close_persona(frame, None)

    async def acomplete(self, frame: Any) -> None:
        _close_persona(frame, None)

    def fail(self, frame: Any, exc: BaseException) -> BaseException | None:
        _close_persona(frame, exc)
        return exc

    async def afail(self, frame: Any, exc: BaseException) -> BaseException | None:
        _close_persona(frame, exc)
        return exc


_Scope = _StepScope | _PersonaScope


def _reset(token: Any) -> None:
    try:
        _context.reset_frame(token)
    except ValueError:
        # The token belongs to another context: a generator finalized from
        # elsewhere. Nothing of ours is active in this one.
        pass


# -- wrappers for the four kinds of function ------------------------------------


# Code object flags (CPython's CO_* values, stable since 3.6). Reading them
# spares the core an import of ``inspect``, which costs ~6 ms.
_CO_GENERATOR = 0x20
_CO_COROUTINE = 0x80
_CO_ASYNC_GENERATOR = 0x200


def _wrap(fn: Callable[..., Any], scope: _Scope) -> Callable[..., Any]:
    code = getattr(fn, "__code__", None)
    if code is not None:
        flags = code.co_flags
        is_async_gen = bool(flags & _CO_ASYNC_GENERATOR)
        is_gen = bool(flags & _CO_GENERATOR)
        is_coroutine = bool(flags & _CO_COROUTINE)
    else:  # a partial or a callable object: let inspect unwrap it
        import inspect

        is_async_gen = inspect.isasyncgenfunction(fn)
        is_gen = inspect.isgeneratorfunction(fn)
        is_coroutine = inspect.iscoroutinefunction(fn)
    if is_async_gen:
        wrapper = _wrap_async_gen(fn, scope)
    elif is_gen:
        wrapper = _wrap_gen(fn, scope)
    elif is_coroutine:
        wrapper = _wrap_async(fn, scope)
    elif isinstance(scope, _StepScope):
        wrapper = _wrap_sync_step(fn, scope)
    else:
        wrapper = _wrap_sync(fn, scope)
    return functools.wraps(fn)(wrapper)


def _wrap_sync_step(fn: Callable[..., Any], scope: _StepScope) -> Callable[..., Any]:
    """``_wrap_sync`` for steps, with ``scope.open``/``complete`` inlined: this
    is the path every plain step call takes."""
    definition = scope.definition
    limits = scope.limits
    announce = scope.announce
    announce_end = scope.announce_end
    fail = scope.fail

    def step_call(*args: Any, **kwargs: Any) -> Any:
        parent = _get_frame() or active_frame()
        frame = _StepFrame(definition, parent, limits)
        run = parent.run
        run.spans.append(frame)
        if _spans.processors or registered_hooks:
            announce(frame)
        token = _set_frame(frame)
        try:
            try:
                result = fn(*args, **kwargs)
            finally:
                _reset_frame(token)
        except BaseException as exc:
            error = fail(frame, exc)
            if error is None:
                return None
            if error is exc:
                raise
            raise error from exc
        frame.end_ns = time_ns()
        frame.status = "ok"
        frame.outcome = "completed"
        run.ended_steps.append(frame)
        if _spans.processors or registered_hooks:
            announce_end(frame)
        return result

    return step_call


def _wrap_sync(fn: Callable[..., Any], scope: _Scope) -> Callable[..., Any]:
    open_scope = scope.open
    complete = scope.complete

    def scoped(*args: Any, **kwargs: Any) -> Any:
        frame = open_scope()
        token = _set_frame(frame)
        try:
            try:
                result = fn(*args, **kwargs)
            finally:
                # A plain call starts and ends in one context: the token is ours.
                _reset_frame(token)
        except BaseException as exc:
            error = scope.fail(frame, exc)
            if error is None:
                return None
            if error is exc:
                raise
            raise error from exc
        complete(frame)
        return result

    return scoped


def _wrap_async(fn: Callable[..., Any], scope: _Scope) -> Callable[..., Any]:
    open_scope = scope.open
    aopen_scope = scope.aopen

    async def scoped(*args: Any, **kwargs: Any) -> Any:
        # Without hooks nothing needs awaiting: take the synchronous path.
        frame = await aopen_scope() if registered_hooks else open_scope()
        token = _set_frame(frame)
        try:
            try:
                result = await fn(*args, **kwargs)
            finally:
                # A coroutine runs in its task's context throughout.
                _reset_frame(token)
        except BaseException as exc:
            error = await scope.afail(frame, exc)
            if error is None:
                return None
            if error is exc:
                raise
            raise error from exc
        if registered_hooks:
            await scope.acomplete(frame)
        else:
            scope.complete(frame)
        return result

    return scoped


def _wrap_gen(fn: Callable[..., Any], scope: _Scope) -> Callable[..., Any]:
    # The frame is pushed for each resumption only, and set and reset within
    # it, so the token is always reset in the context that set it, whoever
    # drives or finalizes the generator.
    def scoped(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        inner = fn(*args, **kwargs)
        frame: Any = None
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            if frame is None:
                frame = scope.open()
            token = _context.set_frame(frame)
            try:
                try:
                    item = inner.send(to_send) if to_throw is None else inner.throw(to_throw)
                finally:
                    _reset(token)
            except StopIteration as stop:
                scope.complete(frame)
                return stop.value
            except BaseException as exc:
                error = scope.fail(frame, exc)
                if error is None:
                    return None
                if error is exc:
                    raise
                raise error from exc
            try:
                to_send, to_throw = (yield item), None
            except GeneratorExit:
                # The consumer stopped early: close the body inside the scope; it
                # completed everything that was asked of it.
                token = _context.set_frame(frame)
                try:
                    inner.close()
                except BaseException as exc:
                    _reset(token)
                    error = scope.fail(frame, exc)
                    if error is None:
                        return None  # the boundary swallowed it: close quietly
                    if error is exc:
                        raise
                    raise error from exc
                _reset(token)
                scope.complete(frame)
                raise
            except BaseException as exc:
                to_throw = exc

    return scoped


def _wrap_async_gen(fn: Callable[..., Any], scope: _Scope) -> Callable[..., Any]:
    async def scoped(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        inner = fn(*args, **kwargs)
        frame: Any = None
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            if frame is None:
                frame = await scope.aopen()
            token = _context.set_frame(frame)
            try:
                try:
                    if to_throw is None:
                        item = await inner.asend(to_send)
                    else:
                        item = await inner.athrow(to_throw)
                finally:
                    _reset(token)
            except StopAsyncIteration:
                await scope.acomplete(frame)
                return
            except BaseException as exc:
                error = await scope.afail(frame, exc)
                if error is None:
                    return
                if error is exc:
                    raise
                raise error from exc
            try:
                to_send, to_throw = (yield item), None
            except GeneratorExit:
                token = _context.set_frame(frame)
                try:
                    await inner.aclose()
                except BaseException as exc:
                    _reset(token)
                    error = await scope.afail(frame, exc)
                    if error is None:
                        return  # the boundary swallowed it: close quietly
                    if error is exc:
                        raise
                    raise error from exc
                _reset(token)
                await scope.acomplete(frame)
                raise
            except BaseException as exc:
                to_throw = exc

    return scoped


# -- the decorators -------------------------------------------------------------


@overload
def step(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def step(
    name: str | StepDefinition | None = None,
    *,
    model: str | None = None,
    budget: Budget | Mapping[str, Any] | None = None,
    error_boundary: ErrorBoundary | str = "fail",
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def step(
    name: Any = None,
    *,
    model: str | None = None,
    budget: Budget | Mapping[str, Any] | None = None,
    error_boundary: ErrorBoundary | str = "fail",
) -> Any:
    """Declare a function as a step: ``@step(model="gpt-4o-mini", budget={"max_tokens": 2000})``.

    ``name`` defaults to the function's name. ``model`` is the default model of
    every LLM call inside the step. ``budget`` is a ``Budget`` or a dict with
    ``max_tokens``/``max_usd``. ``error_boundary`` is ``fail`` (default),
    ``continue`` (the call returns None when the budget runs out) or
    ``escalate``. Works on plain, async, generator and async generator functions
    and methods; ``@step`` without parentheses takes every default. Passing a
    ``StepDefinition`` (e.g. from ``register_step_from_dict``) applies it as is.
    Bad metadata raises ``ValueError``/``TypeError`` naming the step and field.
    """
    if callable(name) and not isinstance(name, str | StepDefinition):
        return _decorate_step(name, None, model, budget, error_boundary)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        return _decorate_step(fn, name, model, budget, error_boundary)

    return decorate


def _decorate_step(
    fn: Callable[P, R],
    name: str | StepDefinition | None,
    model: str | None,
    budget: Budget | Mapping[str, Any] | None,
    error_boundary: ErrorBoundary | str,
) -> Callable[P, R]:
    if not callable(fn):
        raise TypeError(f"@step must decorate a function, got {fn!r}")
    function = function_key(fn)
    if isinstance(name, StepDefinition):
        definition = name
    else:
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"step `{function}`: name must be a non-empty string, got {name!r}")
        step_name: str = name or str(getattr(fn, "__name__", function))
        owner = f"step `{step_name}`"
        checked = Budget.coerce(budget, owner)
        if model is not None and not isinstance(model, str):
            raise TypeError(f"{owner}: model must be a string, got {model!r}")
        definition = StepDefinition(
            name=step_name,
            function=function,
            model=model,
            max_tokens=None if checked is None else checked.max_tokens,
            max_usd=None if checked is None else checked.max_usd,
            error_boundary=ErrorBoundary.parse(error_boundary, owner),
        )
    register_step(definition.function, definition)
    wrapper = _wrap(fn, _StepScope(definition))
    wrapper.__steptrace_step__ = definition  # type: ignore[attr-defined]
    return wrapper


@overload
def persona(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def persona(
    name: str | None = None, *, budget: Budget | Mapping[str, Any] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def persona(name: Any = None, *, budget: Budget | Mapping[str, Any] | None = None) -> Any:
    """Declare a function as a persona: steps called inside run under its name.

    ``budget`` caps everything done in one invocation, nested steps included.
    Hooks select personas by glob on this name. Works on the same four kinds of
    function as ``@step``.
    """
    if callable(name) and not isinstance(name, str):
        return _decorate_persona(name, None, budget)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        return _decorate_persona(fn, name, budget)

    return decorate


def _decorate_persona(
    fn: Callable[P, R], name: str | None, budget: Budget | Mapping[str, Any] | None
) -> Callable[P, R]:
    if not callable(fn):
        raise TypeError(f"@persona must decorate a function, got {fn!r}")
    function = function_key(fn)
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"persona `{function}`: name must be a non-empty string, got {name!r}")
    persona_name: str = name or str(getattr(fn, "__name__", function))
    definition = PersonaDefinition(
        name=persona_name,
        function=function,
        budget=Budget.coerce(budget, f"persona `{persona_name}`"),
    )
    register_persona(function, definition)
    wrapper = _wrap(fn, _PersonaScope(definition))
    wrapper.__steptrace_persona__ = definition  # type: ignore[attr-defined]
    return wrapper


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


# -- introspection ----------------------------------------------------------------


class ActiveStep(NamedTuple):
    """A read-only snapshot of the innermost active step and its usage so far.

    ``input_tokens`` .. ``llm_calls`` are the step's own calls (the seed's
    fields); ``budget_pct`` is the use of its budget by the step and its nested
    steps, ``None`` without a budget.
    """

    name: str
    function: str
    model: str | None
    persona: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    llm_calls: int
    last_model: str | None
    budget: Budget | None
    budget_pct: float | None
    error_boundary: ErrorBoundary


def current_step() -> ActiveStep | None:
    """The innermost active step of this context, or None outside any step."""
    frame = _context.get_frame()
    step_frame = None if frame is None else frame.step
    if step_frame is None:
        return None
    definition = step_frame.definition
    with step_frame.run.lock:
        return ActiveStep(
            name=definition.name,
            function=definition.function,
            model=definition.model,
            persona=step_frame.persona_name,
            input_tokens=step_frame.own_input_tokens,
            output_tokens=step_frame.own_output_tokens,
            cost_usd=pico_to_usd(step_frame.own_cost_pico),
            llm_calls=step_frame.own_llm_calls,
            last_model=step_frame.last_model,
            budget=None if step_frame.ledger is None else definition.budget,
            budget_pct=None if step_frame.ledger is None else step_frame.ledger.budget_pct(),
            error_boundary=definition.error_boundary,
        )


def current_persona_name() -> str | None:
    """The innermost active persona's name, or None."""
    frame = _context.get_frame()
    return None if frame is None or frame.persona is None else frame.persona.name


def active_step_model_default() -> str | None:
    """The innermost active step's declared model: the default for LLM calls in it."""
    frame = _context.get_frame()
    return None if frame is None or frame.step is None else frame.step.definition.model


def reset() -> None:
    """Start this context afresh (for tests): a new default run with no active
    steps or personas, and no hooks. Registered definitions and span
    processors are kept, like the imports that created them."""
    new_default_run()
    clear_hooks()
