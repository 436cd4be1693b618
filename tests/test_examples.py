"""The examples the README points to run as documented and print their ledgers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_research_brief_demo_skips_the_step_whose_budget_runs_out() -> None:
    out = run_example("research_brief.py")
    ledger = [
        line.split()
        for line in out.splitlines()
        if line.startswith(("plan_", "answer_", "condense", "write_"))
    ]
    assert [row[0] for row in ledger] == [
        "plan_research",
        "answer_question",
        "answer_question",
        "answer_question",
        "condense",
        "write_brief",
    ]
    statuses = {row[0]: row[3] for row in ledger}
    assert statuses["condense"] == "skipped"
    assert statuses["write_brief"] == "completed"
    assert ledger[0][6] == "2"  # the plan was re-prompted once after invalid output
    assert "cannot afford the next call" in out
    assert "run `research-brief` completed: 6 LLM calls" in out


def test_the_core_only_pipeline_example_prints_its_ledger_and_summary() -> None:
    out = run_example("budgeted_pipeline.py")
    assert "summarize_sources" in out
    assert "skipped" in out
    assert '"steps": {' in out


def test_the_offline_agent_example_runs_and_is_the_one_in_the_readme() -> None:
    out = run_example("offline_agent.py")
    assert out.splitlines()[:2] == [
        "done Answer(city='Paris', population=2102650)",
        "Answer(city='a', population=0)",
    ]
    source = (EXAMPLES / "offline_agent.py").read_text()
    body = source.split('"""', 2)[2].strip()  # the code after the module docstring
    readme = (EXAMPLES.parent / "README.md").read_text()
    assert f"```python\n{body}\n```" in readme
