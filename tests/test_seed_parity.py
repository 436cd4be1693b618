"""The seed's two Rust tests, restated in Python, plus the seed's error dict.

``registers_and_pops_step_from_dict``: a step registered from manifest metadata
(budget 100 tokens / $0.05, model claude-haiku-4-5, boundary continue) has that
default model, records 10+20 tokens at $0.001 under budget, then exhausts the
budget with 50+50, and its completed record shows two LLM calls.
``unregistered_function_does_not_push``: a function that was never registered is
not tracked and activates no step.
"""

from __future__ import annotations

import math

import pytest

import steptrace
from steptrace import BudgetExhausted, ErrorBoundary

SEED_ERROR_KEYS = [
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


def _register_plan() -> steptrace.StepDefinition:
    return steptrace.register_step_from_dict(
        "plan_step",
        {
            "name": "plan",
            "model": "claude-haiku-4-5",
            "error_boundary": "continue",
            "budget": {"max_tokens": 100, "max_usd": 0.05},
        },
    )


def test_register_step_from_dict_builds_the_seed_definition() -> None:
    definition = _register_plan()
    assert definition.name == "plan"
    assert definition.function == "plan_step"
    assert definition.model == "claude-haiku-4-5"
    assert definition.max_tokens == 100
    assert definition.max_usd == 0.05
    assert definition.error_boundary is ErrorBoundary.CONTINUE
    assert definition.boundary is ErrorBoundary.CONTINUE
    assert steptrace.is_tracked_function("plan_step")
    assert steptrace.step_definition_for("plan_step") == definition


def test_registers_and_pops_step_from_dict() -> None:
    definition = _register_plan()
    seen: dict[str, object] = {}

    @steptrace.step(definition)
    def plan_step() -> None:
        active = steptrace.current_step()
        assert active is not None
        seen["name"] = active.name
        seen["model_default"] = steptrace.active_step_model_default()
        steptrace.record_llm_usage("claude-haiku-4-5", 10, 20, cost_usd=0.001)
        after_first = steptrace.current_step()
        assert after_first is not None
        seen["first"] = (after_first.input_tokens, after_first.output_tokens)
        seen["first_cost"] = after_first.cost_usd
        with pytest.raises(BudgetExhausted) as info:
            steptrace.record_llm_usage("claude-haiku-4-5", 50, 50, cost_usd=0.0)
        seen["exhausted"] = steptrace.is_budget_exhausted(info.value)

    assert plan_step() is None
    assert seen["name"] == "plan"
    assert seen["model_default"] == "claude-haiku-4-5"
    assert seen["first"] == (10, 20)
    assert math.isclose(float(seen["first_cost"]), 0.001, abs_tol=1e-9)  # type: ignore[arg-type]
    assert seen["exhausted"] is True
    # Leaving the function pops the step (the seed's prune_below_frame).
    assert steptrace.current_step() is None
    completed = steptrace.current_run().completed_steps
    assert len(completed) == 1
    assert completed[0].llm_calls == 2
    assert completed[0].status == "completed"
    assert (completed[0].input_tokens, completed[0].output_tokens) == (60, 70)
    assert completed[0].model == "claude-haiku-4-5"


def test_exhaustion_reaching_the_continue_boundary_records_skipped() -> None:
    definition = _register_plan()

    @steptrace.step(definition)
    def plan_step() -> str:
        steptrace.record_llm_usage("claude-haiku-4-5", 10, 20, cost_usd=0.001)
        steptrace.record_llm_usage("claude-haiku-4-5", 50, 50, cost_usd=0.0)
        return "unreachable"

    assert plan_step() is None
    (record,) = steptrace.current_run().completed_steps
    assert record.status == "skipped"
    assert record.llm_calls == 2
    assert record.error == "step `plan` exceeded max_tokens budget (130 > 100)"


def test_unregistered_function_does_not_push() -> None:
    def not_a_step() -> steptrace.ActiveStep | None:
        return steptrace.current_step()

    assert not steptrace.is_tracked_function("not_a_step")
    assert steptrace.step_definition_for("not_a_step") is None
    assert not_a_step() is None
    assert steptrace.current_step() is None
    assert steptrace.active_step_model_default() is None
    steptrace.record_llm_usage("m", 1, 2, cost_usd=0.0)
    assert steptrace.current_run().completed_steps == []
    assert steptrace.current_run().usage().total_tokens == 3


def test_budget_exhausted_to_dict_is_the_seed_dict() -> None:
    definition = _register_plan()
    caught: list[BudgetExhausted] = []

    @steptrace.step(definition)
    def plan_step() -> None:
        steptrace.record_llm_usage("claude-haiku-4-5", 10, 20, cost_usd=0.001)
        try:
            steptrace.record_llm_usage("claude-haiku-4-5", 50, 50, cost_usd=0.0)
        except BudgetExhausted as err:
            caught.append(err)

    plan_step()
    (err,) = caught
    data = err.to_dict()
    assert list(data) == SEED_ERROR_KEYS
    assert data == {
        "category": "budget_exceeded",
        "kind": "budget_exhausted",
        "reason": "step_budget_exhausted",
        "step": "plan",
        "function": "plan_step",
        "limit": "max_tokens",
        "limit_value": 100.0,
        "consumed_tokens": 130.0,
        "consumed_cost_usd": pytest.approx(0.001, abs=1e-12),
        "error_boundary": "continue",
        "message": "step `plan` exceeded max_tokens budget (130 > 100)",
    }
    assert isinstance(data["limit_value"], float)
    assert isinstance(data["consumed_tokens"], float)
    assert str(err) == "step `plan` exceeded max_tokens budget (130 > 100)"
    assert err.message == str(err)
    assert (err.category, err.kind, err.reason) == (
        "budget_exceeded",
        "budget_exhausted",
        "step_budget_exhausted",
    )
    assert err.escalated is False


def test_usd_exhaustion_names_max_usd() -> None:
    definition = _register_plan()
    caught: list[BudgetExhausted] = []

    @steptrace.step(definition)
    def plan_step() -> None:
        try:
            steptrace.record_llm_usage("claude-haiku-4-5", 1, 1, cost_usd=0.06)
        except BudgetExhausted as err:
            caught.append(err)

    plan_step()
    (err,) = caught
    data = err.to_dict()
    assert list(data) == SEED_ERROR_KEYS
    assert data["limit"] == "max_usd"
    assert data["limit_value"] == 0.05
    assert data["consumed_tokens"] == 2.0
    assert data["consumed_cost_usd"] == pytest.approx(0.06)
    assert data["message"].startswith("step `plan` exceeded max_usd budget (")


def test_mark_escalated_keeps_fields_and_sets_the_escalation_category() -> None:
    err = BudgetExhausted(
        step="",
        function="",
        limit="max_tokens",
        limit_value=100,
        consumed_tokens=130,
        consumed_cost_usd=0.0,
    )
    escalated = steptrace.mark_escalated(err, step="plan", function="plan_step")
    assert isinstance(escalated, BudgetExhausted)
    data = escalated.to_dict()
    assert data["escalated"] is True
    assert data["category"] == "handoff_escalation"
    assert (data["step"], data["function"]) == ("plan", "plan_step")
    assert data["reason"] == "step_budget_exhausted"
    assert steptrace.is_budget_exhausted(escalated)
    # Fields already set are kept; other errors pass through unchanged.
    named = BudgetExhausted(
        step="a",
        function="fa",
        limit="max_tokens",
        limit_value=1,
        consumed_tokens=2,
        consumed_cost_usd=0.0,
    )
    again = steptrace.mark_escalated(named, step="b", function="fb")
    assert isinstance(again, BudgetExhausted)
    assert (again.step, again.function) == ("a", "fa")
    other = ValueError("x")
    assert steptrace.mark_escalated(other) is other
    assert not steptrace.is_budget_exhausted(other)


def test_a_call_with_an_empty_model_leaves_the_last_model_used() -> None:
    # The seed's record_step_llm_usage updates last_model only for a non-empty
    # model: the row keeps the last model really named, not the declared default.
    @steptrace.step(name="em", model="declared-model")
    def em() -> steptrace.ActiveStep | None:
        steptrace.record_llm_usage("other-model", 1, 1, cost_usd=0.0)
        steptrace.record_llm_usage("", 1, 1, cost_usd=0.0)
        return steptrace.current_step()

    active = em()
    assert active is not None
    assert active.last_model == "other-model"
    (row,) = steptrace.current_run().completed_steps
    assert row.model == "other-model"


def test_a_step_whose_calls_name_no_model_shows_its_declared_model() -> None:
    @steptrace.step(name="dm", model="declared-model")
    def dm() -> None:
        steptrace.record_llm_usage("", 1, 1, cost_usd=0.0)

    dm()
    (row,) = steptrace.current_run().completed_steps
    assert row.model == "declared-model"
