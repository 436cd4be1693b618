"""Hooks: callables run at step, budget, approval, hand-off and persona events.

A hook is registered for an event, a persona glob (fnmatch-style, case
sensitive; ``*`` matches every persona and "no persona", which is the empty
string), optionally one exact step name, and for ``OnBudgetThreshold(p)`` a
percentage. Handlers are plain callables, sync or async, called with a
``HookContext``. A handler that raises is logged on the ``steptrace`` logger
and recorded on the current span; the step goes on (``configure(strict=True)``
re-raises). Registrations are process-wide, like the decorators.

Which event fires when is decided by the runtime: ``PreStep``/``PostStep``
around every step, ``OnBudgetThreshold`` once per step invocation when its use
reaches the percentage (before any exhaustion error), ``OnHandoffEmitted`` when
a step escalates. The others are fired by the agent loop (``steptrace.agent``):
``OnApprovalRequested`` for a tool that requires approval, ``PreToolUse`` and
``PostToolUse`` around each tool call (their handlers may deny or rewrite).

Step hooks may steer the step by what they return (any other value is ignored,
as are the results of every other event):

- a ``PreStep`` handler returns ``Deny(reason)`` to stop the step before its
  body runs (the call raises ``StepDenied``; the step is recorded ``failed``),
  or ``RewriteArgs(args, kwargs)`` to call the body with other arguments. Its
  ``context.payload`` is ``{"args": ..., "kwargs": ...}``: what the body would
  be called with, after the rewrites of earlier hooks;
- a ``PostStep`` handler of a completed step returns ``RewriteOutput(value)``
  to make the call return ``value``; its ``payload`` is ``{"output": ...}``.

Handlers run in registration order, each seeing the previous ones' rewrites; a
denial stops the rest. What a hook did is kept on the step's span metadata
(``hook_denied``, ``hook_rewrote_args``, ``hook_rewrote_output``: the hook and
the reason), so the run records it. A generator step's arguments and output
cannot be rewritten (its body was created, its output was streamed): such a
decision, or one returned from the wrong event, is reported like a failing
hook (logged; raised in strict mode).
"""

from __future__ import annotations

import enum
import fnmatch
import itertools
import math
import re
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, TypeAlias, TypeGuard, TypeVar

from ._config import report_observer_failure
from ._records import FrozenRecord
from .budget import Usage
from .errors import StepTraceError
from .spans import Span

__all__ = [
    "Deny",
    "HookContext",
    "HookEvent",
    "HookRegistration",
    "RewriteArgs",
    "RewriteOutput",
    "StepDenied",
    "clear_hooks",
    "matching_hooks",
    "on",
    "register_persona_hook",
    "register_step_hook",
    "remove_hook",
]


class HookEvent(enum.StrEnum):
    PRE_STEP = "PreStep"
    POST_STEP = "PostStep"
    ON_BUDGET_THRESHOLD = "OnBudgetThreshold"
    ON_APPROVAL_REQUESTED = "OnApprovalRequested"
    ON_HANDOFF_EMITTED = "OnHandoffEmitted"
    ON_PERSONA_PAUSED = "OnPersonaPaused"
    ON_PERSONA_RESUMED = "OnPersonaResumed"
    PRE_TOOL_USE = "PreToolUse"
    POST_TOOL_USE = "PostToolUse"


_THRESHOLD_RE = re.compile(r"^OnBudgetThreshold\(\s*([0-9]+(?:\.[0-9]+)?)\s*\)$")


def _valid_events() -> str:
    names = [e.value for e in HookEvent if e is not HookEvent.ON_BUDGET_THRESHOLD]
    return ", ".join([*names, "OnBudgetThreshold(<percent>)"])


def parse_hook_event(event: HookEvent | str) -> tuple[HookEvent, float | None]:
    """Parse ``"PreStep"`` or ``"OnBudgetThreshold(80)"`` into (event, threshold percent).

    Unknown names raise ``ValueError`` listing the valid ones. A budget threshold
    must carry its percentage, in (0, 100].
    """
    if isinstance(event, HookEvent):
        parsed, pct = event, None
    elif isinstance(event, str):
        match = _THRESHOLD_RE.match(event.strip())
        if match:
            parsed, pct = HookEvent.ON_BUDGET_THRESHOLD, float(match.group(1))
        else:
            try:
                parsed, pct = HookEvent(event.strip()), None
            except ValueError:
                raise ValueError(
                    f"unknown hook event {event!r}; valid events: {_valid_events()}"
                ) from None
    else:
        raise TypeError(f"hook event must be a HookEvent or a string, got {event!r}")
    if parsed is HookEvent.ON_BUDGET_THRESHOLD:
        if pct is None:
            raise ValueError("OnBudgetThreshold needs a percentage, e.g. 'OnBudgetThreshold(80)'")
        if not (0 < pct <= 100) or not math.isfinite(pct):
            raise ValueError(f"OnBudgetThreshold percentage must be in (0, 100], got {pct}")
    return parsed, pct


class HookContext(NamedTuple):
    """What a hook handler receives.

    ``scope`` says whose budget ``usage``/``budget_pct`` describe (``step`` for
    the step events; for a threshold, the step, persona or run whose budget
    crossed). ``status`` and ``error`` are set for ``PostStep`` and
    ``OnHandoffEmitted``; ``payload`` carries event-specific data (the agent loop
    puts the tool call of an approval request there).
    """

    event: HookEvent
    persona: str | None
    step: str | None
    usage: Usage
    budget_pct: float | None = None
    threshold_pct: float | None = None
    scope: Literal["step", "persona", "run"] = "step"
    run_id: str | None = None
    status: str | None = None
    error: BaseException | None = None
    payload: Any = None


HookHandler: TypeAlias = Callable[[HookContext], Any]
H = TypeVar("H", bound=HookHandler)

_hook_ids = itertools.count(1)


class HookRegistration(NamedTuple):
    persona_pattern: str
    step_name: str | None
    event: HookEvent
    threshold_pct: float | None
    handler: HookHandler
    id: int

    @property
    def label(self) -> str:
        name = getattr(self.handler, "__qualname__", repr(self.handler))
        return f"hook {name} ({self.event.value})"


_lock = threading.Lock()
# Copy-on-write per event: dispatch reads without a lock. An event with no hooks
# has no key, so the runtime's fast path is one truth test of this dict (its
# identity never changes: it is only ever mutated in place).
registered_hooks: dict[HookEvent, tuple[HookRegistration, ...]] = {}


def _register(
    persona_pattern: str, step_name: str | None, event: HookEvent | str, handler: HookHandler
) -> HookRegistration:
    if not isinstance(persona_pattern, str):
        raise TypeError(f"hook persona pattern must be a string, got {persona_pattern!r}")
    if step_name is not None and (not isinstance(step_name, str) or not step_name):
        raise TypeError(f"hook step name must be a non-empty string, got {step_name!r}")
    if not callable(handler):
        raise TypeError(f"hook handler must be callable, got {handler!r}")
    parsed, pct = parse_hook_event(event)
    registration = HookRegistration(
        persona_pattern, step_name, parsed, pct, handler, next(_hook_ids)
    )
    with _lock:
        registered_hooks[parsed] = (*registered_hooks.get(parsed, ()), registration)
    return registration


def register_persona_hook(
    persona_pattern: str, event: HookEvent | str, handler: HookHandler
) -> HookRegistration:
    """Run ``handler`` on ``event`` for every step under a matching persona."""
    return _register(persona_pattern, None, event, handler)


def register_step_hook(
    persona_pattern: str, step_name: str, event: HookEvent | str, handler: HookHandler
) -> HookRegistration:
    """Run ``handler`` on ``event`` for the step named ``step_name`` only."""
    return _register(persona_pattern, step_name, event, handler)


def on(event: HookEvent | str, *, persona: str = "*", step: str | None = None) -> Callable[[H], H]:
    """Decorator form: ``@steptrace.on("OnBudgetThreshold(80)", persona="research*")``."""
    parse_hook_event(event)  # fail at decoration time, not at first dispatch

    def decorate(handler: H) -> H:
        _register(persona, step, event, handler)
        return handler

    return decorate


def remove_hook(registration: HookRegistration) -> None:
    """Unregister one hook; unknown registrations are ignored."""
    with _lock:
        registered = registered_hooks.get(registration.event, ())
        kept = tuple(h for h in registered if h is not registration)
        if kept:
            registered_hooks[registration.event] = kept
        else:
            registered_hooks.pop(registration.event, None)


def clear_hooks() -> None:
    """Unregister every hook."""
    with _lock:
        registered_hooks.clear()


def has_hooks(event: HookEvent) -> bool:
    return bool(registered_hooks.get(event))


def matching_hooks(
    event: HookEvent | str,
    persona: str | None,
    step_name: str | None,
    budget_pct: float | None,
) -> list[HookRegistration]:
    """The hooks that fire for this event, persona, step and budget use (the
    seed's filter): a hook with a step name needs that exact step; a hook with
    a threshold needs a known budget use at or above it."""
    if isinstance(event, HookEvent):
        parsed = event
    elif event == HookEvent.ON_BUDGET_THRESHOLD.value:
        parsed = HookEvent.ON_BUDGET_THRESHOLD  # a query needs no percentage
    else:
        parsed, _ = parse_hook_event(event)
    persona = persona or ""
    out: list[HookRegistration] = []
    for hook in registered_hooks.get(parsed, ()):
        if not fnmatch.fnmatchcase(persona, hook.persona_pattern):
            continue
        if hook.step_name is not None and hook.step_name != step_name:
            continue
        if hook.threshold_pct is not None and (
            budget_pct is None or budget_pct < hook.threshold_pct
        ):
            continue
        out.append(hook)
    return out


def dispatch(
    hooks: Sequence[HookRegistration], context: HookContext, span: Span | None
) -> list[Any]:
    """Call each hook from synchronous code; an async handler is run to completion.

    Returns the handlers' results, ``None`` for one that failed.
    """
    results: list[Any] = []
    for hook in hooks:
        try:
            result = hook.handler(context)
            if isinstance(result, Awaitable):
                result = _run_awaitable(result)
            results.append(result)
        except Exception as exc:
            report_observer_failure(hook.label, exc, span)
            results.append(None)
    return results


async def adispatch(
    hooks: Sequence[HookRegistration], context: HookContext, span: Span | None
) -> list[Any]:
    """Call each hook from async code, awaiting async handlers in this loop."""
    results: list[Any] = []
    for hook in hooks:
        try:
            result = hook.handler(context)
            if isinstance(result, Awaitable):
                result = await result
            results.append(result)
        except Exception as exc:
            report_observer_failure(hook.label, exc, span)
            results.append(None)
    return results


def _run_awaitable(awaitable: Awaitable[Any]) -> Any:
    """Finish an async handler's awaitable from synchronous code.

    With no event loop running in this thread it runs in a fresh loop; inside a
    running loop (sync code called from async code) it runs on a helper thread,
    because blocking on this loop would deadlock. Such a handler must not await
    objects bound to the caller's loop.
    """
    import asyncio  # deferred: asyncio costs ~30 ms to import

    async def finish() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(finish())
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            outcome.append(asyncio.run(finish()))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=worker, name="steptrace-hook")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


# -- what step hooks may return --------------------------------------------------


class Deny(FrozenRecord):
    """Returned by a ``PreStep`` handler: the step does not run; its call raises
    ``StepDenied`` carrying ``reason``."""

    __slots__ = ("reason",)
    _fields = ("reason",)
    reason: str

    def __init__(self, reason: str) -> None:
        self._set("reason", reason)


class RewriteArgs(FrozenRecord):
    """Returned by a ``PreStep`` handler: the step's body is called with
    ``*args, **kwargs`` instead of what the caller passed."""

    __slots__ = ("args", "kwargs")
    _fields = ("args", "kwargs")
    args: Sequence[Any]
    kwargs: Mapping[str, Any]

    def __init__(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> None:
        self._set("args", args)
        self._set("kwargs", {} if kwargs is None else kwargs)


class RewriteOutput(FrozenRecord):
    """Returned by a ``PostStep`` handler of a completed step: the call returns
    ``value`` instead of what the body returned."""

    __slots__ = ("value",)
    _fields = ("value",)
    value: Any

    def __init__(self, value: Any) -> None:
        self._set("value", value)


class StepDenied(StepTraceError):
    """A ``PreStep`` hook denied the step: ``step`` names it, ``reason`` is the
    hook's, ``hook`` the handler that denied."""

    def __init__(self, step: str | None, reason: str, hook: str) -> None:
        self.step = step
        self.reason = reason
        self.hook = hook
        super().__init__(f"step `{step}` denied by {hook}: {reason}")


Call: TypeAlias = tuple[tuple[Any, ...], dict[str, Any]]
"""A step body's positional and keyword arguments."""

_DECISIONS = (Deny, RewriteArgs, RewriteOutput)


def _wrong(hook: HookRegistration, verdict: object, span: Span | None, why: str) -> None:
    report_observer_failure(hook.label, TypeError(f"{type(verdict).__name__} {why}"), span)


def _pre_verdict(
    hook: HookRegistration,
    verdict: object,
    context: HookContext,
    span: Span | None,
    call: Call | None,
) -> Call | None:
    """The arguments a PreStep verdict asks for (None: unchanged); raises
    ``StepDenied`` for a denial."""
    if not isinstance(verdict, _DECISIONS):
        return None
    if isinstance(verdict, Deny):
        if span is not None:
            span.metadata["hook_denied"] = f"{hook.label}: {verdict.reason}"
        raise StepDenied(context.step, verdict.reason, hook.label)
    if isinstance(verdict, RewriteOutput):
        _wrong(
            hook, verdict, span, "is for PostStep hooks; a PreStep hook returns Deny or RewriteArgs"
        )
    elif call is None:
        _wrong(hook, verdict, span, "cannot rewrite a generator step's arguments")
    else:
        if span is not None:
            span.metadata["hook_rewrote_args"] = hook.label
        return tuple(verdict.args), dict(verdict.kwargs)
    return None


def _post_verdict(
    verdict: object, hook: HookRegistration, span: Span | None, rewritable: bool
) -> TypeGuard[RewriteOutput]:
    """True when a PostStep verdict rewrites the output."""
    if not isinstance(verdict, _DECISIONS):
        return False
    if not isinstance(verdict, RewriteOutput):
        _wrong(hook, verdict, span, "is for PreStep hooks; a PostStep hook returns RewriteOutput")
    elif not rewritable:
        _wrong(hook, verdict, span, "applies to a completed plain or async step only")
    else:
        if span is not None:
            span.metadata["hook_rewrote_output"] = hook.label
        return True
    return False


def run_pre_step(
    hooks: Sequence[HookRegistration], context: HookContext, span: Span | None, call: Call | None
) -> Call | None:
    """Run the ``PreStep`` hooks in order; the rewritten arguments or None.
    Raises ``StepDenied`` when one denies."""
    rewritten = None
    for hook in hooks:
        if call is not None:
            context = context._replace(payload={"args": call[0], "kwargs": call[1]})
        (verdict,) = dispatch((hook,), context, span)
        new = _pre_verdict(hook, verdict, context, span, call)
        if new is not None:
            call = rewritten = new
    return rewritten


async def arun_pre_step(
    hooks: Sequence[HookRegistration], context: HookContext, span: Span | None, call: Call | None
) -> Call | None:
    """``run_pre_step`` from async code."""
    rewritten = None
    for hook in hooks:
        if call is not None:
            context = context._replace(payload={"args": call[0], "kwargs": call[1]})
        (verdict,) = await adispatch((hook,), context, span)
        new = _pre_verdict(hook, verdict, context, span, call)
        if new is not None:
            call = rewritten = new
    return rewritten


def run_post_step(
    hooks: Sequence[HookRegistration],
    context: HookContext,
    span: Span | None,
    output: Any,
    rewritable: bool,
) -> Any:
    """Run the ``PostStep`` hooks in order; the step's (possibly rewritten) output."""
    for hook in hooks:
        if rewritable:
            context = context._replace(payload={"output": output})
        (verdict,) = dispatch((hook,), context, span)
        if _post_verdict(verdict, hook, span, rewritable):
            output = verdict.value
    return output


async def arun_post_step(
    hooks: Sequence[HookRegistration],
    context: HookContext,
    span: Span | None,
    output: Any,
    rewritable: bool,
) -> Any:
    """``run_post_step`` from async code."""
    for hook in hooks:
        if rewritable:
            context = context._replace(payload={"output": output})
        (verdict,) = await adispatch((hook,), context, span)
        if _post_verdict(verdict, hook, span, rewritable):
            output = verdict.value
    return output
