"""``steptrace show``: the step tree with budget use, events, ledger and
summary of a stored run, as text and as JSON with the script's exact usage."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .conftest import EXAMPLES, Cli, Recorded
from .test_runs_export_prices import _family


def test_json_gives_the_exact_usage_and_budget_use_of_every_node(recorded: Recorded) -> None:
    done = recorded.cli("show", recorded.run_id, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["run"]["id"] == recorded.run_id
    assert (data["run"]["name"], data["run"]["status"]) == ("pipeline", "completed")
    summary = data["summary"]
    assert (summary["llm_calls"], summary["input_tokens"], summary["output_tokens"]) == (2, 300, 60)
    assert summary["cost_usd"] == 0.00042
    assert summary["steps"] == {"completed": 2, "failed": 0, "skipped": 0, "escalated": 0}

    (root,) = data["tree"]
    assert (root["name"], root["kind"], root["budget"]) == ("pipeline", "run", None)
    assert root["total"] == {
        "input_tokens": 300,
        "output_tokens": 60,
        "cost_usd": 0.00042,
        "llm_calls": 2,
    }
    (persona,) = root["children"]
    assert (persona["name"], persona["kind"], persona["status"]) == (
        "analyst",
        "persona",
        "completed",
    )
    assert persona["budget"] == {
        "max_tokens": None,
        "max_usd": 0.01,
        "used_tokens": 360,
        "used_usd": 0.00042,
        "pct": 4.2,
    }
    fetch, summarize = persona["children"]
    assert (fetch["name"], fetch["status"], fetch["llm_spans"]) == ("fetch", "completed", 1)
    assert fetch["budget"] == {
        "max_tokens": 1000,
        "max_usd": None,
        "used_tokens": 120,
        "used_usd": 0.00014,
        "pct": 12.0,
    }
    assert fetch["own"] == {
        "input_tokens": 100,
        "output_tokens": 20,
        "cost_usd": 0.00014,
        "llm_calls": 1,
    }
    assert (summarize["name"], summarize["budget"], summarize["children"]) == (
        "summarize",
        None,
        [],
    )
    assert summarize["total"]["cost_usd"] == 0.00028

    assert [
        (s["name"], s["input_tokens"], s["output_tokens"], s["max_tokens"])
        for s in data["completed_steps"]
    ] == [
        ("fetch", 100, 20, 1000),
        ("summarize", 200, 40, None),
    ]
    assert [(c["step"], c["persona"], c["model"], c["cost_usd"]) for c in data["llm_calls"]] == [
        ("fetch", "analyst", "test-model", 0.00014),
        ("summarize", "analyst", "test-model", 0.00028),
    ]
    assert data["event_counts"] == {"llm_call": 2}
    assert "events" not in data


def test_json_with_events_lists_them_in_order(recorded: Recorded) -> None:
    data: dict[str, Any] = json.loads(recorded.cli("show", "last", "--json", "--events").stdout)
    events = data["events"]
    assert [(e["seq"], e["type"], e["model"], e["input_tokens"]) for e in events] == [
        (0, "llm_call", "test-model", 100),
        (1, "llm_call", "test-model", 200),
    ]


def _tree_rows(out: str) -> dict[str, list[str]]:
    """The step tree's rows by name: the cells split on runs of 2+ spaces, the
    time column left out (it varies)."""
    tree = out[out.index("step tree") : out.index("\nevents")].splitlines()[2:]
    rows = {}
    for line in tree:
        cells = re.split(r"\s{2,}", line.strip(" │├└─"))
        rows[cells[0]] = cells[1:7]
    return rows


def test_text_shows_the_tree_with_used_against_limit_the_ledger_and_the_summary(
    recorded: Recorded,
) -> None:
    done = recorded.cli("show", "last")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b[" not in out  # not a terminal: no colour
    assert out.startswith(f"run {recorded.run_id}  pipeline  completed\n")
    assert _tree_rows(out) == {
        "pipeline": ["run", "completed", "360", "$0.000420", "2", _time(out, "pipeline")],
        "analyst": ["persona", "completed", "360", "$0.000420 / $0.01", "4%", "2"],
        "fetch": ["step", "completed", "120 / 1,000", "$0.000140", "12%", "1"],
        "summarize": ["step", "completed", "240", "$0.000280", "1", _time(out, "summarize")],
    }
    assert "events (2): llm_call 2" in out
    ledger = out[out.index("\nledger\n") :].splitlines()
    assert ledger[4].split() == [
        *("fetch", "analyst", "test-model", "completed"),
        *("100", "20", "1", "0.000140", "120/1000", "tok"),
    ]
    assert "2 LLM calls, 300 tokens in, 60 out, $0.000420" in out
    assert "steps: 2 completed" in out


def _time(out: str, name: str) -> str:
    # Rows without a budget have no BUDGET cell: the next cell is the time.
    line = next(line for line in out.splitlines() if line.strip(" │├└─").startswith(name + " "))
    return re.split(r"\s{2,}", line.strip(" │├└─"))[6]


def test_type_lists_only_that_events_type_and_an_unknown_type_names_the_known_ones(
    recorded: Recorded,
) -> None:
    done = recorded.cli("show", "last", "--type", "llm_call")
    listed = [
        line.split() for line in done.stdout.splitlines() if line.strip().startswith(("0 ", "1 "))
    ]
    assert [(row[0], row[1], row[3]) for row in listed] == [
        ("0", "llm_call", "model=test-model"),
        ("1", "llm_call", "model=test-model"),
    ]
    none = recorded.cli("show", "last", "--type", "tool_execution")
    assert "model=test-model" not in none.stdout
    bad = recorded.cli("show", "last", "--type", "tool_run")
    assert bad.returncode == 1
    assert "unknown event type(s) tool_run; known: context_compaction, llm_call" in bad.stderr


def test_show_links_child_runs_their_parent_replays_and_write_errors(
    cli: Cli, tmp_path: Path
) -> None:
    _family(tmp_path / ".steptrace" / "runs.db")
    parent = cli("show", "wrap-1", "--color", "never")
    assert parent.returncode == 0, parent.stderr
    lines = parent.stdout.splitlines()
    start = lines.index("child runs  (included in this run's usage)")
    assert lines[start + 1].split() == ["ID", "NAME", "STATUS", "TOKENS", "COST", "TIME"]
    assert lines[start + 2].split()[:3] == ["demo-1", "agent-demo", "completed"]
    child = cli("show", "demo-1", "--color", "never").stdout
    assert "  child run of wrap-1  (steptrace show wrap-1)" in child
    assert "child runs" not in child
    replay = cli("show", "wrap-2", "--color", "never").stdout
    assert "  replay of wrap-1: its calls were answered from that run" in replay
    lossy = cli("show", "lossy", "--color", "never").stdout
    assert "  3 row(s) could not be stored; last: span 9: OverflowError: int too large" in lossy
    data = json.loads(cli("show", "wrap-1", "--json").stdout)
    assert [c["id"] for c in data["child_runs"]] == ["demo-1"]
    child_data = json.loads(cli("show", "demo-1", "--json").stdout)
    assert child_data["run"]["parent_run_id"] == "wrap-1"
    assert child_data["child_runs"] == []
    assert json.loads(cli("show", "lossy", "--json").stdout)["run"]["write_errors"] == 3


def test_spans_give_each_llm_call_span_its_own_usage_without_counting_it_twice(
    recorded: Recorded,
) -> None:
    data = json.loads(recorded.cli("show", "last", "--spans", "--json").stdout)
    (root,) = data["tree"]
    assert root["total"] == {
        "input_tokens": 300,
        "output_tokens": 60,
        "cost_usd": 0.00042,
        "llm_calls": 2,
    }
    (persona,) = root["children"]
    fetch, summarize = persona["children"]
    ((fetch_call,), (summarize_call,)) = fetch["children"], summarize["children"]
    assert fetch_call["kind"] == summarize_call["kind"] == "llm_call"
    assert fetch_call["own"] == {
        "input_tokens": 100,
        "output_tokens": 20,
        "cost_usd": 0.00014,
        "llm_calls": 1,
    }
    assert summarize_call["total"]["cost_usd"] == 0.00028
    # The step's own usage moved to its call: its subtree total is unchanged.
    assert fetch["own"]["llm_calls"] == 0
    assert fetch["total"] == fetch_call["total"]
    assert fetch["budget"]["used_tokens"] == 120

    text = recorded.cli("show", "last", "--spans").stdout
    calls = [
        re.split(r"\s{2,}", line.strip(" │├└─"))
        for line in text.splitlines()
        if "chat test-model" in line
    ]
    assert [cells[1:5] + cells[5:6] for cells in calls] == [
        ["llm_call", "ok", "120", "$0.000140", "1"],
        ["llm_call", "ok", "240", "$0.000280", "1"],
    ]


def test_the_agent_summary_has_one_entry_per_loop_and_a_defined_roll_up(cli: Cli) -> None:
    assert cli("run", "-q", str(EXAMPLES / "agent_demo.py")).returncode == 0
    data = json.loads(cli("show", "agent-demo", "--json").stdout)
    agent = data["summary"]["agent"]
    loops = agent["loops"]
    assert [loop["status"] for loop in loops] == ["done", "budget_exhausted"]
    # Each loop's own counts; the roll-up sums them and the call outside.
    assert agent["status"] == "mixed"
    assert agent["iterations"] == sum(loop["iterations"] for loop in loops)
    assert agent["outside_loops"]["llm_calls"] == 1
    assert agent["llm_calls"] == sum(loop["llm_calls"] for loop in loops) + 1
    assert agent["tool_executions"] == sum(loop["tool_executions"] for loop in loops)
    text = cli("show", "agent-demo").stdout
    first = loops[0]
    assert (
        f"    loop 1 review_workspace: done, {first['iterations']} iterations, "
        f"{first['llm_calls']} LLM calls, "
        f"{first['tool_executions']} tool executions" in text
    )
    assert "  agent (2 loops, all together): mixed, " in text
    assert "; 1 LLM call(s) outside any loop" in text
