"""The shared backend of budget holds: reservations in a pool every process draws from.

A pre-flight (``steptrace.reserve``, ``check_budget``, every ``llm_call``) holds
the call's worst case on every scope in force. Local scopes (step, persona,
run) are held in their ledgers under the run's lock (``_accounting``); shared
budgets are held here, by asking each pool to reserve the worst case, refusing
with the same ``BudgetExhausted`` a local budget gives (``scope="shared"``,
``scope_name`` the key) when the pool cannot fit it beside what is settled and
reserved. The ``Hold`` keeps the reservations until its call reports back:
``settle`` replaces each with the actual amount (a budget without a hold gets
the amount added), and returns the error to raise after recording when a
budget is now strictly over a limit; ``release`` drops holds whose call never
happened. A worker that dies holding a reservation leaves it to expire on the
pool's clock after ``reservation_ttl`` seconds.

Bounds: a call that went through the pre-flight can only push a pool over its
limit when its actual usage exceeds the reserved worst case (the provider
ignored ``max_tokens``, or the prompt estimate fell short) or its reservation
expired mid-call. Usage recorded without a pre-flight is added at once: each
process can then overshoot a limit by at most its one call in flight, so a
fleet of N workers by at most N such calls.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ._shared import PoolTotals, SharedBudget
from .budget import pico_to_usd
from .errors import BudgetExhausted, PricingUnknown, SharedPoolUnavailable

if TYPE_CHECKING:
    from ._context import Frame

__all__ = ["SharedHeld", "release", "reserve", "settle"]

SharedHeld = list[tuple[SharedBudget, str, str]]
"""The reservations one pre-flight made: (budget, pool key, reservation id)."""


def _error(
    frame: Frame,
    budget: SharedBudget,
    owner: Frame,
    limit_tokens: bool,
    consumed_tokens: int,
    consumed_pico: int,
    projected: float | None,
) -> BudgetExhausted:
    """The error for ``budget``: ``step``/``function``/``error_boundary`` describe
    the step that declared it, or else the innermost step at the time."""
    from ._context import StepFrame  # deferred: _context's types are only read here

    step = owner if isinstance(owner, StepFrame) else frame.step
    definition = None if step is None else step.definition
    if limit_tokens:
        assert budget.max_tokens is not None
        limit, value = "max_tokens", float(budget.max_tokens)
    else:
        assert budget.max_pico is not None
        limit, value = "max_usd", pico_to_usd(budget.max_pico)
    return BudgetExhausted(
        step="" if definition is None else definition.name,
        function="" if definition is None else definition.function,
        limit="max_tokens" if limit == "max_tokens" else "max_usd",
        limit_value=value,
        consumed_tokens=consumed_tokens,
        consumed_cost_usd=pico_to_usd(consumed_pico),
        error_boundary="fail" if definition is None else definition.error_boundary.value,
        scope="shared",
        scope_name=budget.key,
        preflight=projected is not None,
        projected=projected,
    )


def reserve(frame: Frame, worst_tokens: int, worst_pico: int) -> SharedHeld:
    """Hold the worst case on every shared budget in force and return the holds,
    or raise ``BudgetExhausted`` (``preflight=True``) naming the first that
    cannot fit; nothing stays held when it raises. ``worst_pico`` is the priced
    worst case (the caller priced it when any shared budget has a USD limit)."""
    run_id = frame.run.id
    now = time.time()
    held: SharedHeld = []
    try:
        for budget, owner in frame.shared:
            if not budget.has_limit:
                continue  # a metering-only budget has nothing to refuse
            key = budget.pool_key(run_id, now)
            reservation, totals = budget.pool.reserve(
                key,
                worst_tokens,
                worst_pico,
                max_tokens=budget.max_tokens,
                max_pico=budget.max_pico,
                ttl=budget.reservation_ttl,
                retention=budget.retention,
            )
            if reservation is None:
                raise _refusal(frame, budget, owner, totals, worst_tokens, worst_pico)
            held.append((budget, key, reservation))
    except BaseException:
        release(held)
        raise
    return held


def _refusal(
    frame: Frame,
    budget: SharedBudget,
    owner: Frame,
    totals: PoolTotals,
    worst_tokens: int,
    worst_pico: int,
) -> BudgetExhausted:
    over_tokens = (
        budget.max_tokens is not None and totals.committed_tokens + worst_tokens > budget.max_tokens
    )
    return _error(
        frame,
        budget,
        owner,
        over_tokens,
        totals.committed_tokens,
        totals.committed_pico,
        float(worst_tokens) if over_tokens else pico_to_usd(worst_pico),
    )


def settle(
    frame: Frame, held: SharedHeld, model: str, tokens: int, pico: int, priced: bool
) -> BaseException | None:
    """Settle ``held`` (a pre-flight's holds, possibly empty) with the actual
    usage, or add it where there is no hold. Returns the error to raise after
    recording: a budget now strictly over a limit, an unreachable pool, or an
    unpriced call under a shared USD limit."""
    by_budget = {id(budget): (key, rid) for budget, key, rid in held}
    error: BaseException | None = None
    run_id = frame.run.id
    now = time.time()
    for budget, owner in frame.shared:
        hold = by_budget.pop(id(budget), None)
        key, reservation = hold if hold is not None else (budget.pool_key(run_id, now), None)
        try:
            totals = budget.pool.settle(key, reservation, tokens, pico, retention=budget.retention)
        except SharedPoolUnavailable as exc:
            error = error or exc
            continue
        if error is not None:
            continue
        if budget.max_tokens is not None and totals.tokens > budget.max_tokens:
            error = _error(frame, budget, owner, True, totals.tokens, totals.pico, None)
        elif budget.max_pico is not None and totals.pico > budget.max_pico:
            error = _error(frame, budget, owner, False, totals.tokens, totals.pico, None)
    if by_budget:
        # Held by the pre-flight but not in force here (recorded in another scope).
        release([h for h in held if id(h[0]) in by_budget])
    if error is None and not priced:
        usd = next((b for b, _ in frame.shared if b.max_pico is not None), None)
        if usd is not None:
            error = PricingUnknown(model, scope="shared", scope_name=usd.key)
    return error


def release(held: SharedHeld) -> None:
    """Drop reservations whose call never happened."""
    for budget, key, reservation in held:
        try:
            budget.pool.release(key, reservation)
        except SharedPoolUnavailable as exc:
            import logging  # deferred: rare, and logging is slow to import

            # The hold expires on the pool's clock anyway.
            logging.getLogger("steptrace").warning(
                "steptrace: could not release a shared reservation: %s", exc
            )
