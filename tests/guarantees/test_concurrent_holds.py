"""Concurrent model calls cannot overspend local budgets: every pre-flight
holds the call's worst case on every enclosing scope, atomically with the check.

Reproduces issue 10 case 1 (20 ``allm_call`` under ``asyncio.gather`` and 8
threads all sent against a step that could afford two) and proves the
guarantee on generated schedules of tasks and threads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import steptrace
from steptrace import llm
from steptrace.llm import LlmRequest, LlmResponse
from steptrace.testing import FakePrices


class WorstCaseProvider:
    """Answers with exactly the output cap, after yielding to other tasks."""

    name = "worst-case"

    def __init__(self) -> None:
        self.sent = 0
        self._lock = threading.Lock()

    def _response(self, request: LlmRequest) -> LlmResponse:
        with self._lock:
            self.sent += 1
        return LlmResponse(
            text="x",
            model=request.model,
            input_tokens=10,
            output_tokens=request.max_tokens or 1,
            response_id=f"r{self.sent}",
            finish_reason="length",
        )

    def complete(self, request: LlmRequest) -> LlmResponse:
        time.sleep(0.05)  # stay in flight while the other threads pre-flight
        return self._response(request)

    async def acomplete(self, request: LlmRequest) -> LlmResponse:
        for _ in range(3):
            await asyncio.sleep(0)
        return self._response(request)


STEP_BUDGET: dict[str, Any] = {"max_tokens": 1000, "max_usd": 0.0006}


def test_gathered_calls_cannot_overspend_the_step() -> None:
    steptrace.configure(price_source=FakePrices())
    provider = WorstCaseProvider()

    @steptrace.step(budget=STEP_BUDGET, error_boundary="fail")
    async def fan_out() -> list[Any]:
        calls = [
            llm.allm_call("summarize", model="m", max_tokens=400, provider=provider)
            for _ in range(20)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    async def main() -> tuple[steptrace.Run, list[Any]]:
        async with steptrace.run("job", budget={"max_usd": 0.001}) as run:
            return run, await fan_out()

    run, results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, steptrace.BudgetExhausted)]
    assert all(r.preflight for r in refused)
    row = run.completed_steps[0]
    # Worst case $0.000407 a call: one fits in the step's $0.0006, the rest are refused.
    assert provider.sent == len(results) - len(refused) == 1
    assert row.input_tokens + row.output_tokens <= 1000
    assert row.cost_usd <= 0.0006
    assert run.usage().cost_usd <= 0.001


def test_threads_cannot_overspend_the_step() -> None:
    steptrace.configure(price_source=FakePrices())
    provider = WorstCaseProvider()

    @steptrace.step(budget={"max_tokens": 1000})
    def fan_out() -> list[Any]:
        def one() -> Any:
            try:
                return llm.llm_call("summarize", model="m", max_tokens=400, provider=provider)
            except steptrace.BudgetExhausted as exc:
                return exc

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(steptrace.bind(one)) for _ in range(8)]
            return [f.result() for f in futures]

    with steptrace.run("job") as run:
        results = fan_out()
    assert provider.sent == 2
    assert sum(isinstance(r, steptrace.BudgetExhausted) for r in results) == 6
    assert run.completed_steps[0].input_tokens + run.completed_steps[0].output_tokens <= 1000


def test_check_budget_holds_until_the_record_settles_it() -> None:
    with steptrace.run("job", budget={"max_tokens": 100}):
        steptrace.check_budget("m", 10, 50)
        # Another thread in this run sees the first hold: 60 held + 60 > 100.
        with ThreadPoolExecutor(1) as pool:
            refused = pool.submit(steptrace.bind(steptrace.check_budget), "m", 10, 50).exception()
        assert isinstance(refused, steptrace.BudgetExhausted)
        assert refused.preflight
        steptrace.record_llm_usage("m", 10, 20, cost_usd=0.0)
        steptrace.check_budget("m", 10, 50)  # 30 used + 60 held fits


def test_reserve_gives_a_hold_that_settles_or_releases() -> None:
    with steptrace.run("job", budget={"max_tokens": 100}) as run:
        hold = steptrace.reserve("m", 10, 80)
        with pytest.raises(steptrace.BudgetExhausted):
            steptrace.reserve("m", 1, 10)
        hold.release()
        with steptrace.reserve("m", 10, 80) as second:
            second.settle(10, 5, cost_usd=0.0)
        with steptrace.reserve("m", 10, 70):
            pass  # never settled: released on leaving the block
        steptrace.reserve("m", 10, 70).release()
    assert run.usage().total_tokens == 15
    assert run.ledger.held_tokens == 0
