"""Hooks: event parsing, glob matching, PreStep/PostStep, budget thresholds,
async handlers, failing handlers, and registration management."""

from __future__ import annotations

import asyncio
import logging

import pytest

import steptrace
from steptrace import BudgetExhausted, HookContext, HookEvent
from steptrace.hooks import parse_hook_event


def _noop(ctx: HookContext) -> None:
    return None


# -- parsing ---------------------------------------------------------------------------


def test_threshold_event_string_carries_its_percentage() -> None:
    reg = steptrace.register_persona_hook("*", "OnBudgetThreshold(80)", _noop)
    assert (reg.event, reg.threshold_pct) == (HookEvent.ON_BUDGET_THRESHOLD, 80.0)
    assert parse_hook_event(" OnBudgetThreshold( 12.5 ) ") == (HookEvent.ON_BUDGET_THRESHOLD, 12.5)
    assert parse_hook_event("PreStep") == (HookEvent.PRE_STEP, None)
    assert parse_hook_event(HookEvent.POST_STEP) == (HookEvent.POST_STEP, None)
    assert [e.value for e in HookEvent] == [
        "PreStep",
        "PostStep",
        "OnBudgetThreshold",
        "OnApprovalRequested",
        "OnHandoffEmitted",
        "OnPersonaPaused",
        "OnPersonaResumed",
        "PreToolUse",
        "PostToolUse",
    ]


def test_unknown_event_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown hook event 'OnStepStart'") as info:
        steptrace.register_persona_hook("*", "OnStepStart", _noop)
    for name in ("PreStep", "PostStep", "OnBudgetThreshold(", "OnApprovalRequested"):
        assert name in str(info.value)
    for name in ("OnHandoffEmitted", "OnPersonaPaused", "OnPersonaResumed"):
        assert name in str(info.value)
    with pytest.raises(ValueError, match="unknown hook event"):
        steptrace.on("prestep")
    with pytest.raises(ValueError, match="unknown hook event"):
        steptrace.matching_hooks("Nope", None, None, None)


@pytest.mark.parametrize(
    "event", ["OnBudgetThreshold", HookEvent.ON_BUDGET_THRESHOLD, "OnBudgetThreshold(0)"]
)
def test_threshold_without_valid_percent_is_rejected(event: str) -> None:
    with pytest.raises(ValueError, match="OnBudgetThreshold"):
        steptrace.register_persona_hook("*", event, _noop)
    assert steptrace.matching_hooks(HookEvent.ON_BUDGET_THRESHOLD, None, None, 100.0) == []


# -- matching --------------------------------------------------------------------------


def test_persona_globs() -> None:
    every = steptrace.register_persona_hook("*", "PreStep", _noop)
    research = steptrace.register_persona_hook("research*", "PreStep", _noop)
    exact = steptrace.register_persona_hook("writer", "PreStep", _noop)

    def ids(persona: str | None) -> set[int]:
        return {h.id for h in steptrace.matching_hooks("PreStep", persona, "s", None)}

    assert ids(None) == {every.id}  # `*` matches "no persona"
    assert ids("research-bot") == {every.id, research.id}
    assert ids("research") == {every.id, research.id}
    assert ids("Research-bot") == {every.id}  # case sensitive
    assert ids("writer") == {every.id, exact.id}
    assert ids("writer2") == {every.id}
    assert steptrace.matching_hooks("PostStep", "writer", "s", None) == []


def test_step_name_is_exact_and_threshold_filters_by_percent() -> None:
    plan = steptrace.register_step_hook("*", "plan", "PostStep", _noop)
    anyone = steptrace.register_persona_hook("*", "PostStep", _noop)
    t80 = steptrace.register_step_hook("*", "plan", "OnBudgetThreshold(80)", _noop)

    def ids(event: HookEvent, step: str | None, pct: float | None) -> list[int]:
        return [h.id for h in steptrace.matching_hooks(event, "p", step, pct)]

    post, threshold = HookEvent.POST_STEP, HookEvent.ON_BUDGET_THRESHOLD
    assert ids(post, "plan", None) == [plan.id, anyone.id]
    assert ids(post, "plan2", None) == [anyone.id]
    assert ids(post, None, None) == [anyone.id]
    assert ids(threshold, "plan", 80.0) == [t80.id]
    assert ids(threshold, "plan", 100.0) == [t80.id]
    assert ids(threshold, "plan", 79.99) == []
    assert ids(threshold, "plan", None) == []
    assert ids(threshold, "other", 95.0) == []


def test_matching_hooks_takes_the_threshold_event_by_name() -> None:
    # "OnBudgetThreshold" is the string value of HookEvent.ON_BUDGET_THRESHOLD;
    # matching takes the budget use separately, so the bare name must work too.
    t80 = steptrace.register_persona_hook("*", "OnBudgetThreshold(80)", _noop)
    assert HookEvent("OnBudgetThreshold") is HookEvent.ON_BUDGET_THRESHOLD
    assert steptrace.matching_hooks("OnBudgetThreshold", None, None, 85.0) == [t80]
    assert steptrace.matching_hooks("OnBudgetThreshold(80)", None, None, 85.0) == [t80]


def test_hooks_fire_only_under_matching_personas() -> None:
    fired: list[tuple[str | None, str | None]] = []
    steptrace.register_persona_hook(
        "research*", "PreStep", lambda c: fired.append((c.persona, c.step))
    )

    @steptrace.step("look")
    def look() -> None:
        return None

    @steptrace.persona("research-lead")
    def research_lead() -> None:
        look()

    @steptrace.persona("writer")
    def writer() -> None:
        look()

    writer()
    research_lead()
    look()
    assert fired == [("research-lead", "look")]


# -- PreStep / PostStep ---------------------------------------------------------------------


def test_pre_and_post_step_fire_around_every_step_with_context() -> None:
    log: list[str] = []
    contexts: list[HookContext] = []

    def pre(ctx: HookContext) -> None:
        log.append(f"pre {ctx.step}")
        contexts.append(ctx)

    def post(ctx: HookContext) -> None:
        log.append(f"post {ctx.step} {ctx.status}")
        contexts.append(ctx)

    steptrace.register_persona_hook("*", "PreStep", pre)
    steptrace.register_persona_hook("*", HookEvent.POST_STEP, post)

    @steptrace.step("inner")
    def inner() -> None:
        log.append("body inner")
        steptrace.record_llm_usage("m", 3, 4, cost_usd=0.0)

    @steptrace.step("broken")
    def broken() -> None:
        raise RuntimeError("nope")

    @steptrace.persona("agent")
    def agent() -> None:
        inner()
        with pytest.raises(RuntimeError):
            broken()

    agent()
    assert log == [
        "pre inner",
        "body inner",
        "post inner completed",
        "pre broken",
        "post broken failed",
    ]
    pre_inner, post_inner, _, post_broken = contexts
    assert (pre_inner.event, pre_inner.persona, pre_inner.step) == (
        HookEvent.PRE_STEP,
        "agent",
        "inner",
    )
    assert pre_inner.usage.total_tokens == 0
    assert post_inner.event is HookEvent.POST_STEP
    assert (post_inner.usage.input_tokens, post_inner.usage.output_tokens) == (3, 4)
    assert post_inner.error is None
    assert post_inner.run_id == steptrace.current_run().id
    assert isinstance(post_broken.error, RuntimeError)
    assert post_broken.status == "failed"


# -- budget thresholds -----------------------------------------------------------------------


def test_threshold_hooks_fire_once_per_invocation_before_exhaustion() -> None:
    log: list[str] = []
    steptrace.register_step_hook(
        "*", "s", "OnBudgetThreshold(50)", lambda c: log.append(f"50% at {c.budget_pct}")
    )
    steptrace.register_persona_hook(
        "*", "OnBudgetThreshold(100)", lambda c: log.append(f"100% at {c.budget_pct}")
    )

    @steptrace.step("s", budget={"max_tokens": 100})
    def s() -> None:
        for n in (30, 30, 10, 50):
            log.append(f"record {n}")
            try:
                steptrace.record_llm_usage("m", n, 0, cost_usd=0.0)
            except BudgetExhausted:
                log.append("exhausted")
                raise

    for _ in range(2):
        with pytest.raises(BudgetExhausted):
            s()
    once = [
        "record 30",
        "record 30",
        "50% at 60.0",
        "record 10",
        "record 50",
        "100% at 120.0",
        "exhausted",
    ]
    assert log == once + once


def test_threshold_context_names_the_scope() -> None:
    seen: list[HookContext] = []
    steptrace.register_persona_hook("lead", "OnBudgetThreshold(75)", seen.append)

    @steptrace.step("s")
    def s() -> None:
        steptrace.record_llm_usage("m", 0, 0, cost_usd=0.8)

    @steptrace.persona("lead", budget={"max_usd": 1.0})
    def lead() -> None:
        s()

    lead()
    (ctx,) = seen
    assert (ctx.scope, ctx.persona, ctx.step, ctx.threshold_pct) == ("persona", "lead", None, 75.0)
    assert ctx.budget_pct == pytest.approx(80.0)
    assert ctx.usage.cost_usd == pytest.approx(0.8)


# -- async handlers ----------------------------------------------------------------------------


def test_async_handlers_are_awaited_in_async_steps() -> None:
    log: list[str] = []

    async def pre(ctx: HookContext) -> None:
        await asyncio.sleep(0)
        log.append(f"pre {ctx.step}")

    async def threshold(ctx: HookContext) -> None:
        await asyncio.sleep(0)
        log.append(f"threshold {ctx.budget_pct}")

    steptrace.register_persona_hook("*", "PreStep", pre)
    steptrace.register_persona_hook("*", "OnBudgetThreshold(90)", threshold)

    @steptrace.step("a", budget={"max_tokens": 10})
    async def a() -> None:
        log.append("body")
        await steptrace.arecord_llm_usage("m", 9, 0, cost_usd=0.0)
        log.append("after record")

    asyncio.run(a())
    assert log == ["pre a", "body", "threshold 90.0", "after record"]


def test_async_handlers_run_from_sync_code() -> None:
    log: list[str] = []

    async def post(ctx: HookContext) -> None:
        await asyncio.sleep(0)
        log.append(f"post {ctx.step}")

    steptrace.register_persona_hook("*", "PostStep", post)

    @steptrace.step("sync_step")
    def sync_step() -> str:
        return "ok"

    assert sync_step() == "ok"  # no loop running

    async def main() -> str:
        return sync_step()  # a sync step called from a running loop

    assert asyncio.run(main()) == "ok"
    assert log == ["post sync_step", "post sync_step"]


# -- failing handlers -------------------------------------------------------------------------


def _failing(ctx: HookContext) -> None:
    raise RuntimeError(f"hook broke in {ctx.step}")


def test_failing_hook_is_logged_and_recorded_when_lenient(caplog: pytest.LogCaptureFixture) -> None:
    steptrace.configure(strict=False)
    steptrace.register_persona_hook("*", "PreStep", _failing)
    steptrace.register_persona_hook("*", "PostStep", _failing)

    @steptrace.step("s")
    def s() -> str:
        return "still ran"

    with caplog.at_level(logging.ERROR, logger="steptrace"):
        assert s() == "still ran"
    records = [r for r in caplog.records if r.name == "steptrace"]
    assert len(records) == 2
    assert all("hook broke in s" in r.getMessage() for r in records)
    (row,) = steptrace.current_run().completed_steps
    assert row.status == "completed"
    (step_span,) = [sp for sp in steptrace.current_run().spans if sp.name == "s"]
    errors = step_span.metadata["steptrace.observer_errors"]
    assert len(errors) == 2
    assert all("RuntimeError: hook broke in s" in e for e in errors)


def test_failing_hook_raises_in_strict_mode() -> None:
    steptrace.register_persona_hook("*", "PostStep", _failing)
    ran: list[bool] = []

    @steptrace.step("s")
    def s() -> None:
        ran.append(True)

    with pytest.raises(RuntimeError, match="hook broke in s"):
        s()
    assert ran == [True]


# -- registration management ---------------------------------------------------------------------


def test_on_decorator_registers_and_returns_the_handler() -> None:
    seen: list[str | None] = []

    def handler(ctx: HookContext) -> None:
        seen.append(ctx.step)

    decorated = steptrace.on("PreStep", persona="*", step="wanted")(handler)
    assert decorated is handler

    @steptrace.step("wanted")
    def wanted() -> None:
        return None

    @steptrace.step("other")
    def other() -> None:
        return None

    wanted()
    other()
    assert seen == ["wanted"]


def test_remove_hook_and_clear_hooks() -> None:
    seen: list[str] = []
    first = steptrace.register_persona_hook("*", "PreStep", lambda c: seen.append("first"))
    steptrace.register_persona_hook("*", "PreStep", lambda c: seen.append("second"))
    steptrace.register_persona_hook("*", "PostStep", lambda c: seen.append("post"))

    @steptrace.step("s")
    def s() -> None:
        return None

    s()
    assert seen == ["first", "second", "post"]
    steptrace.remove_hook(first)
    steptrace.remove_hook(first)  # unknown registrations are ignored
    seen.clear()
    s()
    assert seen == ["second", "post"]
    steptrace.clear_hooks()
    seen.clear()
    s()
    assert seen == []
    assert steptrace.matching_hooks("PreStep", None, "s", None) == []
