"""The error tree: BudgetExhausted's seed dict, escalation, pickling, PricingUnknown."""

from __future__ import annotations

import pickle

import pytest

import steptrace
from steptrace import (
    BudgetExhausted,
    PricingUnknown,
    StepTraceError,
    is_budget_exhausted,
    mark_escalated,
)

SEED_KEYS = [
    "category",
    "kind",
    "reason",
    "step",
    "function",
    "limit",
    "limit_value",
    "consumed_tokens",
    "consumed_cost_usd",
    "error_boundary",
    "message",
]


def _plan_error(**changes: object) -> BudgetExhausted:
    fields: dict[str, object] = {
        "step": "plan",
        "function": "plan_fn",
        "limit": "max_tokens",
        "limit_value": 100,
        "consumed_tokens": 130,
        "consumed_cost_usd": 0.002,
        "error_boundary": "continue",
    }
    fields.update(changes)
    return BudgetExhausted(**fields)  # type: ignore[arg-type]


def test_to_dict_is_the_seed_dict() -> None:
    err = _plan_error()
    data = err.to_dict()
    assert list(data) == SEED_KEYS
    assert data == {
        "category": "budget_exceeded",
        "kind": "budget_exhausted",
        "reason": "step_budget_exhausted",
        "step": "plan",
        "function": "plan_fn",
        "limit": "max_tokens",
        "limit_value": 100.0,
        "consumed_tokens": 130.0,
        "consumed_cost_usd": 0.002,
        "error_boundary": "continue",
        "message": "step `plan` exceeded max_tokens budget (130 > 100)",
    }
    # The seed's values are floats (VmValue::Float).
    assert type(data["limit_value"]) is float
    assert type(data["consumed_tokens"]) is float
    assert str(err) == data["message"]
    for key, value in data.items():
        assert getattr(err, key) == value


def test_to_dict_of_a_real_exhaustion() -> None:
    @steptrace.step(name="plan", budget={"max_tokens": 100}, error_boundary="fail")
    def plan_fn() -> None:
        steptrace.record_llm_usage("m", 10, 20, cost_usd=0.001)
        steptrace.record_llm_usage("m", 50, 50, cost_usd=0.001)

    with pytest.raises(BudgetExhausted) as info:
        plan_fn()
    data = info.value.to_dict()
    assert list(data) == SEED_KEYS
    assert data["function"].endswith("plan_fn")
    assert {k: v for k, v in data.items() if k not in ("function", "consumed_cost_usd")} == {
        "category": "budget_exceeded",
        "kind": "budget_exhausted",
        "reason": "step_budget_exhausted",
        "step": "plan",
        "limit": "max_tokens",
        "limit_value": 100.0,
        "consumed_tokens": 130.0,
        "error_boundary": "fail",
        "message": "step `plan` exceeded max_tokens budget (130 > 100)",
    }
    assert data["consumed_cost_usd"] == pytest.approx(0.002)


def test_persona_and_preflight_fields_are_added_after_the_seed_keys() -> None:
    err = _plan_error(scope="persona", scope_name="writer", preflight=True, projected=50)
    data = err.to_dict()
    assert list(data) == [*SEED_KEYS, "scope", "scope_name", "preflight", "projected"]
    assert data["reason"] == "persona_budget_exhausted"
    assert (data["scope"], data["scope_name"], data["projected"]) == ("persona", "writer", 50)
    assert "persona `writer`" in data["message"]


def test_mark_escalated_returns_an_escalated_copy() -> None:
    original = _plan_error()
    before = original.to_dict()
    escalated = mark_escalated(original, step="other", function="other_fn")
    assert isinstance(escalated, BudgetExhausted)
    assert escalated is not original
    assert escalated.__cause__ is original
    assert escalated.category == "handoff_escalation"
    assert escalated.escalated is True
    assert escalated.to_dict() == {**before, "category": "handoff_escalation", "escalated": True}
    assert list(escalated.to_dict()) == [*SEED_KEYS, "escalated"]
    # kind, reason, step and function are unchanged (step/function were not empty).
    assert (escalated.kind, escalated.reason) == ("budget_exhausted", "step_budget_exhausted")
    assert (escalated.step, escalated.function) == ("plan", "plan_fn")
    # The original is untouched.
    assert original.to_dict() == before
    assert original.escalated is False
    assert is_budget_exhausted(escalated)


def test_mark_escalated_fills_only_empty_step_and_function() -> None:
    anonymous = _plan_error(step="", function="")
    filled = mark_escalated(anonymous, step="draft", function="draft_fn")
    assert isinstance(filled, BudgetExhausted)
    assert (filled.step, filled.function) == ("draft", "draft_fn")
    untouched = mark_escalated(anonymous)
    assert isinstance(untouched, BudgetExhausted)
    assert (untouched.step, untouched.function) == ("", "")
    half = mark_escalated(_plan_error(function=""), step="x", function="half_fn")
    assert isinstance(half, BudgetExhausted)
    assert (half.step, half.function) == ("plan", "half_fn")


@pytest.mark.parametrize(
    "other",
    [
        ValueError("x"),
        RuntimeError("y"),
        PricingUnknown("m", scope="step", scope_name="s"),
        KeyboardInterrupt(),
    ],
)
def test_mark_escalated_returns_other_errors_unchanged(other: BaseException) -> None:
    assert mark_escalated(other, step="s", function="f") is other
    assert other.__cause__ is None
    assert not is_budget_exhausted(other)


def test_is_budget_exhausted() -> None:
    assert is_budget_exhausted(_plan_error())
    assert is_budget_exhausted(_plan_error(scope="run", scope_name="nightly"))
    assert is_budget_exhausted(mark_escalated(_plan_error()))
    assert not is_budget_exhausted(Exception("budget_exhausted"))
    assert not is_budget_exhausted(StepTraceError("budget"))


@pytest.mark.parametrize(
    "err",
    [
        _plan_error(),
        _plan_error(limit="max_usd", limit_value=0.5, consumed_cost_usd=0.75),
        _plan_error(scope="run", scope_name="nightly", preflight=True, projected=42.0),
        _plan_error(message="custom text"),
    ],
    ids=["tokens", "usd", "run-preflight", "custom-message"],
)
def test_pickling_round_trip(err: BudgetExhausted) -> None:
    for candidate in (err, mark_escalated(err)):
        assert isinstance(candidate, BudgetExhausted)
        back = pickle.loads(pickle.dumps(candidate))
        assert type(back) is BudgetExhausted
        assert back.to_dict() == candidate.to_dict()
        assert (back.scope, back.scope_name) == (candidate.scope, candidate.scope_name)
        assert (back.preflight, back.projected) == (candidate.preflight, candidate.projected)
        assert back.escalated == candidate.escalated
        assert str(back) == str(candidate)


def test_pricing_unknown_names_model_and_scope() -> None:
    err = PricingUnknown("mystery-model-7", scope="persona", scope_name="researcher")
    text = str(err)
    assert "'mystery-model-7'" in text
    assert "persona `researcher`" in text
    assert "max_usd" in text
    assert (err.model, err.scope, err.scope_name) == ("mystery-model-7", "persona", "researcher")
    assert not is_budget_exhausted(err)


def test_pricing_unknown_pickles() -> None:
    err = PricingUnknown("m", scope="run", scope_name="nightly")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is PricingUnknown
    assert (back.model, back.scope, back.scope_name) == ("m", "run", "nightly")
    assert str(back) == str(err)


def test_pricing_unknown_raised_under_a_usd_budget() -> None:
    @steptrace.step(name="priced", budget={"max_usd": 1.0})
    def priced() -> None:
        steptrace.record_llm_usage("no-such-model", 1, 1)

    with pytest.raises(PricingUnknown) as info:
        priced()
    assert "'no-such-model'" in str(info.value)
    assert "step `priced`" in str(info.value)


def test_step_trace_error_is_the_base() -> None:
    assert issubclass(BudgetExhausted, StepTraceError)
    assert issubclass(PricingUnknown, StepTraceError)
    assert issubclass(StepTraceError, Exception)
    with pytest.raises(StepTraceError):
        raise _plan_error()
    # Bad metadata is a programming error, not a StepTraceError.
    with pytest.raises(ValueError, match="max_tokens") as info:
        steptrace.Budget(max_tokens=0)
    assert not isinstance(info.value, StepTraceError)
