"""Accounting: own vs subtree usage, nested budgets, pre-flight checks, pricing,
exact money, input validation, and a property test of exhaustion."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steptrace
from steptrace import BudgetExhausted, PricingUnknown
from steptrace.testing import FakePrices

# -- own vs subtree usage -------------------------------------------------------------


def test_ledger_rows_are_own_usage_and_parent_budget_counts_children() -> None:
    @steptrace.step("child")
    def child() -> None:
        steptrace.record_llm_usage("m", 30, 10, cost_usd=0.25)

    @steptrace.step("parent", budget={"max_tokens": 100})
    def parent() -> None:
        steptrace.record_llm_usage("m", 5, 5, cost_usd=0.5)
        child()
        active = steptrace.current_step()
        assert active is not None
        assert (active.input_tokens, active.output_tokens, active.llm_calls) == (5, 5, 1)
        child()  # 10 + 40 + 40 = 90 tokens: still within 100
        steptrace.record_llm_usage("m", 6, 5, cost_usd=0.0)  # 101 > 100

    with pytest.raises(BudgetExhausted) as info:
        parent()
    assert info.value.step == "parent"
    assert info.value.consumed_tokens == 101.0
    rows = [
        (s.name, s.input_tokens, s.output_tokens, s.cost_usd, s.llm_calls, s.status)
        for s in steptrace.current_run().completed_steps
    ]
    assert rows == [
        ("child", 30, 10, 0.25, 1, "completed"),
        ("child", 30, 10, 0.25, 1, "completed"),
        ("parent", 11, 10, 0.5, 2, "failed"),
    ]
    usage = steptrace.current_run().usage()
    assert (usage.input_tokens, usage.output_tokens, usage.llm_calls) == (71, 30, 4)
    assert usage.cost_usd == 1.0
    # The ledger sums to the run total: nothing is counted twice.
    assert sum(r[1] + r[2] for r in rows) == usage.total_tokens


def test_budget_pct_includes_nested_usage() -> None:
    pcts: list[float | None] = []

    @steptrace.step("child")
    def child() -> None:
        steptrace.record_llm_usage("m", 30, 10, cost_usd=0.0)

    @steptrace.step("parent", budget={"max_tokens": 200, "max_usd": 1.0})
    def parent() -> None:
        steptrace.record_llm_usage("m", 5, 5, cost_usd=0.75)
        child()
        active = steptrace.current_step()
        assert active is not None
        pcts.append(active.budget_pct)

    parent()
    # tokens 50/200 = 25%, USD 0.75/1.0 = 75%: the larger wins.
    assert pcts == [75.0]


# -- persona and run budgets -------------------------------------------------------------


def test_persona_budget_exhausts_with_persona_reason() -> None:
    @steptrace.step("work")
    def work() -> None:
        steptrace.record_llm_usage("m", 40, 0, cost_usd=0.0)

    @steptrace.persona("researcher", budget={"max_tokens": 100})
    def researcher() -> None:
        for _ in range(3):
            work()

    with pytest.raises(BudgetExhausted) as info:
        researcher()
    err = info.value
    assert (err.step, err.limit_value, err.consumed_tokens) == ("work", 100, 120)
    data = err.to_dict()
    assert data["reason"] == "persona_budget_exhausted"
    assert (data["scope"], data["scope_name"]) == ("persona", "researcher")
    assert err.message == "persona `researcher` exceeded max_tokens budget (120 > 100)"
    statuses = [s.status for s in steptrace.current_run().completed_steps]
    assert statuses == ["completed", "completed", "failed"]


def test_run_budget_exhausts_with_run_reason() -> None:
    with steptrace.run("nightly", budget={"max_usd": 0.5}) as r:
        steptrace.record_llm_usage("m", 1, 1, cost_usd=0.3)
        with pytest.raises(BudgetExhausted) as info:
            steptrace.record_llm_usage("m", 1, 1, cost_usd=0.3)
    err = info.value
    assert (err.reason, err.scope_name, err.limit) == ("run_budget_exhausted", "nightly", "max_usd")
    assert (err.step, err.function) == ("", "")
    assert err.consumed_cost_usd == pytest.approx(0.6)
    assert r.usage().llm_calls == 2


def test_innermost_exceeded_scope_raises_first() -> None:
    @steptrace.step("inner", budget={"max_tokens": 100})
    def inner(n: int) -> None:
        steptrace.record_llm_usage("m", n, 0, cost_usd=0.0)

    @steptrace.persona("p", budget={"max_tokens": 50})
    def p(n: int) -> None:
        inner(n)

    reasons: list[str] = []
    with steptrace.run("r", budget={"max_tokens": 10}):
        for n in (200, 60, 20):
            with pytest.raises(BudgetExhausted) as info:
                p(n)
            reasons.append(info.value.reason)
    # All three scopes are over at 200; the step (innermost) wins. At 60 the step
    # is fine and the persona is over; at 20 only the run is over.
    assert reasons == ["step_budget_exhausted", "persona_budget_exhausted", "run_budget_exhausted"]


# -- pre-flight ---------------------------------------------------------------------------


def test_check_budget_refuses_when_a_scope_is_already_exhausted() -> None:
    @steptrace.step("s", budget={"max_tokens": 100})
    def s() -> BudgetExhausted:
        steptrace.record_llm_usage("m", 100, 0, cost_usd=0.0)  # at the limit, not over
        steptrace.check_budget("m", 0, 0)
        with pytest.raises(BudgetExhausted) as info:
            steptrace.check_budget("m", 1, 0)
        return info.value

    err = s()
    assert err.preflight is True
    assert err.to_dict()["preflight"] is True
    assert err.projected == 1
    assert err.reason == "step_budget_exhausted"


def test_check_budget_worst_case_tokens() -> None:
    @steptrace.step("s", budget={"max_tokens": 100})
    def s() -> BudgetExhausted:
        steptrace.record_llm_usage("m", 20, 10, cost_usd=0.0)
        steptrace.check_budget("m", 50, 20)  # 30 + 70 = 100: fits exactly
        with pytest.raises(BudgetExhausted) as info:
            steptrace.check_budget("m", 50, 21)
        active = steptrace.current_step()
        assert active is not None
        assert active.llm_calls == 1
        return info.value

    err = s()
    assert (err.limit, err.limit_value, err.consumed_tokens) == ("max_tokens", 100, 30)
    assert err.projected == err.to_dict()["projected"] == 71
    assert "30 used + 71 worst case > 100" in err.message


def test_check_budget_worst_case_usd_through_price_source() -> None:
    price = FakePrices(1000.0, unknown=("unknown",))

    @steptrace.persona("p", budget={"max_usd": 0.1})
    def p() -> BudgetExhausted:
        steptrace.record_llm_usage("m", 0, 0, cost_usd=0.02)
        steptrace.check_budget("m", 50, 30, price=price)  # 0.02 + 0.08 = 0.10
        with pytest.raises(BudgetExhausted) as info:
            steptrace.check_budget("m", 50, 31, price=price)
        return info.value

    err = p()
    assert [call[:3] for call in price.calls] == [("m", 50, 30), ("m", 50, 31)]
    assert (err.limit, err.scope, err.reason) == ("max_usd", "persona", "persona_budget_exhausted")
    assert err.projected == pytest.approx(0.081)
    assert err.limit_value == pytest.approx(0.1)


def test_check_budget_uses_configured_price_source_and_needs_a_price() -> None:
    @steptrace.step("s", budget={"max_usd": 1.0})
    def s(model: str) -> None:
        steptrace.check_budget(model, 10, 10)

    with pytest.raises(PricingUnknown) as info:
        s("m")
    assert (info.value.model, info.value.scope, info.value.scope_name) == ("m", "step", "s")
    steptrace.configure(price_source=FakePrices(1000.0, unknown=("unknown",)))
    s("m")
    with pytest.raises(PricingUnknown):
        s("unknown-model")
    # Without a USD budget in force, no price is needed.
    steptrace.configure(price_source=None)
    steptrace.check_budget("unknown-model", 10, 10)


# -- pricing when cost_usd is None -------------------------------------------------------


def test_cost_none_without_price_source_is_zero_and_unpriced() -> None:
    steptrace.enable_tracing()

    @steptrace.step("s", budget={"max_tokens": 1000})
    def s() -> None:
        steptrace.record_llm_usage("m", 10, 5)

    s()
    (record,) = steptrace.current_run().completed_steps
    assert (record.input_tokens, record.output_tokens, record.cost_usd) == (10, 5, 0.0)
    (entry,) = steptrace.peek_trace()
    assert entry.cost_usd is None


def test_cost_none_asks_the_configured_price_source() -> None:
    price = FakePrices(1000.0, unknown=("unknown",))
    assert isinstance(price, steptrace.PriceSource)
    steptrace.configure(price_source=price)

    @steptrace.step("s", budget={"max_usd": 0.05})
    def s() -> None:
        steptrace.record_llm_usage("m", 10, 5)
        steptrace.record_llm_usage("m", 20, 16)

    with pytest.raises(BudgetExhausted) as info:
        s()
    assert [call[:3] for call in price.calls] == [("m", 10, 5), ("m", 20, 16)]
    assert info.value.consumed_cost_usd == pytest.approx(0.051)
    assert steptrace.current_run().completed_steps[0].cost_usd == pytest.approx(0.051)


def test_pricing_unknown_under_usd_budget_still_records_tokens() -> None:
    @steptrace.step("s", budget={"max_usd": 1.0})
    def s() -> tuple[int, int, int]:
        with pytest.raises(PricingUnknown, match="no price known for model 'mystery'"):
            steptrace.record_llm_usage("mystery", 7, 3)
        active = steptrace.current_step()
        assert active is not None
        return active.input_tokens, active.output_tokens, active.llm_calls

    assert s() == (7, 3, 1)
    assert steptrace.current_run().usage().total_tokens == 10


def test_pricing_unknown_for_enclosing_run_budget() -> None:
    steptrace.configure(price_source=FakePrices(1000.0, unknown=("unknown",)))
    with steptrace.run("r", budget={"max_usd": 5.0}), pytest.raises(PricingUnknown) as info:
        steptrace.record_llm_usage("unknown-x", 1, 1)
    assert (info.value.scope, info.value.scope_name) == ("run", "r")


# -- money does not drift -------------------------------------------------------------------


def test_ten_thousand_tenths_of_a_cent_do_not_drift() -> None:
    @steptrace.step("s", budget={"max_usd": 1.0})
    def s() -> float:
        for _ in range(10_000):
            steptrace.record_llm_usage("m", 0, 0, cost_usd=0.0001)
        active = steptrace.current_step()
        assert active is not None
        total = active.cost_usd
        with pytest.raises(BudgetExhausted) as info:
            steptrace.record_llm_usage("m", 0, 0, cost_usd=0.01)
        assert info.value.limit == "max_usd"
        return total

    assert s() == 1.0
    assert steptrace.current_run().completed_steps[0].cost_usd == 1.01


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "argument"),
    [
        (("m", -1, 0), {}, ValueError, "input_tokens"),
        (("m", 0, -5), {}, ValueError, "output_tokens"),
        (("m", 1.5, 0), {}, TypeError, "input_tokens"),
        (("m", 0, "3"), {}, TypeError, "output_tokens"),
        (("m", True, 0), {}, TypeError, "input_tokens"),
        (("m", 1, 1), {"cost_usd": math.nan}, ValueError, "cost_usd"),
        (("m", 1, 1), {"cost_usd": math.inf}, ValueError, "cost_usd"),
        (("m", 1, 1), {"cost_usd": -0.01}, ValueError, "cost_usd"),
        (("m", 1, 1), {"cache_tokens": -1}, ValueError, "cache_tokens"),
        ((None, 1, 1), {}, TypeError, "model"),
    ],
)
def test_bad_usage_is_rejected_naming_the_argument(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], argument: str
) -> None:
    @steptrace.step("s")
    def s() -> None:
        steptrace.record_llm_usage(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.raises(error, match=argument):
        s()
    # Nothing was recorded.
    assert steptrace.current_run().completed_steps[0].llm_calls == 0
    assert steptrace.current_run().usage().llm_calls == 0


def test_check_budget_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="estimated_input_tokens"):
        steptrace.check_budget("m", -1, 0)
    with pytest.raises(TypeError, match="max_output_tokens"):
        steptrace.check_budget("m", 1, 2.0)  # type: ignore[arg-type]


# -- the active step's model ------------------------------------------------------------------


def test_active_step_model_is_the_innermost_steps_model() -> None:
    seen: list[tuple[str | None, str | None]] = []

    def look() -> None:
        active = steptrace.current_step()
        model = None if active is None else active.model
        seen.append((steptrace.active_step_model_default(), model))

    @steptrace.step("inner")
    def inner() -> None:
        look()

    @steptrace.step("outer", model="gpt-4o-mini")
    def outer() -> None:
        look()
        inner()
        steptrace.record_llm_usage("claude-haiku-4-5", 1, 1, cost_usd=0.0)
        active = steptrace.current_step()
        assert active is not None
        assert active.last_model == "claude-haiku-4-5"
        assert active.model == "gpt-4o-mini"

    look()
    outer()
    assert seen == [(None, None), ("gpt-4o-mini", "gpt-4o-mini"), (None, None)]
    models = {s.name: s.model for s in steptrace.current_run().completed_steps}
    # The ledger shows the model actually used, else the declared default.
    assert models == {"inner": None, "outer": "claude-haiku-4-5"}


# -- property: totals and the exact point of exhaustion -----------------------------------------

# (input tokens, output tokens, cost in whole cents)
usages = st.lists(
    st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(0, 40)), max_size=25
)


# The autouse fixture resets once per test; each example opens its own run.
_settings = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_settings
@given(
    records=usages,
    max_tokens=st.none() | st.integers(1, 800),
    max_cents=st.none() | st.integers(0, 500),
    scope=st.sampled_from(["step", "persona", "run"]),
)
def test_totals_are_sums_and_exhaustion_fires_at_the_first_crossing(
    records: list[tuple[int, int, int]],
    max_tokens: int | None,
    max_cents: int | None,
    scope: str,
) -> None:
    expected_at: int | None = None
    expected_limit = ""
    tokens = cents = 0
    for i, (inp, out, c) in enumerate(records):
        tokens += inp + out
        cents += c
        if max_tokens is not None and tokens > max_tokens:
            expected_at, expected_limit = i, "max_tokens"
            break
        if max_cents is not None and cents > max_cents:
            expected_at, expected_limit = i, "max_usd"
            break
    applied = records if expected_at is None else records[: expected_at + 1]

    budget = {"max_tokens": max_tokens, "max_usd": None if max_cents is None else max_cents / 100}
    fired: list[tuple[int, BudgetExhausted]] = []

    @steptrace.step("prop", budget=budget if scope == "step" else None)
    def prop() -> None:
        for i, (inp, out, c) in enumerate(records):
            try:
                steptrace.record_llm_usage("m", inp, out, cost_usd=c / 100)
            except BudgetExhausted as err:
                fired.append((i, err))
                raise

    @steptrace.persona("who", budget=budget if scope == "persona" else None)
    def who() -> None:
        prop()

    with steptrace.run("prop", budget=budget if scope == "run" else None) as r:
        if expected_at is None:
            who()
        else:
            with pytest.raises(BudgetExhausted):
                who()

    (row,) = r.completed_steps
    assert row.input_tokens == sum(x[0] for x in applied)
    assert row.output_tokens == sum(x[1] for x in applied)
    assert row.cost_usd == sum(x[2] for x in applied) / 100
    assert row.llm_calls == len(applied)
    usage = r.usage()
    assert (usage.total_tokens, usage.cost_usd) == (row.total_tokens, row.cost_usd)
    if expected_at is None:
        assert fired == []
        assert row.status == "completed"
    else:
        assert [i for i, _ in fired] == [expected_at]
        err = fired[0][1]
        assert (err.limit, err.scope) == (expected_limit, scope)
        assert err.reason == f"{scope}_budget_exhausted"
        assert err.consumed_tokens == row.total_tokens
        assert err.consumed_cost_usd == row.cost_usd
        assert row.status == "failed"


def test_cache_reads_and_writes_reach_the_price_source() -> None:
    prices = FakePrices()
    steptrace.configure(price_source=prices)
    steptrace.record_llm_usage("m", 100, 5, cache_tokens=40, cache_write_tokens=30)
    assert [(call.cache_read_tokens, call.cache_write_tokens) for call in prices.calls] == [
        (40, 30)
    ]
    with pytest.raises(ValueError, match="cache_write_tokens must be between 0 and"):
        steptrace.record_llm_usage("m", 1, 1, cache_write_tokens=-1)
