"""How shared budgets ride on the accounting: reserve before, settle after.

``check_budget`` (the pre-flight every ``llm_call`` makes) calls ``reserve``:
for every shared budget in force it asks the pool to hold the call's worst
case (prompt estimate plus the output cap, priced), and refuses with the same
``BudgetExhausted`` a local budget gives (``scope="shared"``, ``scope_name``
the key) when the pool cannot fit it beside what is settled and reserved.
The holds are kept in this context (a ContextVar) until the call reports back.

``record_llm_usage`` calls ``settle`` when the frame has shared budgets (the
only test it makes for them): each held reservation is replaced by the actual
amount, and a budget without a hold gets the amount added; a budget now
strictly over a limit gives the error to raise after recording, exactly as a
local budget does. ``release_pending`` drops holds whose call never happened
(a provider error, the run ending). A worker that dies holding a reservation
leaves it to expire on the pool's clock after ``reservation_ttl`` seconds.

Bounds: a call that went through the pre-flight can only push a pool over its
limit when its actual usage exceeds the reserved worst case (the provider
ignored ``max_tokens``, or the prompt estimate fell short) or its reservation
expired mid-call. Usage recorded without a pre-flight is added at once: each
process can then overshoot a limit by at most its one call in flight, so a
fleet of N workers by at most N such calls.
"""

from __future__ import annotations

import contextvars
import time
from typing import TYPE_CHECKING

from ._config import settings
from ._shared import PoolTotals, SharedBudget
from .budget import PriceSource, pico_to_usd, usd_to_pico
from .errors import BudgetExhausted, PricingUnknown, SharedPoolUnavailable

if TYPE_CHECKING:
    from ._context import Frame

__all__ = ["release_pending", "reserve", "settle"]


class _Holds:
    """The reservations one pre-flight made: (budget, pool key, reservation id)."""

    __slots__ = ("done", "held")

    def __init__(self, held: list[tuple[SharedBudget, str, str]]) -> None:
        self.held = held
        self.done = False


# A mutable holder, so a record made in a copy of this context (a stream
# finished in a callback) still marks the holds settled.
_pending: contextvars.ContextVar[_Holds | None] = contextvars.ContextVar(
    "steptrace_shared_holds", default=None
)


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


def reserve(
    frame: Frame,
    model: str,
    input_tokens: int,
    max_output_tokens: int,
    price: PriceSource | None,
) -> None:
    """Hold the worst case on every shared budget in force, or raise
    ``BudgetExhausted`` (``preflight=True``) naming the first that cannot fit;
    nothing stays held when it raises."""
    release_pending()
    shared = frame.shared
    worst_tokens = input_tokens + max_output_tokens
    worst_pico = 0
    priced = next((b for b, _ in shared if b.max_pico is not None), None)
    if priced is not None:
        source = price or settings.price_source
        cost = None if source is None else source.cost_usd(model, input_tokens, max_output_tokens)
        if cost is None:
            raise PricingUnknown(model, scope="shared", scope_name=priced.key)
        worst_pico = usd_to_pico(cost)
    run_id = frame.run.id
    now = time.time()
    held: list[tuple[SharedBudget, str, str]] = []
    try:
        for budget, owner in shared:
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
        _release(held)
        raise
    if held:
        _pending.set(_Holds(held))


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


def settle(frame: Frame, model: str, tokens: int, pico: int, priced: bool) -> BaseException | None:
    """Settle this context's holds with the actual usage, or add it where there
    is no hold. Returns the error to raise after recording: a budget now
    strictly over a limit, an unreachable pool, or an unpriced call under a
    shared USD limit."""
    holds = _pending.get()
    by_budget: dict[int, tuple[str, str]] = {}
    if holds is not None and not holds.done:
        holds.done = True
        by_budget = {id(budget): (key, rid) for budget, key, rid in holds.held}
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
    if by_budget and holds is not None:
        # Held by the pre-flight but not in force here (recorded in another scope).
        _release([h for h in holds.held if id(h[0]) in by_budget])
    if error is None and not priced:
        usd = next((b for b, _ in frame.shared if b.max_pico is not None), None)
        if usd is not None:
            error = PricingUnknown(model, scope="shared", scope_name=usd.key)
    return error


def release_pending() -> None:
    """Drop this context's holds whose call never reported back."""
    holds = _pending.get()
    if holds is not None and not holds.done:
        holds.done = True
        _release(holds.held)


def _release(held: list[tuple[SharedBudget, str, str]]) -> None:
    for budget, key, reservation in held:
        try:
            budget.pool.release(key, reservation)
        except SharedPoolUnavailable as exc:
            import logging  # deferred: rare, and logging is slow to import

            # The hold expires on the pool's clock anyway.
            logging.getLogger("steptrace").warning(
                "steptrace: could not release a shared reservation: %s", exc
            )
