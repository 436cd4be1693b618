"""Issue 12, case 1 in the CLI: calls whose price is unknown are shown as
"unknown" beside the known cost, never folded into it as $0."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from .conftest import Cli

SCRIPT = textwrap.dedent(
    """
    import steptrace

    @steptrace.step("ask")
    def ask():
        steptrace.record_llm_usage("gpt-4o-mini", 1_000_000, 0)  # $0.15 in genai-prices
        steptrace.record_llm_usage("my-local-model", 10, 10)  # no price anywhere

    @steptrace.step("dark")
    def dark():
        steptrace.record_llm_usage("my-local-model", 10, 10)

    with steptrace.run("mixed"):
        ask()
        dark()
    """
)


def test_show_says_which_costs_are_unknown(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "mixed.py").write_text(SCRIPT)
    done = cli("run", "mixed.py")
    assert done.returncode == 0, done.stderr
    text = cli("show", "mixed", "--color", "never")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    ask = next(line for line in lines if line.lstrip("├└─ ").startswith("ask "))
    dark = next(line for line in lines if line.lstrip("├└─ ").startswith("dark "))
    assert "$0.1500 + 1 unknown" in " ".join(ask.split())
    assert "unknown" in dark
    assert "$0 " not in dark
    summary = lines[lines.index("summary") + 1]
    assert "$0.1500 + 2 unknown" in summary
    data = json.loads(cli("show", "mixed", "--json").stdout)
    assert data["summary"]["unpriced_calls"] == 2
    (root,) = data["tree"]
    assert root["total"]["unpriced_calls"] == 2
    assert root["total"]["cost_usd"] == 0.15


NESTED = textwrap.dedent(
    """
    import steptrace

    with steptrace.run("parent"):
        steptrace.record_llm_usage("gpt-4o-mini", 1_000_000, 0)  # $0.15
        with steptrace.run("child"):
            steptrace.record_llm_usage("my-local-model", 10, 10)  # no price anywhere
    """
)


def _row(lines: list[str], name: str) -> str:
    return " ".join(next(line for line in lines if f" {name} " in f" {line} ").split())


def test_runs_says_which_costs_are_unknown(cli: Cli, tmp_path: Path) -> None:
    """``steptrace runs`` shows a partial cost as ``show`` does: the known part
    and how many calls it leaves out; a run with no known price says unknown.
    A parent's cost holds its child runs', and so do its unknown calls."""
    (tmp_path / "mixed.py").write_text(SCRIPT)
    (tmp_path / "nested.py").write_text(NESTED)
    for script in ("mixed.py", "nested.py"):
        done = cli("run", script)
        assert done.returncode == 0, done.stderr
    text = cli("runs", "--color", "never")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert _row(lines, "mixed").endswith("$0.1500 + 2 unknown")
    assert _row(lines, "parent").endswith("$0.1500 + 1 unknown")
    assert _row(lines, "└ child").endswith(" unknown")
    assert "$0 " not in _row(lines, "└ child") + " "
    assert lines[-1].endswith("$0.3000 + 3 unknown")
    data = json.loads(cli("runs", "--json").stdout)
    by_name = {run["name"]: run for run in data["runs"]}
    assert (by_name["mixed"]["cost_usd"], by_name["mixed"]["unpriced_calls"]) == (0.15, 2)
    # `steptrace run` wraps each script in a run of its own: the entries below it.
    nested = by_name["nested"]
    assert nested["unpriced_calls"] == 1
    assert [(c["name"], c["unpriced_calls"]) for c in nested["children"]] == [
        ("parent", 1),
        ("child", 1),
    ]
    assert data["totals"]["unpriced_calls"] == 3
