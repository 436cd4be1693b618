"""Step hooks that steer the step: ``Deny`` and ``RewriteArgs`` from ``PreStep``,
``RewriteOutput`` from ``PostStep``, chained in registration order, recorded on
the step's span; misplaced decisions reported like failing hooks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import steptrace
from steptrace import Deny, HookContext, RewriteArgs, RewriteOutput, StepDenied
from steptrace._config import OBSERVER_ERRORS_KEY


@steptrace.step(name="add")
def add(a: int, b: int = 0) -> int:
    return a + b


@steptrace.step(name="aadd")
async def aadd(a: int, b: int = 0) -> int:
    return a + b


def _row(run: steptrace.Run, name: str) -> Any:
    return next(s for s in run.spans if s.name == name)


def test_a_prestep_deny_stops_the_body_and_raises_with_the_reason() -> None:
    ran: list[int] = []

    @steptrace.step(name="spend")
    def spend(n: int) -> None:
        ran.append(n)

    steptrace.register_step_hook("*", "spend", "PreStep", lambda ctx: Deny("over the daily cap"))
    with steptrace.run() as run, pytest.raises(StepDenied) as info:
        spend(5)
    assert ran == []
    assert (info.value.step, info.value.reason) == ("spend", "over the daily cap")
    assert "over the daily cap" in str(info.value)
    (row,) = run.completed_steps
    assert row.status == "failed"
    assert "over the daily cap" in (row.error or "")
    assert "over the daily cap" in _row(run, "spend").metadata["hook_denied"]


def test_prestep_rewrites_chain_in_order_and_each_sees_the_previous() -> None:
    seen: list[Any] = []

    def double_a(ctx: HookContext) -> RewriteArgs:
        seen.append(ctx.payload)
        args, kwargs = ctx.payload["args"], ctx.payload["kwargs"]
        return RewriteArgs((args[0] * 2, *args[1:]), kwargs)

    def set_b(ctx: HookContext) -> RewriteArgs:
        seen.append(ctx.payload)
        return RewriteArgs(ctx.payload["args"], {"b": 100})

    steptrace.register_step_hook("*", "add", "PreStep", double_a)
    steptrace.register_step_hook("*", "add", "PreStep", set_b)
    with steptrace.run() as run:
        assert add(3, b=1) == 106
    assert seen == [{"args": (3,), "kwargs": {"b": 1}}, {"args": (6,), "kwargs": {"b": 1}}]
    assert "set_b" in _row(run, "add").metadata["hook_rewrote_args"]


def test_a_poststep_rewrite_is_what_the_call_returns_and_is_recorded() -> None:
    outputs: list[Any] = []

    def redact(ctx: HookContext) -> RewriteOutput:
        outputs.append(ctx.payload)
        return RewriteOutput(-1)

    steptrace.register_step_hook("*", "add", "PostStep", redact)
    with steptrace.run() as run:
        assert add(2, 3) == -1
    assert outputs == [{"output": 5}]
    assert "redact" in _row(run, "add").metadata["hook_rewrote_output"]


def test_async_steps_honour_the_same_decisions() -> None:
    steptrace.register_step_hook("*", "aadd", "PreStep", lambda ctx: RewriteArgs((10, 5)))

    async def post(ctx: HookContext) -> RewriteOutput:
        return RewriteOutput(ctx.payload["output"] * 10)

    steptrace.register_step_hook("*", "aadd", "PostStep", post)
    assert asyncio.run(aadd(1)) == 150
    steptrace.clear_hooks()
    steptrace.register_step_hook("*", "aadd", "PreStep", lambda ctx: Deny("no"))
    with pytest.raises(StepDenied, match="no"):
        asyncio.run(aadd(1))


def test_other_return_values_change_nothing_and_no_metadata_is_written() -> None:
    steptrace.register_persona_hook("*", "PreStep", lambda ctx: True)
    steptrace.register_persona_hook("*", "PostStep", lambda ctx: "ignored")
    with steptrace.run() as run:
        assert add(1, 2) == 3
    metadata = _row(run, "add").metadata
    assert not {"hook_denied", "hook_rewrote_args", "hook_rewrote_output"} & set(metadata)


def test_a_decision_from_the_wrong_event_is_reported_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    steptrace.register_step_hook("*", "add", "PostStep", lambda ctx: Deny("too late"))
    with pytest.raises(TypeError, match="Deny is for PreStep hooks"):
        add(1)  # strict mode raises what lenient mode logs
    steptrace.configure(strict=False)
    with steptrace.run() as run:
        assert add(1, 2) == 3
    assert "Deny is for PreStep hooks" in caplog.text
    (error,) = _row(run, "add").metadata[OBSERVER_ERRORS_KEY]
    assert "Deny is for PreStep hooks" in error


def test_a_generator_steps_arguments_and_output_cannot_be_rewritten() -> None:
    @steptrace.step(name="gen")
    def gen(n: int) -> Iterator[int]:
        yield from range(n)

    @steptrace.step(name="agen")
    async def agen(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    steptrace.register_persona_hook("*", "PreStep", lambda ctx: RewriteArgs((9,)))
    with pytest.raises(TypeError, match="cannot rewrite a generator step's arguments"):
        list(gen(2))
    steptrace.clear_hooks()
    steptrace.register_persona_hook("*", "PostStep", lambda ctx: RewriteOutput(0))
    with pytest.raises(TypeError, match="completed plain or async step only"):
        list(gen(2))

    async def consume() -> list[int]:
        return [i async for i in agen(2)]

    with pytest.raises(TypeError, match="completed plain or async step only"):
        asyncio.run(consume())
    # A denial works for every kind of step.
    steptrace.clear_hooks()
    steptrace.register_persona_hook("*", "PreStep", lambda ctx: Deny("stop"))
    with pytest.raises(StepDenied):
        list(gen(2))
