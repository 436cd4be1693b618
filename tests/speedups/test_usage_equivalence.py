"""The compiled ``record_llm_usage`` keeps the same record as the pure-Python
reference, whatever the calls: generated scripts of valid and invalid calls,
calls priced by the caller or the price source (known, unknown, failing),
unpriced calls, nested step/persona/run limits that run out, holds from
``check_budget``, shared budgets, threshold hooks, late usage and retention
are played once with each, on identical fresh runs, and everything recorded
must be equal. Threads mixing both implementations on one run lose nothing.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import steptrace

from ._usage_world import (
    COMPILED,
    REFERENCE,
    CheckBudget,
    Op,
    Record,
    ReleaseHold,
    Script,
    ThresholdHook,
    compiled_module,
    recorder_config,
    replay,
    require_compiled,
)

MAX = 2**40 - 1

counts = st.one_of(
    st.integers(0, 400),
    st.sampled_from([0, 1, MAX, MAX + 1, -1, 2**64]),
    st.sampled_from([True, 3.0, "7", None]),
)
valid_counts = st.integers(0, 400) | st.just(MAX)
costs = st.one_of(
    st.none(),
    st.floats(0, 0.01),
    st.floats(0, 1e6),
    st.sampled_from([0.0, -0.0, 1e6, 1e6 + 1, -1e-9, float("nan"), float("inf"), 5e-13, 2.5e-12]),
    st.integers(0, 3),
    st.sampled_from([True, "0.1"]),
)
models = st.sampled_from(["m", "", "unknown", "gpt"]) | st.sampled_from([None, 7, b"m"])


@st.composite
def records(draw: st.DrawFn) -> Record:
    if draw(st.integers(0, 3)):  # mostly calls the compiled path takes
        kwargs: dict[str, Any]
        if draw(st.integers(0, 4)):
            kwargs = {"cost_usd": draw(st.floats(0, 0.01) | st.sampled_from([0.0, 1e6]))}
        elif draw(st.booleans()):  # priced by the caller already: no price known
            kwargs = {"_priced": True}
            if draw(st.booleans()):
                kwargs["cost_usd"] = None
        else:  # priced by the price source (none, a flat one, or a broken one)
            kwargs = {}
            if draw(st.booleans()):
                kwargs["cost_usd"] = None
            if draw(st.booleans()):
                kwargs["cache_write_tokens"] = draw(valid_counts)
        if "cost_usd" in kwargs and kwargs["cost_usd"] is not None and draw(st.booleans()):
            kwargs["_priced"] = True
        if draw(st.booleans()):
            kwargs["duration_ms"] = draw(valid_counts)
        if draw(st.booleans()):
            kwargs["cache_tokens"] = draw(valid_counts)
        model = draw(st.sampled_from(["m", "", "gpt", "unknown", "boom"]))
        return Record((model, draw(valid_counts), draw(valid_counts)), kwargs)
    return draw(any_records())


@st.composite
def any_records(draw: st.DrawFn) -> Record:
    model = draw(models)
    input_tokens = draw(counts if draw(st.booleans()) else valid_counts)
    output_tokens = draw(valid_counts | counts)
    kwargs = {}
    if draw(st.booleans()):
        kwargs["cost_usd"] = draw(costs)
    for name in ("duration_ms", "cache_tokens", "cache_write_tokens"):
        if draw(st.integers(0, 3)) == 0:
            kwargs[name] = draw(valid_counts | counts | st.floats(0, 10))
    if draw(st.integers(0, 9)) == 0:
        kwargs["_priced"] = draw(st.booleans())
    if draw(st.integers(0, 9)) == 0:
        kwargs["_hold"] = None
    shape = draw(st.integers(0, 12))
    if shape == 0:  # all by keyword
        return Record(
            (),
            {
                "model": model,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                **kwargs,
            },
        )
    if shape == 1:  # a wrong signature: the reference's TypeError
        bad = draw(st.sampled_from(["extra", "unknown", "missing", "twice"]))
        if bad == "extra":
            return Record((model, input_tokens, output_tokens, 1), kwargs)
        if bad == "unknown":
            return Record((model, input_tokens, output_tokens), {**kwargs, "bogus": 1})
        if bad == "missing":
            return Record((model, input_tokens), kwargs)
        return Record((model, input_tokens, output_tokens), {**kwargs, "model": "m"})
    return Record((model, input_tokens, output_tokens), kwargs)


@st.composite
def ops(draw: st.DrawFn) -> Op:
    # A threshold hook sends every later call to the reference: keep it rare.
    kind = draw(st.integers(0, 29))
    if kind == 0:
        return ThresholdHook(draw(st.sampled_from([10, 50, 100])))
    if kind <= 3:
        model = draw(st.sampled_from(["m", "unknown"]))
        return CheckBudget(model, draw(st.integers(0, 300)), draw(st.integers(0, 300)))
    if kind == 4:
        return ReleaseHold()
    return draw(records())


budgets = st.none() | st.fixed_dictionaries(
    {},
    optional={"max_tokens": st.integers(1, 1500), "max_usd": st.floats(0, 0.003)},
)


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    return Script(
        run_budget=draw(budgets),
        persona_budget=draw(budgets),
        outer_budget=draw(budgets),
        inner_budget=draw(budgets),
        inner_model=draw(st.sampled_from([None, "declared"])),
        tracing=draw(st.booleans()),
        retain=draw(st.sampled_from([None, None, 1, 3])),
        shared=draw(
            st.none()
            | st.none()
            | st.none()
            | st.fixed_dictionaries({}, optional={"max_tokens": st.integers(1, 1500)})
        ),
        priced=draw(st.booleans()),
        outer=tuple(draw(st.lists(ops(), max_size=6))),
        inner=tuple(draw(st.lists(ops(), max_size=10))),
        late=tuple(draw(st.lists(records(), max_size=3))),
        after=tuple(draw(st.lists(records(), max_size=2))),
    )


@pytest.fixture(autouse=True)
def built() -> None:
    require_compiled()


@settings(max_examples=300)
@given(scripts())
def test_compiled_and_reference_keep_the_same_record(script: Script) -> None:
    compiled = replay(script, COMPILED)
    reference = replay(script, REFERENCE)
    assert compiled == reference


def test_the_scripts_reach_the_compiled_path() -> None:
    """The generated scripts are not all delegated: plain priced calls in a
    budgeted step are recorded by the compiled path, exhaustion included, and
    so are unpriced ones (``PricingUnknown`` under the step's USD limit) and
    those the price source prices or fails to."""
    script = Script(
        run_budget={"max_tokens": 100},
        persona_budget=None,
        outer_budget=None,
        inner_budget={"max_usd": 0.5},
        inner_model="declared",
        tracing=True,
        retain=None,
        shared=None,
        priced=True,
        outer=(Record(("m", 10, 20), {"cost_usd": 0.1}),),
        inner=(
            Record(("", 30, 40), {"cost_usd": 0.3}),
            Record(("m", 1, 1), {"cost_usd": 0.3}),
            Record(("m", 1, 1), {"cost_usd": None, "_priced": True}),
            Record(("", 2, 2), {"_priced": True}),
            Record(("boom", 2, 2), {}),
            Record(("", 2, 2), {"cache_write_tokens": 1}),
        ),
    )
    calls: list[object] = []

    def counting_reference(*args: object, **kwargs: object) -> None:
        calls.append(args)
        REFERENCE(*args, **kwargs)

    compiled = compiled_module().Recorder(counting_reference, recorder_config())
    assert replay(script, compiled) == replay(script, REFERENCE)
    assert calls == []  # nothing was delegated


@settings(max_examples=25)
@given(
    calls=st.lists(
        st.tuples(st.integers(0, 50), st.integers(0, 50), st.floats(0, 1e-3)),
        min_size=1,
        max_size=40,
    ),
    threads=st.integers(2, 6),
    limit=st.none() | st.integers(1, 3000),
)
def test_threads_mixing_both_lose_nothing(
    calls: list[tuple[int, int, float]], threads: int, limit: int | None
) -> None:
    """Threads recording into one step at once, half through the compiled path
    and half through the reference, each under the run's lock: the totals are
    exact, every call is in the trace log, and the calls that raised are those
    the limit says (none when it is never passed)."""
    budget = None if limit is None else {"max_tokens": limit}
    raised: list[str] = []
    with steptrace.run("threads") as run:

        @steptrace.step(name="shared", budget=budget)
        def shared() -> None:
            workers = [
                threading.Thread(target=steptrace.bind(_worker), args=(calls, i, raised))
                for i in range(threads)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()

        shared()
    usage = run.usage()
    assert usage.input_tokens == threads * sum(c[0] for c in calls)
    assert usage.output_tokens == threads * sum(c[1] for c in calls)
    assert usage.llm_calls == threads * len(calls)
    pico = threads * sum(round(c[2] * 10**12) for c in calls)
    assert run.ledger.cost_pico == pico
    (row,) = run.completed_steps
    assert (row.input_tokens, row.output_tokens, row.llm_calls) == (
        usage.input_tokens,
        usage.output_tokens,
        usage.llm_calls,
    )
    trace = sorted((r.input_tokens, r.output_tokens, r.cost_usd) for r in run.trace_records())
    assert trace == sorted(threads * calls)
    total = usage.input_tokens + usage.output_tokens
    assert bool(raised) == (limit is not None and total > limit)
    assert set(raised) <= {"step"}


def _worker(calls: list[tuple[int, int, float]], index: int, raised: list[str]) -> None:
    record = COMPILED if index % 2 else REFERENCE
    for input_tokens, output_tokens, cost in calls:
        try:
            record("m", input_tokens, output_tokens, cost_usd=cost)
        except steptrace.BudgetExhausted as exc:
            raised.append(exc.scope)
