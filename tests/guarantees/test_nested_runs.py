"""A run opened inside another is its child: its usage counts against every
enclosing scope (issue 10 case 2); ``detached=True`` is the explicit way out."""

from __future__ import annotations

import asyncio

import pytest

import steptrace


@steptrace.step
def spend(usd: float) -> None:
    steptrace.record_llm_usage("m", 10, 10, cost_usd=usd)


def test_a_nested_run_counts_against_the_outer_run_budget() -> None:
    with (
        steptrace.run("job", budget={"max_usd": 1}) as outer,
        pytest.raises(steptrace.BudgetExhausted) as exhausted,
        steptrace.run("library-internal") as inner,
    ):
        spend(5.0)
    assert exhausted.value.scope == "run"
    assert exhausted.value.scope_name == "job"
    assert outer.usage().cost_usd == 5.0
    assert inner.usage().cost_usd == 5.0
    assert inner.parent is outer
    assert inner.parent_run_id == outer.id
    assert inner.root.parent_id == outer.root.span_id


def test_a_nested_run_counts_against_the_persona_and_step_around_it() -> None:
    @steptrace.persona(budget={"max_usd": 1})
    def researcher() -> None:
        with steptrace.run("library-internal"):
            spend(5.0)

    with steptrace.run("job"), pytest.raises(steptrace.BudgetExhausted) as exhausted:
        researcher()
    assert exhausted.value.scope == "persona"

    @steptrace.step(budget={"max_tokens": 15})
    def outer_step() -> None:
        with steptrace.run("library-internal"):
            spend(0.0)

    with steptrace.run("job2"), pytest.raises(steptrace.BudgetExhausted) as exhausted:
        outer_step()
    assert exhausted.value.scope == "step"
    assert exhausted.value.step == "outer_step"


def test_a_pre_flight_in_a_nested_run_sees_the_outer_limit() -> None:
    with steptrace.run("job", budget={"max_tokens": 100}), steptrace.run("inner"):
        with pytest.raises(steptrace.BudgetExhausted) as refused:
            steptrace.reserve("m", 50, 60)
        assert refused.value.preflight
        assert refused.value.scope_name == "job"


def test_a_detached_run_is_independent() -> None:
    with (
        steptrace.run("job", budget={"max_usd": 1}) as outer,
        steptrace.run("audit", detached=True) as audit,
    ):
        spend(5.0)
    assert outer.usage().cost_usd == 0.0
    assert audit.parent is None
    assert audit.parent_run_id is None
    assert audit.root.parent_id is None


def test_the_nested_run_keeps_its_own_record() -> None:
    with steptrace.run("job") as outer:
        spend(0.25)
        with steptrace.run("child") as child:
            spend(0.5)
    assert [r.cost_usd for r in outer.completed_steps] == [0.25]
    assert [r.cost_usd for r in child.completed_steps] == [0.5]
    assert outer.usage().cost_usd == 0.75
    assert child.usage().cost_usd == 0.5
    assert child.status == outer.status == "completed"


def test_nested_runs_in_concurrent_tasks_share_the_outer_budget_exactly() -> None:
    async def worker(i: int) -> None:
        async with steptrace.run(f"worker-{i}"):
            for _ in range(10):
                await asyncio.sleep(0)
                steptrace.record_llm_usage("m", 1, 1, cost_usd=0.001)

    async def main() -> steptrace.Run:
        async with steptrace.run("job", budget={"max_usd": 10}) as outer:
            await asyncio.gather(*(worker(i) for i in range(50)))
        return outer

    outer = asyncio.run(main())
    assert outer.usage().llm_calls == 500
    assert outer.usage().total_tokens == 1000
    assert outer.ledger.cost_pico == 500 * 10**9


def test_a_run_opened_at_the_top_of_a_context_is_top_level() -> None:
    with steptrace.run("alone") as alone:
        pass
    assert alone.parent is None
    with pytest.raises(TypeError, match="detached"):
        steptrace.run("x", detached="yes")  # type: ignore[arg-type]
