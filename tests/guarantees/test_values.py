"""Every number is validated where it enters, with an error naming the value and
its source, and a refused value loses nothing already recorded (issue 10 case 6)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import steptrace
from steptrace import llm
from steptrace.budget import MAX_CALL_TOKENS
from steptrace.testing import ScriptedProvider


class Answering:
    """A price source that answers ``value`` for every call."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def cost_usd(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> Any:
        return self.value


@pytest.mark.parametrize("tokens", [2**63, 2**40, 10**13, -1])
def test_token_counts_out_of_range_are_refused_by_name(tokens: int) -> None:
    with pytest.raises(ValueError, match=r"input_tokens must be between 0 and 1,099,511,627,775"):
        steptrace.record_llm_usage("m", tokens, 1, cost_usd=0.0)
    assert steptrace.current_run().usage().llm_calls == 0


@pytest.mark.parametrize("cost", [1e300, math.inf, math.nan, -1.0, 2e6])
def test_costs_out_of_range_are_refused_by_name(cost: float) -> None:
    with pytest.raises(ValueError, match="cost_usd must be a number between 0 and 1,000,000"):
        steptrace.record_llm_usage("m", 1, 1, cost_usd=cost)


@pytest.mark.parametrize("max_usd", [1e308, 1e7, math.nan, -0.5])
def test_budgets_out_of_range_are_refused_by_name(max_usd: float) -> None:
    with pytest.raises(ValueError, match=r"max_usd must be a number between 0 and 9,000,000"):
        steptrace.Budget(max_usd=max_usd)


@pytest.mark.parametrize("answer", [-1.0, math.nan, math.inf, "0.5", True, 10**9, [0.1]])
def test_a_bad_price_answer_is_named_and_the_call_still_recorded(answer: Any) -> None:
    steptrace.configure(price_source=Answering(answer))

    @steptrace.step(budget={"max_usd": 1})
    def call() -> None:
        steptrace.record_llm_usage("gpt-x", 100, 10)

    with (
        steptrace.run("job") as run,
        pytest.raises(ValueError, match="price source Answering priced model 'gpt-x'"),
    ):
        call()
    assert run.usage().total_tokens == 110  # the paid call is in the ledger
    assert run.usage().cost_usd == 0.0
    assert run.llm_trace[0].cost_usd is None  # cost unknown, not $0
    assert run.ledger.cost_pico >= 0


def test_a_negative_price_cannot_credit_a_budget() -> None:
    steptrace.configure(price_source=Answering(-1.0))
    with (
        steptrace.run("job", budget={"max_usd": 1}) as run,
        pytest.raises(ValueError, match="priced model"),
    ):
        steptrace.check_budget("m", 10, 10)
    assert run.usage().cost_usd == 0.0


def test_a_bad_price_answer_in_llm_call_still_records_the_paid_call() -> None:
    steptrace.configure(price_source=Answering(math.nan))
    provider = ScriptedProvider(["hello there"])
    with steptrace.run("job") as run, pytest.raises(ValueError, match="priced model"):
        llm.llm_call("hi", model="m", provider=provider)
    assert run.usage().llm_calls == 1
    assert len(provider.requests) == 1


_NEAR_BOUNDS = st.one_of(
    st.integers(-2, 2),
    st.integers(MAX_CALL_TOKENS - 2, MAX_CALL_TOKENS + 2),
    st.sampled_from([2**39, 2**40, 2**41 - 1, 2**63, -(2**40)]),
    st.integers(),
)


@given(
    input_tokens=_NEAR_BOUNDS,
    output_tokens=_NEAR_BOUNDS,
    duration_ms=_NEAR_BOUNDS,
    cache_tokens=_NEAR_BOUNDS,
)
def test_counts_are_accepted_exactly_when_each_is_in_range(
    input_tokens: int, output_tokens: int, duration_ms: int, cache_tokens: int
) -> None:
    """The hot path checks the four counts at once (their bitwise or against
    a bound of 2**40 - 1): a call passes exactly when every count is in range,
    and a refusal names a count that is not."""
    steptrace.reset()
    counts: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "duration_ms": duration_ms,
        "cache_tokens": cache_tokens,
    }
    bad = [name for name, value in counts.items() if not 0 <= value <= MAX_CALL_TOKENS]
    if bad:
        with pytest.raises(ValueError, match="|".join(bad)):
            steptrace.record_llm_usage("m", cost_usd=0.0, **counts)
        assert steptrace.current_run().usage().llm_calls == 0
    else:
        steptrace.record_llm_usage("m", cost_usd=0.0, **counts)
        usage = steptrace.current_run().usage()
        assert (usage.input_tokens, usage.output_tokens) == (input_tokens, output_tokens)


@given(
    tokens=st.one_of(
        st.integers(),
        st.floats(allow_nan=True),
        st.text(max_size=5),
        st.booleans(),
        st.none(),
    ),
)
def test_any_token_value_is_recorded_exactly_or_refused_with_its_name(tokens: object) -> None:
    steptrace.reset()
    valid = type(tokens) is int and 0 <= tokens <= MAX_CALL_TOKENS
    if not valid:
        with pytest.raises((TypeError, ValueError), match="input_tokens"):
            steptrace.record_llm_usage("m", tokens, 0, cost_usd=0.0)  # type: ignore[arg-type]
        assert steptrace.current_run().usage().llm_calls == 0
    else:
        steptrace.record_llm_usage("m", tokens, 0, cost_usd=0.0)  # type: ignore[arg-type]
        assert type(tokens) is int
        assert 0 <= tokens <= MAX_CALL_TOKENS
        assert steptrace.current_run().usage().input_tokens == tokens
