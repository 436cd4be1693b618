"""What the CLI prints about figures and failures: the ledger's columns stay
aligned whatever the names, a budget cell shows the amount spent with its
significant digits, ``prices`` marks the rates genai-prices does not list and
tells how to supply a missing price, and a failed replay shows its diff once,
naming the stored run rather than a temporary cassette file."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from steptrace._run import CompletedStep
from steptrace.report import ledger_table

from .conftest import PIPELINE, Cli, Recorded

_NAMES = st.text(
    st.characters(codec="ascii", min_codepoint=33, max_codepoint=126), min_size=1, max_size=40
)


class _Ledger:
    def __init__(self, rows: list[CompletedStep]) -> None:
        self.completed_steps = rows


def _row(name: str, persona: str, model: str, cost: float, max_usd: float | None) -> CompletedStep:
    return CompletedStep(
        name=name,
        function=name,
        model=model,
        input_tokens=140,
        output_tokens=2,
        cost_usd=cost,
        llm_calls=1,
        status="completed",
        error=None,
        persona=persona,
        max_usd=max_usd,
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_NAMES, _NAMES, _NAMES), min_size=1, max_size=4))
def test_ledger_columns_stay_aligned_whatever_the_names(
    names: list[tuple[str, str, str]],
) -> None:
    rows = [_row(step, persona, model, 0.000123, 0.5) for step, persona, model in names]
    lines = ledger_table(_Ledger(rows)).splitlines()
    header, body = lines[0], lines[2:]
    # Every column after the names starts where its header does.
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    for line, (step, persona, model) in zip(body, names, strict=True):
        assert line.startswith(step + " ")
        assert line[starts[1] :].startswith(persona + " ")
        assert line[starts[2] :].startswith(model + " ")
        assert len(line) == len(header)
        assert line.endswith("$0.000123/$0.5")


def test_a_usd_budget_cell_shows_the_amount_spent_with_its_significant_digits() -> None:
    cells = [
        ledger_table(_Ledger([_row("s", "p", "m", cost, 0.01)])).splitlines()[2].split()[-1]
        for cost in (0.000042, 0.00043, 0.0125, 0.0, 1.5)
    ]
    assert cells == [
        "$0.000042/$0.01",
        "$0.00043/$0.01",
        "$0.0125/$0.01",
        "$0/$0.01",
        "$1.50/$0.01",
    ]


def test_show_keeps_the_ledger_aligned_with_a_long_persona_name(cli: Cli, tmp_path: Path) -> None:
    script = tmp_path / "long.py"
    script.write_text(
        "import steptrace\n"
        "@steptrace.step(model='m', budget={'max_usd': 0.01})\n"
        "def work() -> None:\n"
        "    steptrace.record_llm_usage('m', 100, 40, cost_usd=0.00042)\n"
        "@steptrace.persona('a-persona-with-a-long-name')\n"
        "def who() -> None:\n"
        "    work()\n"
        "who()\n"
    )
    assert cli("run", str(script)).returncode == 0
    out = cli("show", "last").stdout
    ledger = out[out.index("\nledger\n") + 8 :].splitlines()
    header, row = ledger[0], ledger[2]
    assert row.index("a-persona-with-a-long-name") == header.index("persona")
    assert row.index("completed") == header.index("status")
    assert row.endswith("$0.00042/$0.01")


def test_prices_marks_rates_genai_prices_does_not_list(cli: Cli) -> None:
    done = cli("prices", "gpt-4o")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "  input        $2.50" in lines
    assert "  cache read   $1.25" in lines
    assert "  cache write  $2.50  (not listed: charged as input)" in lines
    assert "  reasoning    $10.00  (not listed: charged as output)" in lines
    data = json.loads(cli("prices", "gpt-4o", "--json").stdout)
    assert data["cache_read_per_mtok"] == 1.25
    assert data["unlisted"] == ["cache_write_per_mtok", "reasoning_per_mtok"]


def test_prices_of_an_unknown_model_says_how_to_supply_a_price(cli: Cli) -> None:
    done = cli("prices", "nonsense-model")
    assert done.returncode == 1
    assert "no price known for model 'nonsense-model'" in done.stderr
    assert "overrides={'nonsense-model': ModelPrice(input_per_mtok=" in done.stderr
    assert "cost_usd=" in done.stderr


def test_a_failed_replay_shows_its_diff_once_and_names_the_stored_run(
    recorded: Recorded,
) -> None:
    changed = recorded.workdir / "changed.py"
    changed.write_text(PIPELINE.read_text().replace("summarize: {notes}", "summarise now: {notes}"))
    done = recorded.cli("replay", recorded.run_id, str(changed))
    assert done.returncode == 1
    err = done.stderr
    assert err.count('+      "content": "summarise now: ') == 1, err
    assert "steptrace-replay-" not in err
    assert "cassette.jsonl" not in err
    assert f"the calls recorded in run {recorded.run_id}" in err
