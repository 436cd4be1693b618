"""Error boundaries (fail / continue / escalate) on the four kinds of step,
nested steps, recorded statuses, and generators closed early."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator

import pytest

import steptrace
from steptrace import BudgetExhausted, HookContext

KINDS = ["sync", "async", "gen", "agen"]
BUDGET = {"max_tokens": 10}


def _statuses() -> list[tuple[str, str]]:
    return [(s.name, s.status) for s in steptrace.current_run().completed_steps]


def _make(
    kind: str, boundary: str, raised: list[BudgetExhausted], tokens: int = 6
) -> Callable[[], object]:
    """A step of ``kind`` that records ``tokens`` in and out (6 + 6 exceeds its
    budget); calling the result drives it to the end and returns what it
    returned (a list of items for generators)."""

    def exceed() -> None:
        try:
            steptrace.record_llm_usage("m", tokens, tokens, cost_usd=0.25)
        except BudgetExhausted as err:
            raised.append(err)
            raise

    if kind == "sync":

        @steptrace.step("work", budget=BUDGET, error_boundary=boundary)
        def sync_step() -> str:
            exceed()
            return "done"

        return sync_step
    if kind == "async":

        @steptrace.step("work", budget=BUDGET, error_boundary=boundary)
        async def async_step() -> str:
            await asyncio.sleep(0)
            exceed()
            return "done"

        return lambda: asyncio.run(async_step())
    if kind == "gen":

        @steptrace.step("work", budget=BUDGET, error_boundary=boundary)
        def gen_step() -> Iterator[int]:
            yield 1
            exceed()
            yield 2

        return lambda: list(gen_step())

    @steptrace.step("work", budget=BUDGET, error_boundary=boundary)
    async def agen_step() -> AsyncIterator[int]:
        yield 1
        await asyncio.sleep(0)
        exceed()
        yield 2

    async def drain() -> list[int]:
        return [item async for item in agen_step()]

    return lambda: asyncio.run(drain())


@pytest.mark.parametrize("kind", KINDS)
def test_fail_records_failed_and_reraises_unchanged(kind: str) -> None:
    raised: list[BudgetExhausted] = []
    call = _make(kind, "fail", raised)
    with pytest.raises(BudgetExhausted) as info:
        call()
    assert info.value is raised[0]
    assert info.value.escalated is False
    assert info.value.category == "budget_exceeded"
    assert info.value.error_boundary == "fail"
    assert _statuses() == [("work", "failed")]
    (record,) = steptrace.current_run().completed_steps
    assert record.error == "step `work` exceeded max_tokens budget (12 > 10)"
    assert record.llm_calls == 1
    assert steptrace.current_step() is None


@pytest.mark.parametrize("kind", KINDS)
def test_continue_returns_none_and_records_skipped(kind: str) -> None:
    raised: list[BudgetExhausted] = []
    call = _make(kind, "continue", raised)
    result = call()
    expected: object = [1] if kind in ("gen", "agen") else None
    assert result == expected
    assert len(raised) == 1
    assert _statuses() == [("work", "skipped")]
    (record,) = steptrace.current_run().completed_steps
    assert record.error == "step `work` exceeded max_tokens budget (12 > 10)"
    assert (record.input_tokens, record.output_tokens) == (6, 6)
    assert steptrace.current_step() is None


@pytest.mark.parametrize("kind", KINDS)
def test_escalate_records_escalated_and_reraises_marked(kind: str) -> None:
    raised: list[BudgetExhausted] = []
    call = _make(kind, "escalate", raised)
    with pytest.raises(BudgetExhausted) as info:
        call()
    err = info.value
    assert err is not raised[0]
    assert err.__cause__ is raised[0]
    assert err.escalated is True
    assert err.category == "handoff_escalation"
    assert err.to_dict()["escalated"] is True
    assert err.to_dict()["category"] == "handoff_escalation"
    assert (err.step, err.function, err.reason) == (
        "work",
        raised[0].function,
        "step_budget_exhausted",
    )
    assert _statuses() == [("work", "escalated")]
    assert steptrace.current_step() is None


@pytest.mark.parametrize("kind", KINDS)
def test_completed_steps_record_completed(kind: str) -> None:
    result = _make(kind, "fail", [], tokens=2)()
    assert result == ([1, 2] if kind in ("gen", "agen") else "done")
    (record,) = steptrace.current_run().completed_steps
    assert (record.status, record.error, record.llm_calls, record.cost_usd) == (
        "completed",
        None,
        1,
        0.25,
    )
    (step_span,) = [s for s in steptrace.current_run().spans if s.kind == steptrace.SpanKind.STEP]
    assert step_span.metadata["status"] == "completed"
    assert (step_span.metadata["input_tokens"], step_span.metadata["llm_calls"]) == (2, 1)


# -- nested steps ------------------------------------------------------------------


def test_inner_continue_swallows_and_outer_completes() -> None:
    @steptrace.step("inner", budget=BUDGET, error_boundary="continue")
    def inner() -> str:
        steptrace.record_llm_usage("m", 20, 0, cost_usd=0.0)
        return "never"

    @steptrace.step("outer")
    def outer() -> tuple[str | None, str]:
        return inner(), "after"

    assert outer() == (None, "after")
    assert _statuses() == [("inner", "skipped"), ("outer", "completed")]


def test_inner_and_outer_fail_reraise_the_same_error() -> None:
    raised: list[BaseException] = []

    @steptrace.step("inner", budget=BUDGET)
    def inner() -> None:
        try:
            steptrace.record_llm_usage("m", 20, 0, cost_usd=0.0)
        except BudgetExhausted as err:
            raised.append(err)
            raise

    @steptrace.step("outer", error_boundary="fail")
    def outer() -> None:
        inner()

    with pytest.raises(BudgetExhausted) as info:
        outer()
    assert info.value is raised[0]
    assert info.value.step == "inner"
    assert _statuses() == [("inner", "failed"), ("outer", "failed")]


def test_outer_continue_catches_a_failed_inner_budget_error() -> None:
    @steptrace.step("inner", budget=BUDGET, error_boundary="fail")
    def inner() -> None:
        steptrace.record_llm_usage("m", 20, 0, cost_usd=0.0)

    @steptrace.step("outer", error_boundary="continue")
    def outer() -> str:
        inner()
        return "never"

    assert outer() is None
    assert _statuses() == [("inner", "failed"), ("outer", "skipped")]


@pytest.mark.parametrize("outer_boundary", ["continue", "escalate", "fail"])
def test_escalated_error_passes_outer_boundaries_unchanged(outer_boundary: str) -> None:
    raised: list[BaseException] = []

    @steptrace.step("inner", budget=BUDGET, error_boundary="escalate")
    def inner() -> None:
        steptrace.record_llm_usage("m", 20, 0, cost_usd=0.0)

    @steptrace.step("middle", error_boundary="continue")
    def middle() -> None:
        try:
            inner()
        except BudgetExhausted as err:
            raised.append(err)
            raise

    @steptrace.step("outer", error_boundary=outer_boundary)
    def outer() -> str:
        middle()
        return "never"

    with pytest.raises(BudgetExhausted) as info:
        outer()
    assert info.value is raised[0]
    assert info.value.escalated is True
    assert info.value.category == "handoff_escalation"
    assert info.value.step == "inner"
    assert _statuses() == [("inner", "escalated"), ("middle", "failed"), ("outer", "failed")]


@pytest.mark.parametrize("boundary", ["fail", "continue", "escalate"])
def test_non_budget_errors_are_never_caught(boundary: str) -> None:
    @steptrace.step("inner", error_boundary=boundary)
    def inner() -> None:
        raise ValueError("boom")

    @steptrace.step("outer", error_boundary="continue")
    def outer() -> None:
        inner()

    with pytest.raises(ValueError, match=r"^boom$"):
        outer()
    assert _statuses() == [("inner", "failed"), ("outer", "failed")]
    assert [s.error for s in steptrace.current_run().completed_steps] == ["ValueError: boom"] * 2


def test_non_budget_error_in_async_generator_is_recorded_failed() -> None:
    @steptrace.step("agen", error_boundary="continue")
    async def agen() -> AsyncIterator[int]:
        yield 1
        raise KeyError("gone")

    async def drain() -> list[int]:
        return [x async for x in agen()]

    with pytest.raises(KeyError):
        asyncio.run(drain())
    assert _statuses() == [("agen", "failed")]


def test_handoff_hook_fires_on_escalation_only() -> None:
    seen: list[HookContext] = []
    steptrace.register_persona_hook("*", "OnHandoffEmitted", seen.append)

    @steptrace.step("esc", budget=BUDGET, error_boundary="escalate")
    def esc() -> None:
        steptrace.record_llm_usage("m", 20, 0, cost_usd=0.0)

    @steptrace.step("cont", budget=BUDGET, error_boundary="continue")
    def cont() -> None:
        steptrace.record_llm_usage("m", 20, 0, cost_usd=0.0)

    @steptrace.persona("lead")
    def lead() -> None:
        cont()
        esc()

    with pytest.raises(BudgetExhausted):
        lead()
    assert len(seen) == 1
    ctx = seen[0]
    assert ctx.event is steptrace.HookEvent.ON_HANDOFF_EMITTED
    assert (ctx.step, ctx.persona, ctx.status) == ("esc", "lead", "escalated")
    assert isinstance(ctx.error, BudgetExhausted)
    assert ctx.error.escalated is True


# -- generators closed early ---------------------------------------------------------


def test_generator_closed_early_records_completed_and_leaves_no_step() -> None:
    @steptrace.step("stream", budget=BUDGET)
    def stream() -> Iterator[int]:
        for i in range(5):
            steptrace.record_llm_usage("m", 1, 1, cost_usd=0.0)
            yield i

    seen_inside_loop: list[steptrace.ActiveStep | None] = []
    for item in stream():
        seen_inside_loop.append(steptrace.current_step())
        # The consumer's own usage between yields is not the step's.
        steptrace.record_llm_usage("m", 100, 100, cost_usd=0.0)
        if item == 1:
            break
    assert seen_inside_loop == [None, None]
    assert steptrace.current_step() is None
    (record,) = steptrace.current_run().completed_steps
    assert (record.status, record.llm_calls) == ("completed", 2)
    assert (record.input_tokens, record.output_tokens) == (2, 2)
    assert steptrace.current_run().usage().total_tokens == 404


def test_async_generator_closed_early_records_completed() -> None:
    @steptrace.step("astream", budget=BUDGET)
    async def astream() -> AsyncGenerator[int, None]:
        for i in range(5):
            steptrace.record_llm_usage("m", 1, 1, cost_usd=0.0)
            yield i

    async def consume() -> list[steptrace.ActiveStep | None]:
        seen: list[steptrace.ActiveStep | None] = []
        async with contextlib.aclosing(astream()) as items:
            async for item in items:
                seen.append(steptrace.current_step())
                steptrace.record_llm_usage("m", 100, 100, cost_usd=0.0)
                if item == 2:
                    break
        return seen

    assert asyncio.run(consume()) == [None, None, None]
    assert steptrace.current_step() is None
    (record,) = steptrace.current_run().completed_steps
    assert (record.status, record.llm_calls, record.input_tokens) == ("completed", 3, 3)


def test_async_generator_abandoned_after_break_is_finalized_as_completed() -> None:
    @steptrace.step("astream")
    async def astream() -> AsyncIterator[int]:
        for i in range(5):
            yield i

    async def consume() -> int:
        async for item in astream():
            if item == 0:
                break
        # No aclosing: the event loop's async-generator finalizer closes it.
        for _ in range(20):
            if steptrace.current_run().completed_steps:
                break
            await asyncio.sleep(0)
        return len(steptrace.current_run().completed_steps)

    assert asyncio.run(consume()) == 1
    assert _statuses() == [("astream", "completed")]
    assert steptrace.current_step() is None


def test_generator_step_opens_once_across_resumptions() -> None:
    pre: list[str | None] = []
    steptrace.register_persona_hook("*", "PreStep", lambda ctx: pre.append(ctx.step))

    @steptrace.step("stream")
    def stream() -> Iterator[str | None]:
        for _ in range(3):
            active = steptrace.current_step()
            yield None if active is None else active.name

    assert list(stream()) == ["stream", "stream", "stream"]
    assert pre == ["stream"]
    assert _statuses() == [("stream", "completed")]


@pytest.mark.parametrize("boundary", ["fail", "continue", "escalate"])
@pytest.mark.parametrize("kind", ["gen", "agen"])
def test_boundary_applies_when_closing_exhausts_the_budget(kind: str, boundary: str) -> None:
    """A generator step whose cleanup (run on early close) exhausts its budget
    gets its boundary like any other exhaustion: continue closes quietly,
    escalate raises the escalated error, fail raises it unchanged."""
    raised: list[BudgetExhausted] = []

    def cleanup() -> None:
        try:
            steptrace.record_llm_usage("m", 20, 0, cost_usd=0.0)
        except BudgetExhausted as err:
            raised.append(err)
            raise

    @steptrace.step("g", budget=BUDGET, error_boundary=boundary)
    def gen_step() -> Generator[int, None, None]:
        try:
            yield 1
            yield 2
        finally:
            cleanup()

    @steptrace.step("g", budget=BUDGET, error_boundary=boundary)
    async def agen_step() -> AsyncGenerator[int, None]:
        try:
            yield 1
            yield 2
        finally:
            cleanup()

    def close_early() -> None:
        if kind == "gen":
            items = gen_step()
            next(items)
            items.close()
            return

        async def main() -> None:
            items = agen_step()
            await items.__anext__()
            await items.aclose()

        asyncio.run(main())

    if boundary == "continue":
        close_early()
    else:
        with pytest.raises(BudgetExhausted) as info:
            close_early()
        assert info.value.escalated is (boundary == "escalate")
        if boundary == "fail":
            assert info.value is raised[0]
        else:
            assert info.value.category == "handoff_escalation"
    assert len(raised) == 1
    expected = {"fail": "failed", "continue": "skipped", "escalate": "escalated"}[boundary]
    assert _statuses() == [("g", expected)]
    assert steptrace.current_step() is None
