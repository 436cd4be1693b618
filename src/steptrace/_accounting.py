"""Accounting: recording LLM usage into the active scopes and enforcing budgets.

``record_llm_usage`` is the seed's ``record_step_llm_usage`` widened to nested
scopes: the innermost step gets the call in its own counters (its ledger row),
and every enclosing budget ledger (budgeted steps, personas, the run) gets it in
its subtree totals, all under the run's lock. Then, outside the lock,
``OnBudgetThreshold`` hooks that the new totals reach fire (once per scope
invocation), and the first scope, innermost first, whose usage is now strictly
over a limit raises ``BudgetExhausted``. ``check_budget`` is the pre-flight twin:
it raises before a call whose worst case cannot fit in what any scope has left.

``record_llm_usage`` runs on every model call, so its common path is written
flat: one combined argument test, one lock, no allocation but the trace tuple.
"""

from __future__ import annotations

import contextvars
import math
from time import time as _time
from typing import Any

from . import _context, _reservations
from ._config import settings
from ._run import active_frame
from .budget import PICO_PER_USD, Ledger, PriceSource, pico_to_usd, usd_to_pico
from .errors import BudgetExhausted, PricingUnknown
from .hooks import (
    HookContext,
    HookEvent,
    HookRegistration,
    adispatch,
    dispatch,
    matching_hooks,
    registered_hooks,
)

__all__ = ["arecord_llm_usage", "check_budget", "record_llm_usage"]

_Frame = _context.Frame
_get_frame = _context.get_frame
_INF = math.inf
_THRESHOLD = HookEvent.ON_BUDGET_THRESHOLD
_ThresholdCall = tuple[list[HookRegistration], HookContext, Any]

# Set by arecord_llm_usage: threshold hooks due during the record are queued
# here, to be awaited on the caller's loop, instead of being run synchronously.
_deferred_hooks: contextvars.ContextVar[list[_ThresholdCall] | None] = contextvars.ContextVar(
    "steptrace_deferred_hooks", default=None
)


def _check_count(where: str, name: str, value: object) -> int:
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: {name} must be an int, got {value!r}")
    raise ValueError(f"{where}: {name} must be >= 0, got {value}")


def _validate(
    model: object,
    input_tokens: object,
    output_tokens: object,
    cost_usd: object,
    duration_ms: object,
    cache_tokens: object,
) -> int:
    """The slow path of argument checking: raise naming the bad argument, or
    return ``duration_ms`` as an int (a float duration is rounded)."""
    where = "record_llm_usage"
    if not isinstance(model, str):
        raise TypeError(f"{where}: model must be a string, got {model!r}")
    _check_count(where, "input_tokens", input_tokens)
    _check_count(where, "output_tokens", output_tokens)
    _check_count(where, "cache_tokens", cache_tokens)
    if cost_usd is not None and not (
        isinstance(cost_usd, int | float)
        and not isinstance(cost_usd, bool)
        and math.isfinite(cost_usd)
        and cost_usd >= 0
    ):
        raise ValueError(f"{where}: cost_usd must be a finite number >= 0, got {cost_usd!r}")
    if isinstance(duration_ms, float) and math.isfinite(duration_ms) and duration_ms >= 0:
        return round(duration_ms)
    return _check_count(where, "duration_ms", duration_ms)


def _price(
    source: PriceSource | None,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float | None:
    if source is None:
        return None
    return source.cost_usd(
        model,
        input_tokens,
        output_tokens,
        cache_read_tokens=cache_tokens,
        cache_write_tokens=cache_write_tokens,
    )


def _exhausted(
    frame: _Frame,
    ledger: Ledger,
    limit: Any,
    limit_value: float,
    *,
    projected: float | None = None,
) -> BudgetExhausted:
    """The error for ``ledger``'s scope; ``frame`` is where the call was made.

    ``step``/``function``/``error_boundary`` describe the step whose budget it
    is, or, for a persona or run budget, the innermost step at the time."""
    owner = ledger.owner if ledger.kind == "step" else frame.step
    definition = None if owner is None else owner.definition
    return BudgetExhausted(
        step="" if definition is None else definition.name,
        function="" if definition is None else definition.function,
        limit=limit,
        limit_value=limit_value,
        consumed_tokens=ledger.input_tokens + ledger.output_tokens,
        consumed_cost_usd=pico_to_usd(ledger.cost_pico),
        error_boundary="fail" if definition is None else definition.error_boundary.value,
        scope=ledger.kind,
        scope_name=ledger.name,
        preflight=projected is not None,
        projected=projected,
    )


def _due_thresholds(frame: _Frame) -> list[_ThresholdCall]:
    """Threshold hooks newly reached by any budget ledger (caller holds the lock)."""
    calls: list[_ThresholdCall] = []
    for ledger in frame.accounted:
        pct = ledger.budget_pct()
        if pct is None:
            continue
        persona_frame = ledger.owner.persona if ledger.owner is not None else None
        persona = None if persona_frame is None else persona_frame.name
        step_name = ledger.name if ledger.kind == "step" else None
        fired = ledger.fired_thresholds
        due = [
            hook
            for hook in matching_hooks(_THRESHOLD, persona, step_name, pct)
            if fired is None or hook.id not in fired
        ]
        if not due:
            continue
        if fired is None:
            fired = ledger.fired_thresholds = set()
        fired.update(hook.id for hook in due)
        usage = ledger.usage()
        for hook in due:
            context = HookContext(
                event=_THRESHOLD,
                persona=persona,
                step=step_name,
                usage=usage,
                budget_pct=pct,
                threshold_pct=hook.threshold_pct,
                scope=ledger.kind,
                run_id=frame.run.id,
            )
            calls.append(([hook], context, frame))
    return calls


def record_llm_usage(
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cost_usd: float | None = None,
    duration_ms: int = 0,
    cache_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> None:
    """Record one LLM call's usage in the active step and every enclosing budget.

    ``cost_usd=None`` asks the configured price source; an empty ``model`` means
    the active step's model. ``cache_tokens`` (cache reads) and
    ``cache_write_tokens`` are parts of ``input_tokens``, priced at the cache
    rates when the price source prices the call. Raises ``BudgetExhausted``
    when a step, persona or run budget is now strictly exceeded (after its
    ``OnBudgetThreshold`` hooks ran), and ``PricingUnknown`` when the call could
    not be priced while a USD budget is in force. The usage is recorded before
    either is raised, and appears in the run's LLM trace log when tracing is on.
    """
    # One combined test on the common path; _validate explains any failure.
    if not (
        type(model) is str
        and type(input_tokens) is int
        and type(output_tokens) is int
        and type(duration_ms) is int
        and type(cache_tokens) is int
        and input_tokens >= 0
        and output_tokens >= 0
        and duration_ms >= 0
        and cache_tokens >= 0
        and (cost_usd is None or (type(cost_usd) is float and 0.0 <= cost_usd < _INF))
    ):
        duration_ms = _validate(
            model, input_tokens, output_tokens, cost_usd, duration_ms, cache_tokens
        )

    frame = _get_frame() or active_frame()
    run = frame.run
    step = frame.step
    named = model
    if not model and step is not None:
        model = step.definition.model or ""
    priced = True
    if cost_usd is None:
        if type(cache_write_tokens) is not int or cache_write_tokens < 0:
            _check_count("record_llm_usage", "cache_write_tokens", cache_write_tokens)
        cost_usd = _price(
            settings.price_source,
            model,
            input_tokens,
            output_tokens,
            cache_tokens,
            cache_write_tokens,
        )
        if cost_usd is None:
            priced = False
            cost_usd = 0.0
    pico = round(cost_usd * PICO_PER_USD)
    exceeded: BaseException | None = None
    thresholds: list[_ThresholdCall] | None = None

    lock = run.lock
    lock.acquire()
    try:
        if step is not None:
            step.own_input_tokens += input_tokens
            step.own_output_tokens += output_tokens
            step.own_cost_pico += pico
            step.own_llm_calls += 1
            if named:  # the seed keeps the last model named, not the declared default
                step.last_model = named
        for ledger in frame.accounted:
            ledger.input_tokens += input_tokens
            ledger.output_tokens += output_tokens
            ledger.cost_pico += pico
            ledger.llm_calls += 1
            if exceeded is not None:
                continue
            # The innermost scope now strictly over a limit is the one named.
            limit = ledger.max_tokens
            if limit is not None and ledger.input_tokens + ledger.output_tokens > limit:
                exceeded = _exhausted(frame, ledger, "max_tokens", limit)
            elif ledger.max_pico is not None and ledger.cost_pico > ledger.max_pico:
                exceeded = _exhausted(frame, ledger, "max_usd", pico_to_usd(ledger.max_pico))
        if run.tracing_enabled:
            # A plain tuple: LlmTraceEntry objects are built when the log is read.
            # The frame and wall time after its fields are for the run store.
            run.raw_trace.append(
                (
                    model,
                    input_tokens,
                    output_tokens,
                    duration_ms,
                    cost_usd if priced else None,
                    cache_tokens,
                    frame,
                    _time(),
                )
            )
        if registered_hooks and _THRESHOLD in registered_hooks:
            thresholds = _due_thresholds(frame)
    finally:
        lock.release()

    if frame.shared:
        # The one test the hot path makes for shared budgets (see _reservations).
        problem = _reservations.settle(frame, model, input_tokens + output_tokens, pico, priced)
        if exceeded is None:
            exceeded = problem
    if exceeded is None and not priced:
        unpriced = next((led for led in frame.accounted if led.max_pico is not None), None)
        if unpriced is not None:
            exceeded = PricingUnknown(model, scope=unpriced.kind, scope_name=unpriced.name)
    if thresholds:
        deferred = _deferred_hooks.get()
        if deferred is not None:
            deferred.extend(thresholds)
        else:
            for hooks, context, span in thresholds:
                dispatch(hooks, context, span)
    if exceeded is not None:
        raise exceeded


async def arecord_llm_usage(
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cost_usd: float | None = None,
    duration_ms: int = 0,
    cache_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> None:
    """``record_llm_usage`` for async code: async threshold hooks are awaited on
    this loop (before any exhaustion error is raised)."""
    pending: list[_ThresholdCall] = []
    token = _deferred_hooks.set(pending)
    error: BaseException | None = None
    try:
        record_llm_usage(
            model,
            input_tokens,
            output_tokens,
            cost_usd=cost_usd,
            duration_ms=duration_ms,
            cache_tokens=cache_tokens,
            cache_write_tokens=cache_write_tokens,
        )
    except (BudgetExhausted, PricingUnknown) as exc:
        error = exc
    finally:
        _deferred_hooks.reset(token)
    for hooks, context, span in pending:
        await adispatch(hooks, context, span)
    if error is not None:
        raise error


def limits_in_force() -> bool:
    """Whether any scope active here has a token or USD limit, local or shared
    (so a pre-flight check could refuse anything)."""
    frame = _get_frame() or active_frame()
    return any(
        ledger.max_tokens is not None or ledger.max_pico is not None for ledger in frame.accounted
    ) or any(budget.has_limit for budget, _ in frame.shared)


def check_budget(
    model: str,
    estimated_input_tokens: int,
    max_output_tokens: int,
    *,
    price: PriceSource | None = None,
) -> None:
    """Pre-flight: raise before a call that the active budgets cannot afford.

    The worst case is ``estimated_input_tokens + max_output_tokens`` tokens, and
    their price from ``price`` (default: the configured price source). Raises
    ``BudgetExhausted`` with ``preflight=True`` naming the first scope, innermost
    first, that it would push over a limit (an already exhausted scope included),
    or ``PricingUnknown`` when a USD budget is in force and no price is known.
    Then, when shared budgets are in force, reserves the worst case in their
    pools (settled by the next ``record_llm_usage`` in this context), raising
    ``BudgetExhausted`` with ``scope="shared"`` when a pool cannot fit it and
    ``SharedPoolUnavailable`` when a pool cannot be reached.
    """
    _check_count("check_budget", "estimated_input_tokens", estimated_input_tokens)
    _check_count("check_budget", "max_output_tokens", max_output_tokens)
    frame = active_frame()
    accounted = frame.accounted
    worst_tokens = estimated_input_tokens + max_output_tokens
    worst_pico = 0
    usd_ledger = next((led for led in accounted if led.max_pico is not None), None)
    if usd_ledger is not None:
        source = price or settings.price_source
        cost = _price(source, model, estimated_input_tokens, max_output_tokens)
        if cost is None:
            raise PricingUnknown(model, scope=usd_ledger.kind, scope_name=usd_ledger.name)
        worst_pico = usd_to_pico(cost)
    with frame.run.lock:
        for ledger in accounted:
            if ledger.max_tokens is not None:
                used = ledger.input_tokens + ledger.output_tokens
                if used + worst_tokens > ledger.max_tokens:
                    raise _exhausted(
                        frame, ledger, "max_tokens", ledger.max_tokens, projected=worst_tokens
                    )
            if ledger.max_pico is not None and ledger.cost_pico + worst_pico > ledger.max_pico:
                raise _exhausted(
                    frame,
                    ledger,
                    "max_usd",
                    pico_to_usd(ledger.max_pico),
                    projected=pico_to_usd(worst_pico),
                )
    if frame.shared:
        _reservations.reserve(frame, model, estimated_input_tokens, max_output_tokens, price)
