"""Accounting: recording LLM usage into the active scopes and enforcing budgets.

``record_llm_usage`` is the seed's ``record_step_llm_usage`` widened to nested
scopes: the innermost step gets the call in its own ledger counters, and every
enclosing step, persona and run with a budget (and the run, always) gets it in
its subtree totals, all under the run's lock. Then, outside the lock,
``OnBudgetThreshold`` hooks that the new totals reach fire (once per scope
invocation), and the first scope, innermost first, whose usage is now strictly
over a limit raises ``BudgetExhausted``. ``check_budget`` is the pre-flight twin:
it raises before a call whose worst case cannot fit in what any scope has left.
"""

from __future__ import annotations

import math
from typing import Any, cast

from . import _context
from ._config import settings
from ._run import active_frame
from .budget import PICO_PER_USD, PriceSource, pico_to_usd, usd_to_pico
from .errors import BudgetExhausted, PricingUnknown, ScopeKind
from .events import LlmTraceEntry
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
_ThresholdCall = tuple[list[HookRegistration], HookContext, Any]


def _check_count(name: str, value: object) -> int:
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"record_llm_usage: {name} must be an int, got {value!r}")
    raise ValueError(f"record_llm_usage: {name} must be >= 0, got {value}")


def _price(
    model: str, input_tokens: int, output_tokens: int, cache_tokens: int, source: Any
) -> float | None:
    if source is None:
        return None
    cost: float | None = source.cost_usd(
        model, input_tokens, output_tokens, cache_read_tokens=cache_tokens
    )
    return cost


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
    if not isinstance(model, str):
        raise TypeError(f"record_llm_usage: model must be a string, got {model!r}")
    _check_count("input_tokens", input_tokens)
    _check_count("output_tokens", output_tokens)
    _check_count("cache_tokens", cache_tokens)
    if cost_usd is not None and not (
        isinstance(cost_usd, int | float)
        and not isinstance(cost_usd, bool)
        and math.isfinite(cost_usd)
        and cost_usd >= 0
    ):
        raise ValueError(
            f"record_llm_usage: cost_usd must be a finite number >= 0, got {cost_usd!r}"
        )
    return _check_duration(duration_ms)


def _account(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cost_usd: float | None,
    duration_ms: int,
    cache_tokens: int,
) -> tuple[_Frame, BaseException | None, list[_ThresholdCall]]:
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
    if not model and frame.step is not None:
        model = frame.step.definition.model or ""  # the step's model is the default
    priced = True
    if cost_usd is None:
        cost_usd = _price(model, input_tokens, output_tokens, cache_tokens, settings.price_source)
        if cost_usd is None:
            priced = False
            cost_usd = 0.0
    pico = round(cost_usd * PICO_PER_USD)
    exceeded: BaseException | None = None
    thresholds: list[_ThresholdCall] = []

    with run.lock:
        step = frame.step
        if step is not None:
            step.own_input_tokens += input_tokens
            step.own_output_tokens += output_tokens
            step.own_cost_pico += pico
            step.own_llm_calls += 1
            if model:
                step.last_model = model
        for scope in frame.accounted:
            scope.input_tokens += input_tokens
            scope.output_tokens += output_tokens
            scope.cost_pico += pico
            scope.llm_calls += 1
            if exceeded is not None:
                continue
            # The innermost scope now strictly over a limit is the one named.
            limit = scope.max_tokens
            if limit is not None and scope.input_tokens + scope.output_tokens > limit:
                exceeded = _exhausted(frame, scope, "max_tokens", limit)
            elif scope.max_pico is not None and scope.cost_pico > scope.max_pico:
                exceeded = _exhausted(frame, scope, "max_usd", pico_to_usd(scope.max_pico))
        if run.tracing_enabled:
            run.llm_trace.append(
                LlmTraceEntry(
                    model,
                    input_tokens,
                    output_tokens,
                    duration_ms,
                    cost_usd if priced else None,
                    cache_tokens,
                )
            )
        if registered_hooks and HookEvent.ON_BUDGET_THRESHOLD in registered_hooks:
            thresholds = _due_thresholds(frame)

    if exceeded is None and not priced:
        unpriced = next((s for s in frame.accounted if s.max_pico is not None), None)
        if unpriced is not None:
            exceeded = PricingUnknown(model, scope=_scope_kind(unpriced), scope_name=unpriced.name)
    return frame, exceeded, thresholds


def _check_duration(value: object) -> int:
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return round(value)
    return _check_count("duration_ms", value)


def _scope_kind(scope: _Frame) -> ScopeKind:
    # Only run, persona and step frames carry budgets; user span frames never do.
    return cast(ScopeKind, scope.kind)


def _exhausted(
    frame: _Frame,
    scope: _Frame,
    limit: Any,
    limit_value: float,
    *,
    projected: float | None = None,
) -> BudgetExhausted:
    """Build the error for ``scope``; ``frame`` is where the call was made."""
    named = scope if isinstance(scope, _context.StepFrame) else frame.step
    definition = None if named is None else named.definition
    return BudgetExhausted(
        step="" if definition is None else definition.name,
        function="" if definition is None else definition.function,
        limit=limit,
        limit_value=limit_value,
        consumed_tokens=scope.input_tokens + scope.output_tokens,
        consumed_cost_usd=pico_to_usd(scope.cost_pico),
        error_boundary="fail" if definition is None else definition.error_boundary.value,
        scope=_scope_kind(scope),
        scope_name=scope.name,
        preflight=projected is not None,
        projected=projected,
    )


def _due_thresholds(frame: _Frame) -> list[_ThresholdCall]:
    """Threshold hooks newly reached by any budgeted scope (caller holds the lock)."""
    calls: list[_ThresholdCall] = []
    for scope in frame.accounted:
        pct = scope.budget_pct()
        if pct is None:
            continue
        persona = scope.persona.name if scope.persona is not None else None
        step_name = scope.name if scope.kind == "step" else None
        fired = scope.fired_thresholds
        due = [
            hook
            for hook in matching_hooks(HookEvent.ON_BUDGET_THRESHOLD, persona, step_name, pct)
            if fired is None or hook.id not in fired
        ]
        if not due:
            continue
        if fired is None:
            fired = scope.fired_thresholds = set()
        fired.update(hook.id for hook in due)
        for hook in due:
            context = HookContext(
                event=HookEvent.ON_BUDGET_THRESHOLD,
                persona=persona,
                step=step_name,
                usage=scope.usage(),
                budget_pct=pct,
                threshold_pct=hook.threshold_pct,
                scope=_scope_kind(scope),
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
) -> None:
    """Record one LLM call's usage in the active step and every enclosing budget.

    ``cost_usd=None`` asks the configured price source. Raises
    ``BudgetExhausted`` when a step, persona or run budget is now strictly
    exceeded (after its ``OnBudgetThreshold`` hooks ran), and ``PricingUnknown``
    when the call could not be priced while a USD budget is in force. The usage
    is recorded before either is raised.
    """
    _frame, error, thresholds = _account(
        model, input_tokens, output_tokens, cost_usd, duration_ms, cache_tokens
    )
    for hooks, context, span in thresholds:
        dispatch(hooks, context, span)
    if error is not None:
        raise error


async def arecord_llm_usage(
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cost_usd: float | None = None,
    duration_ms: int = 0,
    cache_tokens: int = 0,
) -> None:
    """``record_llm_usage`` for async code: async threshold hooks run on this loop."""
    _frame, error, thresholds = _account(
        model, input_tokens, output_tokens, cost_usd, duration_ms, cache_tokens
    )
    for hooks, context, span in thresholds:
        await adispatch(hooks, context, span)
    if error is not None:
        raise error


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
    """
    _check_count("estimated_input_tokens", estimated_input_tokens)
    _check_count("max_output_tokens", max_output_tokens)
    frame = active_frame()
    accounted = frame.accounted
    worst_tokens = estimated_input_tokens + max_output_tokens
    worst_pico = 0
    usd_scope = next((s for s in accounted if s.max_pico is not None), None)
    if usd_scope is not None:
        cost = _price(
            model, estimated_input_tokens, max_output_tokens, 0, price or settings.price_source
        )
        if cost is None:
            raise PricingUnknown(model, scope=_scope_kind(usd_scope), scope_name=usd_scope.name)
        worst_pico = usd_to_pico(cost)
    with frame.run.lock:
        for scope in accounted:
            if scope.max_tokens is not None:
                used = scope.input_tokens + scope.output_tokens
                if used + worst_tokens > scope.max_tokens:
                    raise _exhausted(
                        frame, scope, "max_tokens", scope.max_tokens, projected=worst_tokens
                    )
            if scope.max_pico is not None and scope.cost_pico + worst_pico > scope.max_pico:
                raise _exhausted(
                    frame,
                    scope,
                    "max_usd",
                    pico_to_usd(scope.max_pico),
                    projected=pico_to_usd(worst_pico),
                )
