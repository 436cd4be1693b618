"""The Run record: lifecycle, summary, ledger rows and their dict shape."""

from __future__ import annotations

import json

import pytest

import steptrace
from steptrace import CompletedStep, LlmCall


@steptrace.step(model="m-small", budget={"max_tokens": 50}, error_boundary="continue")
def capped() -> str:
    steptrace.record_llm_usage("m-small", 40, 20, cost_usd=0.002)
    return "never"


@steptrace.step(model="m-large")
def plain() -> str:
    steptrace.record_llm_usage("m-large", 7, 3, cost_usd=0.01)
    return "ok"


def test_summary_rolls_up_usage_steps_budget_and_agent_events() -> None:
    with steptrace.run("nightly", budget={"max_usd": 1.0}, metadata={"team": "a"}) as run:
        plain()
        capped()
        steptrace.emit_event(
            LlmCall(
                call_id="c",
                model="m",
                input_tokens=7,
                output_tokens=3,
                cache_tokens=0,
                duration_ms=4,
                iteration=1,
            )
        )
    summary = run.summary()
    assert summary["run_id"] == run.id
    assert summary["name"] == "nightly"
    assert summary["status"] == "completed"
    assert (summary["input_tokens"], summary["output_tokens"]) == (47, 23)
    assert summary["llm_calls"] == 2
    assert summary["cost_usd"] == pytest.approx(0.012)
    assert summary["steps"] == {"completed": 1, "failed": 0, "skipped": 1, "escalated": 0}
    assert summary["budget"] == {"max_tokens": None, "max_usd": 1.0}
    assert summary["agent"]["llm_calls"] == 1
    assert run.metadata == {"team": "a"}
    json.dumps(summary)  # the summary is plain JSON data


def _plain_then_fail(run: steptrace.Run) -> None:
    with run:
        plain()
        raise RuntimeError("boom")


def test_a_run_left_by_an_exception_is_failed_and_keeps_its_record() -> None:
    run = steptrace.run("broken")
    with pytest.raises(RuntimeError):
        _plain_then_fail(run)
    assert run.status == "failed"
    assert run.error == "RuntimeError: boom"
    assert [row.name for row in run.completed_steps] == ["plain"]
    assert run.ended_at is not None


def test_a_run_cannot_be_entered_twice() -> None:
    with steptrace.run("once") as run:
        pass
    with pytest.raises(RuntimeError, match="already been entered"), run:
        pass


def test_ledger_rows_round_trip_through_json() -> None:
    with steptrace.run() as run:
        plain()
        capped()
    rows = run.completed_steps
    again = [CompletedStep.from_dict(json.loads(json.dumps(row.to_dict()))) for row in rows]
    assert again == rows
    assert list(rows[1].to_dict())[:9] == [
        "name",
        "function",
        "model",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "llm_calls",
        "status",
        "error",
    ]
    assert rows[1].total_tokens == 60
    assert rows[1].duration_ms >= 0


def test_a_ledger_row_without_the_seed_fields_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"missing field\(s\) \['status', 'error'\]"):
        CompletedStep.from_dict(
            {
                "name": "n",
                "function": "f",
                "model": None,
                "input_tokens": 1,
                "output_tokens": 1,
                "cost_usd": 0.0,
                "llm_calls": 1,
            }
        )
