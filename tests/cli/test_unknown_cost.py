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
