"""Property: under any schedule of concurrent model calls, no scope ends over
its limit and every hold is released.

Hypothesis generates nested limits (step, persona, run; tokens and USD), and a
batch of calls, each run as an asyncio task (``allm_call``) or on a thread
(``llm_call``), each with its worst case, real usage at or below it, and an
end: answered, failed by the provider, or cancelled mid-request. All start at
once in one step, interleaving at every await and thread switch.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steptrace
from steptrace import llm
from steptrace.budget import Ledger
from steptrace.errors import BadRequest
from steptrace.llm import LlmRequest, LlmResponse, estimate_input_tokens
from steptrace.testing import FakePrices


@dataclass(frozen=True)
class Call:
    on_thread: bool
    prompt_chars: int
    max_output: int
    used_fraction: float
    end: str  # "answer", "fail", "cancel"


calls = st.builds(
    Call,
    on_thread=st.booleans(),
    prompt_chars=st.integers(1, 300),
    max_output=st.integers(1, 400),
    used_fraction=st.floats(0.0, 1.0),
    end=st.sampled_from(["answer", "answer", "answer", "fail", "cancel"]),
)
token_limits = st.none() | st.integers(50, 3000)
usd_limits = st.none() | st.floats(0.0, 0.003)


class Provider:
    """Answers with usage at or below the worst case, fails, or hangs until
    cancelled, as the prompt's call says."""

    name = "schedule"

    def __init__(self, plan: dict[str, Call]) -> None:
        self.plan = plan
        self.sent = 0
        self._lock = threading.Lock()

    def _answer(self, request: LlmRequest) -> LlmResponse:
        call = self.plan[request.messages[-1].content]
        with self._lock:
            self.sent += 1
        if call.end == "fail":
            raise BadRequest("refused", provider=self.name, model=request.model)
        worst_input = estimate_input_tokens(request)
        return LlmResponse(
            text="ok",
            model=request.model,
            input_tokens=int(worst_input * call.used_fraction),
            output_tokens=int(call.max_output * call.used_fraction),
        )

    def complete(self, request: LlmRequest) -> LlmResponse:
        return self._answer(request)

    async def acomplete(self, request: LlmRequest) -> LlmResponse:
        call = self.plan[request.messages[-1].content]
        await asyncio.sleep(0)
        if call.end == "cancel":
            await asyncio.sleep(60)  # cancelled long before this ends
        return self._answer(request)


def _ledgers(run: steptrace.Run) -> list[Ledger]:
    found = (getattr(frame, "ledger", None) for frame in run.spans)
    return [ledger for ledger in found if isinstance(ledger, Ledger)]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    batch=st.lists(calls, min_size=1, max_size=16),
    run_limits=st.tuples(token_limits, usd_limits),
    persona_limits=st.tuples(token_limits, usd_limits),
    step_limits=st.tuples(token_limits, usd_limits),
)
def test_no_scope_ends_over_its_limit_and_every_hold_is_released(
    batch: list[Call],
    run_limits: tuple[int | None, float | None],
    persona_limits: tuple[int | None, float | None],
    step_limits: tuple[int | None, float | None],
) -> None:
    steptrace.reset()
    steptrace.configure(price_source=FakePrices())
    plan = {f"call {i} " + "x" * call.prompt_chars: call for i, call in enumerate(batch)}
    provider = Provider(plan)
    threads = ThreadPoolExecutor(max_workers=4)

    def budget(limits: tuple[int | None, float | None]) -> dict[str, Any]:
        return {"max_tokens": limits[0], "max_usd": limits[1]}

    @steptrace.step(budget=budget(step_limits))
    async def fan_out() -> None:
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[Any]] = []
        cancel: list[asyncio.Future[Any]] = []
        for prompt, call in plan.items():
            if call.on_thread:
                job = steptrace.bind(
                    functools.partial(
                        llm.llm_call,
                        prompt,
                        model="m",
                        max_tokens=call.max_output,
                        provider=provider,
                    )
                )
                pending.append(loop.run_in_executor(threads, job))
            else:
                task: asyncio.Future[Any] = asyncio.ensure_future(
                    llm.allm_call(prompt, model="m", max_tokens=call.max_output, provider=provider)
                )
                pending.append(task)
                if call.end == "cancel":
                    cancel.append(task)
        for _ in range(3):
            await asyncio.sleep(0)
        for task in cancel:
            task.cancel()
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        for outcome in outcomes:
            allowed = (llm.LlmResult, steptrace.BudgetExhausted, BadRequest)
            assert isinstance(outcome, (*allowed, asyncio.CancelledError)), outcome

    @steptrace.persona(budget=budget(persona_limits))
    async def agent() -> None:
        await fan_out()

    async def main() -> steptrace.Run:
        async with steptrace.run("schedule", budget=budget(run_limits)) as run:
            await agent()
        return run

    try:
        run = asyncio.run(main())
    finally:
        threads.shutdown(wait=True)
    ledgers = _ledgers(run)
    assert ledgers, "the run always keeps a ledger"
    for ledger in ledgers:
        assert ledger.held_tokens == 0, ledger.name
        assert ledger.held_pico == 0, ledger.name
        if ledger.max_tokens is not None:
            assert ledger.input_tokens + ledger.output_tokens <= ledger.max_tokens, ledger.name
        if ledger.max_pico is not None:
            assert ledger.cost_pico <= ledger.max_pico, ledger.name
    assert run.status == "completed"
    assert run.usage().llm_calls <= provider.sent
