"""The plain-text ledger table and totals line."""

from __future__ import annotations

import steptrace
from steptrace.report import ledger_table, totals_line


@steptrace.step(model="m", budget={"max_tokens": 100}, error_boundary="continue")
def capped() -> None:
    steptrace.record_llm_usage("m", 90, 20, cost_usd=0.25)


@steptrace.step(budget={"max_usd": 2.0})
def priced() -> None:
    steptrace.record_llm_usage("big-model", 1_200, 300, cost_usd=0.5)


@steptrace.persona
def writer() -> None:
    priced()
    capped()


def test_the_ledger_table_has_a_row_per_step_and_shows_errors_under_their_row() -> None:
    with steptrace.run("report") as run:
        writer()
    lines = ledger_table(run).splitlines()
    assert lines[0].split() == [
        "step",
        "persona",
        "model",
        "status",
        "in",
        "out",
        "calls",
        "cost",
        "USD",
        "budget",
    ]
    assert set(lines[1]) == {"-"}
    assert lines[2].split() == [
        "priced",
        "writer",
        "big-model",
        "completed",
        "1200",
        "300",
        "1",
        "0.500000",
        "$0.50/$2",
    ]
    assert lines[3].split()[:4] == ["capped", "writer", "m", "skipped"]
    assert lines[3].split()[-2:] == ["110/100", "tok"]
    assert lines[4].strip() == "-> step `capped` exceeded max_tokens budget (110 > 100)"
    assert len(lines) == 5


def test_the_totals_line_sums_the_run() -> None:
    with steptrace.run("report") as run:
        writer()
    assert totals_line(run) == (
        "run `report` completed: 2 LLM calls, 1,290 tokens in, 320 out, $0.750000"
    )
