"""Every entry point that takes a budget takes the same forms, parsed once by
``split_budget``: a local budget (``Budget`` or dict), a ``SharedBudget``, or a
list of one local budget and shared ones; and every one holds concurrent calls
to the shared limit (issue 10 case 1)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import steptrace
from steptrace import SharedBudget
from steptrace._shared import SharedPool
from steptrace.testing import FakePrices


def _spend_twice() -> list[Any]:
    """Two pre-flights held at once: the second must not fit a 150-token pool."""
    first = steptrace.reserve("m", 50, 50)
    try:
        steptrace.reserve("m", 50, 50)
    except steptrace.BudgetExhausted as refused:
        return [first, refused]
    finally:
        first.release()
    return [first]


def test_run_step_persona_and_extract_take_shared_and_local_forms(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    shared = SharedBudget(key, max_tokens=150, pool=pool)

    @steptrace.step(budget=[{"max_usd": 5}, shared])
    def in_step() -> list[Any]:
        return _spend_twice()

    @steptrace.persona(budget=shared)
    def in_persona() -> list[Any]:
        return _spend_twice()

    for outcome in (
        in_step(),
        in_persona(),
    ):
        assert isinstance(outcome[-1], steptrace.BudgetExhausted)
        assert outcome[-1].scope == "shared"
    with steptrace.run("r", budget=[steptrace.Budget(max_tokens=10_000), shared]) as run:
        assert isinstance(_spend_twice()[-1], steptrace.BudgetExhausted)
        carrier = steptrace.inject()
    assert run.budget == steptrace.Budget(max_tokens=10_000)
    other = SharedBudget(key + "-x", max_tokens=150, pool=pool)
    with steptrace.extract(carrier, budget=[{"max_tokens": 10_000}, other]) as part:
        refused = _spend_twice()[-1]
        assert isinstance(refused, steptrace.BudgetExhausted)
    assert {b.key for b in part.shared_budgets} == {key, key + "-x"}


def test_gathered_calls_hold_the_shared_limit_like_local_ones(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    shared = SharedBudget(key, max_tokens=1000, pool=pool)

    async def call() -> Any:
        try:
            with steptrace.reserve("m", 100, 300) as hold:
                await asyncio.sleep(0.01)
                hold.settle(100, 300)
        except steptrace.BudgetExhausted as refused:
            return refused
        return None

    async def main() -> list[Any]:
        async with steptrace.run("fan-out", budget=shared):
            return await asyncio.gather(*(call() for _ in range(8)))

    outcomes = asyncio.run(main())
    assert sum(o is None for o in outcomes) == 2  # 2 x 400 fit in 1000, a third does not
    assert pool.totals(shared.pool_key("", 0)).committed_tokens in (0, 800)


@pytest.mark.parametrize("bad", [[{"max_usd": 1}, {"max_tokens": 5}], "cheap", [3]])
def test_every_entry_point_refuses_a_bad_form_by_name(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError), match=r"run `r`"):
        steptrace.run("r", budget=bad)
    with pytest.raises((TypeError, ValueError), match=r"step `s`"):
        steptrace.step("s", budget=bad)(_spend_twice)
    with pytest.raises((TypeError, ValueError), match=r"persona `p`"):
        steptrace.persona("p", budget=bad)(_spend_twice)
