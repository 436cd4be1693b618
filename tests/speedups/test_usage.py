"""The compiled ``record_llm_usage`` (``steptrace._speedups.usage``): it is what
the public name calls when built, it rounds picodollars as Python does, names
the innermost exhausted scope, raises the reference's messages, leaks nothing,
and the paths that settle holds (``Hold.settle``, ``check_budget``,
``arecord_llm_usage``) still work through it.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import inspect
import os
import subprocess
import sys
import tracemalloc
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import steptrace
from steptrace import _accounting, _context

from ._usage_world import (
    COMPILED,
    REFERENCE,
    FlatPrices,
    compiled_module,
    implementation,
    recorder_config,
    require_compiled,
)

PICO = 10**12


@pytest.fixture(autouse=True)
def built() -> None:
    require_compiled()


def test_the_public_name_is_the_compiled_one() -> None:
    recorder: Any = steptrace.record_llm_usage
    assert type(recorder) is compiled_module().Recorder
    assert recorder.reference is REFERENCE
    assert recorder is _accounting.record_llm_usage
    # It reads as the reference does: name, docstring, signature.
    assert steptrace.record_llm_usage.__name__ == "record_llm_usage"
    assert steptrace.record_llm_usage.__doc__ == REFERENCE.__doc__
    assert inspect.signature(steptrace.record_llm_usage) == inspect.signature(REFERENCE)


def test_a_changed_class_layout_is_refused() -> None:
    """The compiled path reads slots at offsets found once: a class whose
    fields are no longer plain slots is refused when the recorder is made
    (``_accounting`` then keeps the reference, with a warning)."""

    class Unslotted:
        def __init__(self) -> None:
            self.input_tokens = 0

    with pytest.raises(TypeError, match=r"Unslotted\.input_tokens is not a plain slot"):
        compiled_module().Recorder(REFERENCE, {**recorder_config(), "Ledger": Unslotted})


def test_pure_python_switch_keeps_the_reference() -> None:
    code = (
        "import steptrace, steptrace._accounting as a; "
        "print(steptrace.record_llm_usage is a._reference_record_llm_usage)"
    )
    env = {**os.environ, "STEPTRACE_PURE_PYTHON": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "True"


def _frame() -> _context.Frame:
    frame = _context.get_frame()
    assert frame is not None
    return frame


def _nested_exhaustion(record: Any) -> tuple[list[Any], list[Any]]:
    """Usage that passes, in turn, the inner step's, the persona's and the
    run's limits: the errors raised, and the ledgers after."""
    steptrace.reset()
    errors: list[Any] = []
    ledgers: list[Any] = []

    @steptrace.step(name="inner", budget={"max_tokens": 100})
    def inner() -> None:
        for input_tokens, output_tokens, cost in [(40, 50, 0.1), (5, 6, 0.1), (1, 1, 0.9)]:
            try:
                record("m", input_tokens, output_tokens, cost_usd=cost)
                errors.append(None)
            except steptrace.BudgetExhausted as exc:
                errors.append(exc.to_dict() | {"scope": exc.scope, "scope_name": exc.scope_name})
        ledgers.extend(
            (led.kind, led.input_tokens, led.output_tokens, led.cost_pico, led.llm_calls)
            for led in _frame().accounted
        )

    @steptrace.step(name="outer")
    def outer() -> None:
        inner()

    @steptrace.persona(name="agent", budget={"max_usd": 1.0})
    def agent() -> None:
        outer()

    with steptrace.run("r", budget={"max_tokens": 102}), implementation(record):
        agent()
    return errors, ledgers


def test_exhaustion_names_the_innermost_scope_over_its_limit() -> None:
    errors, ledgers = _nested_exhaustion(COMPILED)
    assert (errors, ledgers) == _nested_exhaustion(REFERENCE)
    assert errors[0] is None
    # 101 tokens: over the step's 100 but within the run's 102.
    assert errors[1]["scope"] == "step"
    assert errors[1]["step"] == "inner"
    assert errors[1]["message"] == "step `inner` exceeded max_tokens budget (101 > 100)"
    # 103 tokens and $1.10: every scope is over; the innermost (the step) is named.
    assert errors[2]["scope"] == "step"
    assert errors[2]["limit"] == "max_tokens"
    assert ledgers == [
        ("step", 46, 57, 1_100_000_000_000, 3),
        ("persona", 46, 57, 1_100_000_000_000, 3),
        ("run", 46, 57, 1_100_000_000_000, 3),
    ]


def test_exhaustion_of_an_outer_scope_names_it() -> None:
    def once(record: Any) -> Any:
        steptrace.reset()
        with steptrace.run("r", budget={"max_usd": 0.25}), implementation(record):

            @steptrace.step(name="s", budget={"max_tokens": 1000})
            def s() -> Any:
                try:
                    record("m", 1, 1, cost_usd=0.5)
                except steptrace.BudgetExhausted as exc:
                    return exc.to_dict() | {"scope": exc.scope, "scope_name": exc.scope_name}
                return None

            return s()

    error = once(COMPILED)
    assert error == once(REFERENCE)
    assert (error["scope"], error["scope_name"], error["limit"]) == ("run", "r", "max_usd")
    assert error["limit_value"] == 0.25
    assert error["step"] == "s"


def test_totals_past_64_bits_stay_exact() -> None:
    """Ledgers hold Python ints: totals far past any machine word add and
    compare exactly, as in the reference."""

    def once(record: Any) -> tuple[Any, ...]:
        steptrace.reset()
        with steptrace.run("big", budget={"max_tokens": 2**100}) as run:
            ledger = run.ledger
            ledger.input_tokens = 2**100 - 2**41
            ledger.cost_pico = 2**90
            record("m", 2**40 - 1, 0, cost_usd=1e6)
            with pytest.raises(steptrace.BudgetExhausted) as error:
                record("m", 2**40 - 1, 2**40 - 1, cost_usd=0.5)
        return (
            ledger.input_tokens,
            ledger.output_tokens,
            ledger.cost_pico,
            error.value.to_dict(),
        )

    compiled = once(COMPILED)
    assert compiled == once(REFERENCE)
    assert compiled[0] == 2**100 - 2**41 + 2 * (2**40 - 1)
    assert compiled[2] == 2**90 + 10**18 + 5 * 10**11


def _pico(record: Any, cost: float) -> int:
    with steptrace.run("p") as run:
        record("m", 0, 0, cost_usd=cost)
    return run.ledger.cost_pico


# Products that land exactly half-way between two integers round to even.
HALVES = [(2 * k + 1) / 2 / 1e12 for k in (0, 1, 2, 3, 10, 2**20, 2**30)]


@given(st.floats(0, 1e6) | st.sampled_from(HALVES) | st.floats(0, 1e-9))
@example(0.5e-12)
@example(1.5e-12)
@example(2.5e-12)
@example(1e6)
@example(999_999.999_999_999_9)
@example(4503.599627370497)  # products near 2**52, where floats stop having halves
def test_pico_is_pythons_round(cost: float) -> None:
    usage = compiled_module()
    expected = round(cost * PICO)
    assert usage.pico(cost) == expected
    assert _pico(COMPILED, cost) == expected == _pico(REFERENCE, cost)


def test_exact_halves_round_to_even() -> None:
    usage = compiled_module()
    halves = [c for c in HALVES if (c * PICO) % 1 == 0.5]
    assert len(halves) >= 4  # the list does hold products ending in .5
    for cost in halves:
        assert usage.pico(cost) == round(cost * PICO)
        assert usage.pico(cost) % 2 == 0


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("m", -1, 0), {}),
        (("m", 2**40, 0), {}),
        (("m", True, 0), {}),
        (("m", 1, "2"), {}),
        ((None, 1, 2), {}),
        (("m", 1, 2), {"cost_usd": -0.5}),
        (("m", 1, 2), {"cost_usd": float("nan")}),
        (("m", 1, 2), {"cost_usd": 2e6}),
        (("m", 1, 2), {"duration_ms": -3}),
        (("m", 1, 2), {"cache_tokens": 1.5}),
        (("m", 1, 2), {"cost_usd": None, "cache_write_tokens": -1}),
        (("m", 1, 2, 3), {}),
        (("m", 1), {}),
        (("m", 1, 2), {"bogus": 1}),
    ],
)
def test_an_invalid_argument_raises_the_reference_message(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with steptrace.run("bad"):
        with pytest.raises((TypeError, ValueError)) as compiled:
            COMPILED(*args, **kwargs)
        with pytest.raises((TypeError, ValueError)) as reference:
            REFERENCE(*args, **kwargs)
    assert type(compiled.value) is type(reference.value)
    assert str(compiled.value) == str(reference.value)


def test_no_reference_is_leaked() -> None:
    """Many calls, recorded (traced and trimmed by retention) and raising, leave
    every object they touched with the references it had, and allocate nothing
    that stays."""
    model = "leak-check-model"
    cost = 0.000_123
    watched: list[object] = []

    @steptrace.step(name="inner", budget={"max_usd": 1e-9})
    def inner(outer: contextvars.Context) -> list[int]:
        watched.extend([model, cost, outer, _frame(), run, run.lock])
        watched.extend(_frame().accounted)
        for _ in range(200):  # warm up: caches, the first error's traceback
            _two_calls(outer, model, cost)
        run.take_trace()  # the trace log refers to the model, cost and frame
        gc.collect()
        before = [sys.getrefcount(o) for o in watched]
        tracemalloc.start()
        start, _ = tracemalloc.get_traced_memory()
        for _ in range(10_000):
            _two_calls(outer, model, cost)
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert end - start < 64 * 1024  # the trace log holds 50 to 100 calls
        run.take_trace()
        gc.collect()
        after = [sys.getrefcount(o) for o in watched]
        return [a - b for a, b in zip(after, before, strict=True)]

    @steptrace.step(name="outer")
    def outer() -> list[int]:
        return inner(contextvars.copy_context())

    with steptrace.run("leaks", retain=50) as run:
        assert outer() == [0] * 8  # the six objects and the step's and run's ledgers
    assert run.ledger.llm_calls == 2 * 10_200
    assert run.dropped["llm_calls"] > 0


def _two_calls(outer: contextvars.Context, model: str, cost: float) -> None:
    outer.run(COMPILED, model, 3, 4, cost_usd=cost)  # recorded in the outer step
    try:
        COMPILED(model, 3, 4, cost_usd=cost)  # over the inner step's limit
    except steptrace.BudgetExhausted:
        pass


def test_no_reference_is_leaked_when_the_price_source_is_asked() -> None:
    """Calls priced by the price source, left unpriced by it, or failing in it
    (its error raised after the record) leak nothing either."""
    steptrace.configure(price_source=FlatPrices())
    models = ["m", "unknown", "boom"]

    def calls() -> None:
        for model in models:
            try:
                COMPILED(model, 3, 4)
            except (RuntimeError, steptrace.PricingUnknown):
                pass

    with steptrace.run("leaks", budget={"max_usd": 1e6}, retain=50) as run:
        for _ in range(200):
            calls()
        run.take_trace()
        gc.collect()
        before = [sys.getrefcount(o) for o in models]
        tracemalloc.start()
        start, _ = tracemalloc.get_traced_memory()
        for _ in range(5_000):
            calls()
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        run.take_trace()
        gc.collect()
        after = [sys.getrefcount(o) for o in models]
    assert end - start < 64 * 1024
    assert after == before
    assert (run.ledger.llm_calls, run.ledger.unpriced_calls) == (3 * 5_200, 2 * 5_200)


def test_holds_settle_through_the_compiled_name() -> None:
    """``Hold.settle``, ``check_budget`` then ``record_llm_usage``, and
    ``arecord_llm_usage`` go through the public (compiled) name, which hands
    calls that settle a hold to the reference."""
    with steptrace.run("holds", budget={"max_tokens": 1000}) as run:
        hold = steptrace.reserve("m", 100, 100)
        assert run.ledger.held_tokens == 200
        hold.settle(10, 20, cost_usd=0.01)
        assert (hold.held, run.ledger.held_tokens, run.ledger.llm_calls) == (False, 0, 1)

        steptrace.check_budget("m", 50, 50)
        assert run.ledger.held_tokens == 100
        steptrace.record_llm_usage("m", 5, 5, cost_usd=0.01)
        assert (run.ledger.held_tokens, run.ledger.llm_calls) == (0, 2)
        # The settled hold stays in the context; later calls take the compiled path.
        steptrace.record_llm_usage("m", 1, 1, cost_usd=0.01)

        async def main() -> None:
            steptrace.check_budget("m", 10, 10)
            await steptrace.arecord_llm_usage("m", 2, 2, cost_usd=0.01)
            await steptrace.arecord_llm_usage("m", 2, 2, cost_usd=0.01)

        asyncio.run(main())
        assert (run.ledger.held_tokens, run.ledger.llm_calls) == (0, 5)
        assert run.ledger.input_tokens == 10 + 5 + 1 + 2 + 2
