"""Shared budgets in the accounting, against the real pools: pre-flight holds
the worst case, recording settles it, crossing a limit raises like a local
budget, and the step boundaries treat the error as they treat local ones."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import steptrace
from steptrace import BudgetExhausted, PricingUnknown, SharedBudget
from steptrace._shared import PoolTotals, SharedPool
from steptrace.errors import BadRequest, SharedPoolUnavailable
from steptrace.llm import llm_call
from steptrace.shared import RedisPool
from steptrace.testing import FakePrices, ScriptedProvider

PICO_PER_TOKEN = 10**6  # FakePrices: one microdollar a token


def test_preflight_holds_the_worst_case_and_recording_settles_it(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    budget = SharedBudget(key, max_tokens=1000, max_usd=1.0, pool=pool)
    with steptrace.run("r", budget=budget) as run:
        steptrace.check_budget("m", 300, 200)
        assert budget.totals() == PoolTotals(0, 0, 500, 500 * PICO_PER_TOKEN)
        steptrace.record_llm_usage("m", 250, 50)
        assert budget.totals() == PoolTotals(300, 300 * PICO_PER_TOKEN, 0, 0)
        assert budget.totals(run.id) == budget.totals()


def test_preflight_refuses_what_cannot_fit_and_holds_nothing(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    budget = SharedBudget(key, max_tokens=1000, pool=pool)
    with steptrace.run("r", budget=budget):
        steptrace.record_llm_usage("m", 700, 0)
        with pytest.raises(BudgetExhausted) as caught:
            steptrace.check_budget("m", 200, 200)
        assert budget.totals() == PoolTotals(700, 700 * PICO_PER_TOKEN, 0, 0)
    error = caught.value
    assert (error.scope, error.scope_name, error.preflight) == ("shared", key, True)
    assert (error.limit, error.limit_value, error.projected) == ("max_tokens", 1000.0, 400.0)
    assert error.to_dict()["reason"] == "shared_budget_exhausted"
    assert f"shared `{key}` cannot afford the next call" in str(error)


def test_the_usd_limit_is_checked_at_the_worst_case_price(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    budget = SharedBudget(key, max_usd=0.001, pool=pool)  # 1000 tokens' worth
    with steptrace.run("r", budget=budget):
        steptrace.check_budget("m", 500, 500)
        steptrace.record_llm_usage("m", 10, 10)
        with pytest.raises(BudgetExhausted) as caught:
            steptrace.check_budget("m", 500, 500)
    assert caught.value.limit == "max_usd"
    assert caught.value.projected == pytest.approx(0.001)


def test_usage_without_a_reservation_is_recorded_then_raises(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    budget = SharedBudget(key, max_tokens=100, pool=pool)
    with steptrace.run("r", budget=budget) as run:
        steptrace.record_llm_usage("m", 60, 0)
        with pytest.raises(BudgetExhausted) as caught:
            steptrace.record_llm_usage("m", 60, 0)
        # Nothing lost: both the local ledger and the pool have the call.
        assert run.usage().total_tokens == 120
        assert budget.totals().tokens == 120
    assert (caught.value.preflight, caught.value.consumed_tokens) == (False, 120.0)
    assert str(caught.value) == f"shared `{key}` exceeded max_tokens budget (120 > 100)"


def test_a_local_budget_is_checked_first_and_then_the_shared_one(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    budget = SharedBudget(key, max_tokens=10_000, pool=pool)
    with steptrace.run("r", budget=[{"max_tokens": 100}, budget]):
        with pytest.raises(BudgetExhausted) as caught:
            steptrace.check_budget("m", 100, 100)
        assert caught.value.scope == "run"
        assert budget.totals().reserved_tokens == 0  # refused locally: nothing held


@pytest.mark.parametrize(
    ("boundary", "status"), [("continue", "skipped"), ("escalate", "escalated"), ("fail", "failed")]
)
def test_step_boundaries_apply_to_shared_budgets(
    pool: SharedPool, key: str, flat_price: FakePrices, boundary: str, status: str
) -> None:
    budget = SharedBudget(key, max_tokens=100, pool=pool)

    @steptrace.step(name="spend", budget=budget, error_boundary=boundary)
    def spend() -> str:
        steptrace.record_llm_usage("m", 150, 0)
        return "done"

    with steptrace.run("r") as run:
        if boundary == "continue":
            assert spend() is None
        else:
            with pytest.raises(BudgetExhausted) as caught:
                spend()
            assert caught.value.escalated == (boundary == "escalate")
            assert (caught.value.step, caught.value.scope) == ("spend", "shared")
            assert caught.value.error_boundary == boundary
    assert [row.status for row in run.completed_steps] == [status]
    assert budget.totals(run.id).tokens == 150


def test_a_persona_budget_names_the_innermost_step(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    budget = SharedBudget(key, max_tokens=100, window="total", pool=pool)

    @steptrace.step(name="inner", error_boundary="continue")
    def inner() -> None:
        steptrace.record_llm_usage("m", 101, 0)

    @steptrace.persona(name="writer", budget=budget)
    def writer() -> None:
        inner()

    with steptrace.run("r") as run:
        writer()
        inner()  # outside the persona: the shared budget is not in force
    assert [row.status for row in run.completed_steps] == ["skipped", "completed"]
    assert budget.totals(run.id).tokens == 101


def test_runs_have_their_own_run_window_and_share_the_total_one(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    per_run = SharedBudget(key + "-run", max_tokens=1000, window="run", pool=pool)
    overall = SharedBudget(key + "-all", max_tokens=1000, window="total", pool=pool)
    ids = []
    for _ in range(2):
        with steptrace.run("r", budget=[per_run, overall]) as run:
            steptrace.record_llm_usage("m", 10, 0)
            ids.append(run.id)
    assert [per_run.totals(run_id).tokens for run_id in ids] == [10, 10]
    assert overall.totals(ids[0]).tokens == 20


def test_llm_call_draws_from_a_shared_budget(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    budget = SharedBudget(key, max_tokens=5000, pool=pool)
    with steptrace.run("r", budget=budget) as run:
        result = llm_call("What is the capital?", model="m", provider=ScriptedProvider(["Paris"]))
    assert budget.totals(run.id) == PoolTotals(
        result.input_tokens + result.output_tokens,
        (result.input_tokens + result.output_tokens) * PICO_PER_TOKEN,
        0,
        0,
    )


def test_allm_call_draws_from_a_shared_budget(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    budget = SharedBudget(key, max_tokens=5000, pool=pool)

    async def main() -> tuple[str, int]:
        async with steptrace.run("r", budget=budget) as run:
            result = await steptrace.llm.allm_call(
                "hi", model="m", provider=ScriptedProvider(["hello"])
            )
        return run.id, result.input_tokens + result.output_tokens

    run_id, tokens = asyncio.run(main())
    assert budget.totals(run_id) == PoolTotals(tokens, tokens * PICO_PER_TOKEN, 0, 0)


def test_a_failed_call_releases_its_hold(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    budget = SharedBudget(key, max_tokens=100_000, pool=pool)
    refusal = BadRequest("no", provider="scripted", model="m", status_code=400)
    with steptrace.run("r", budget=budget):
        with pytest.raises(BadRequest):
            llm_call("x", model="m", provider=ScriptedProvider([refusal]), max_tokens=1000)
        assert budget.totals() == PoolTotals(0, 0, 0, 0)


def test_an_unpriced_call_under_a_shared_usd_limit(pool: SharedPool, key: str) -> None:
    budget = SharedBudget(key, max_usd=1.0, pool=pool)
    with steptrace.run("r", budget=budget):
        with pytest.raises(PricingUnknown) as caught:
            steptrace.check_budget("mystery", 10, 10)
        assert (caught.value.scope, caught.value.scope_name) == ("shared", key)
        with pytest.raises(PricingUnknown):
            steptrace.record_llm_usage("mystery", 10, 10)
        assert budget.totals().tokens == 20  # the tokens are still counted


def test_a_metering_budget_counts_without_refusing(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    meter = SharedBudget(key, pool=pool)
    with steptrace.run("r", budget=meter):
        steptrace.check_budget("m", 10**9, 10**9)
        steptrace.record_llm_usage("m", 5, 5)
        assert meter.totals() == PoolTotals(10, 10 * PICO_PER_TOKEN, 0, 0)


def test_an_unreachable_pool_refuses_the_call(flat_price: FakePrices) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    budget = SharedBudget("k", max_usd=1, pool=RedisPool(f"redis://127.0.0.1:{port}/0", timeout=1))
    with steptrace.run("r", budget=budget) as run:
        with pytest.raises(SharedPoolUnavailable, match=f"shared budget `k\\|run:{run.id}`"):
            steptrace.check_budget("m", 1, 1)
        with pytest.raises(SharedPoolUnavailable):
            steptrace.record_llm_usage("m", 1, 1)
        assert run.usage().total_tokens == 2  # recorded locally before the error


def test_a_hold_whose_call_never_reported_is_released(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    budget = SharedBudget(key, max_tokens=1000, pool=pool)
    with steptrace.run("r", budget=budget) as run:
        steptrace.check_budget("m", 300, 300)
        # The next pre-flight in this context means the last call never happened.
        steptrace.check_budget("m", 100, 100)
        assert budget.totals().reserved_tokens == 200
    # Ending the run drops the hold that is left.
    assert budget.totals(run.id) == PoolTotals(0, 0, 0, 0)


def test_concurrent_tasks_settle_their_own_holds(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    budget = SharedBudget(key, max_tokens=10_000, pool=pool)

    held: list[int] = []
    settled: list[int] = []

    async def call(tokens: int, all_reserved: asyncio.Event) -> None:
        steptrace.check_budget("m", tokens, 0)
        held.append(tokens)
        if len(held) == 3:
            all_reserved.set()
        await all_reserved.wait()  # every task holds its own reservation now
        # Each settle frees exactly its own task's hold.
        assert budget.totals().reserved_tokens == 600 - sum(settled)
        await steptrace.arecord_llm_usage("m", tokens, 0)
        settled.append(tokens)

    async def main() -> str:
        all_reserved = asyncio.Event()
        async with steptrace.run("r", budget=budget) as run:
            await asyncio.gather(*(call(t, all_reserved) for t in (100, 200, 300)))
        return run.id

    run_id = asyncio.run(main())
    assert budget.totals(run_id) == PoolTotals(600, 600 * PICO_PER_TOKEN, 0, 0)


def test_an_agent_loop_stops_cleanly_on_a_shared_budget(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    from steptrace.agent import agent_loop

    budget = SharedBudget(key, max_tokens=500, pool=pool)

    @steptrace.persona(name="researcher", budget=budget)
    def researcher() -> Any:
        return agent_loop("Find it.", model="m", provider=ScriptedProvider(["found"]))

    # No step of its own here, so the loop's error reaches the caller, with the
    # loop's result on it, as for a local persona budget.
    with steptrace.run("r") as run, pytest.raises(BudgetExhausted) as caught:
        researcher()
    result = caught.value.agent_result  # type: ignore[attr-defined]
    # The first turn's worst case (prompt + 4096 output tokens) cannot fit.
    assert (caught.value.scope, caught.value.preflight) == ("shared", True)
    assert result.status == "budget_exhausted"
    assert result.events[-1].to_dict()["status"] == "budget_exhausted"
    assert budget.totals(run.id) == PoolTotals(0, 0, 0, 0)
