"""``steptrace runs`` (table, filters, totals, JSON), ``export`` (both file
formats, validated) and ``prices``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from steptrace.store import RunRow, SQLiteStore, WriteBatch

from .conftest import PIPELINE, Cli, Recorded, read_runs


def test_runs_lists_runs_newest_first_with_filters_and_totals(cli: Cli, tmp_path: Path) -> None:
    assert cli("run", "-q", str(PIPELINE)).returncode == 0
    assert cli("run", "-q", "--name", "broken", str(PIPELINE), "--raise").returncode == 1
    first, second = read_runs(tmp_path / ".steptrace" / "runs.db")

    table = cli("runs").stdout.splitlines()
    assert table[0].split() == [
        "ID", "NAME", "STATUS", "PERSONAS", "STARTED", "DURATION", "TOKENS", "COST",
    ]  # fmt: skip
    assert [line.split()[:4] for line in table[1:3]] == [
        [second.id, "broken", "failed", "analyst"],
        [first.id, "pipeline", "completed", "analyst"],
    ]
    assert [line.split()[-2:] for line in table[1:3]] == [["360", "$0.000420"]] * 2
    assert table[3] == "2 runs: 4 LLM calls, 600 tokens in, 120 out, $0.000840"

    failed = cli("runs", "--status", "failed").stdout.splitlines()
    assert [line.split()[0] for line in failed[1:-1]] == [second.id]
    assert cli("runs", "--name", "pipeline").stdout.splitlines()[1].split()[0] == first.id
    assert cli("runs", "--persona", "nobody").stdout == "no runs match these filters\n"
    assert len(cli("runs", "--persona", "analyst", "--since", "1h").stdout.splitlines()) == 4
    assert cli("runs", "--since", "2999-01-01").stdout == "no runs match these filters\n"
    limited = cli("runs", "--limit", "1").stdout.splitlines()
    assert limited[-1].startswith("1 run (of 2 matching; --limit shows more): 2 LLM calls")


def test_runs_json_has_each_run_and_exact_totals(recorded: Recorded) -> None:
    data = json.loads(recorded.cli("runs", "--json").stdout)
    (run,) = data["runs"]
    assert run["id"] == recorded.run_id
    assert (run["name"], run["status"], run["personas"]) == ("pipeline", "completed", ["analyst"])
    assert (run["input_tokens"], run["output_tokens"], run["llm_calls"]) == (300, 60, 2)
    assert (data["shown"], data["matching"]) == (1, 1)
    assert data["totals"] == {
        "llm_calls": 2,
        "input_tokens": 300,
        "output_tokens": 60,
        "cost_usd": 0.00042,
        "unpriced_calls": 0,
    }


def test_bad_filter_values_are_usage_errors(recorded: Recorded) -> None:
    for args in (["--since", "yesterday"], ["--limit", "0"], ["--status", "done"]):
        done = recorded.cli("runs", *args)
        assert done.returncode == 2, args
        assert "steptrace runs: error: argument" in done.stderr


def test_export_jsonl_holds_the_stored_run(recorded: Recorded, tmp_path: Path) -> None:
    target = tmp_path / "run.jsonl"
    done = recorded.cli("export", "last", "-o", str(target))
    assert done.returncode == 0, done.stderr
    assert f"wrote run {recorded.run_id} (jsonl) to {target}" in done.stderr
    records = [json.loads(line) for line in target.read_text().splitlines()]
    head = records[0]
    assert (head["type"], head["run_id"], head["name"], head["status"]) == (
        "run",
        recorded.run_id,
        "pipeline",
        "completed",
    )
    kinds = [r["type"] for r in records]
    assert kinds.count("span") == 6  # run, persona, 2 steps, 2 chat spans
    assert kinds.count("event") == 2
    assert [r["name"] for r in records if r["type"] == "completed_step"] == ["fetch", "summarize"]
    assert [r["input_tokens"] for r in records if r["type"] == "llm_trace"] == [100, 200]


def test_export_otlp_json_is_one_trace_with_every_span(recorded: Recorded) -> None:
    done = recorded.cli("export", recorded.run_id[:-2], "--format", "otlp-json")
    assert done.returncode == 0, done.stderr
    path = recorded.workdir / f"{recorded.run_id}.otlp.json"
    data = json.loads(path.read_text())
    (resource,) = data["resourceSpans"]
    spans = [span for scope in resource["scopeSpans"] for span in scope["spans"]]
    assert len(spans) == 6
    assert len({span["traceId"] for span in spans}) == 1
    ids = {span["spanId"] for span in spans}
    roots = [span for span in spans if not span.get("parentSpanId")]
    assert len(roots) == 1
    assert all(span["parentSpanId"] in ids for span in spans if span.get("parentSpanId"))
    chats = [s for s in spans if s["name"] == "chat test-model"]
    usage = sorted(
        a["value"]["intValue"]
        for s in chats
        for a in s["attributes"]
        if a["key"] == "gen_ai.usage.input_tokens"
    )
    assert usage in (["100", "200"], [100, 200])


def test_export_to_stdout(recorded: Recorded) -> None:
    done = recorded.cli("export", "last", "-o", "-")
    assert done.returncode == 0
    assert json.loads(done.stdout.splitlines()[0])["run_id"] == recorded.run_id


def test_prices_shows_a_known_models_price_and_source(cli: Cli) -> None:
    done = cli("prices", "gpt-4o-mini")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("gpt-4o-mini  provider openai  source genai-prices ")
    assert "  input        $0.15" in lines
    assert "  output       $0.60" in lines
    data = json.loads(cli("prices", "openai:gpt-4o-mini", "--json").stdout)
    assert (data["input_per_mtok"], data["output_per_mtok"]) == (0.15, 0.6)
    assert data["matched_model"] == "gpt-4o-mini"


def test_prices_of_an_unknown_model_suggests_close_names(cli: Cli) -> None:
    done = cli("prices", "gpt-4o-mni")
    assert done.returncode == 1
    assert "steptrace: error: no price known for model 'gpt-4o-mni'." in done.stderr
    suggestions = done.stderr.split("Close model names: ")[1].strip().split(", ")
    assert suggestions[0] == "gpt-4o-mini"
    assert "Close model names" not in cli("prices", "zzzzzzzzzzzz").stderr


def _family(store_path: Path) -> None:
    """A script's wrapper run with the run it opened (a child), a replay of
    the wrapper with its own child, and a run with rows the store refused."""

    def row(run_id: str, name: str, start: float, **fields: Any) -> RunRow:
        return RunRow(
            id=run_id,
            name=name,
            status="completed",
            started_at=start,
            ended_at=start + 1,
            input_tokens=100,
            output_tokens=10,
            cost_usd=0.5,
            llm_calls=1,
            **fields,
        )

    now = time.time() - 60
    replay = {"replay_of": "wrap-1"}
    with SQLiteStore(store_path) as store:
        store.write(
            WriteBatch(
                runs=[
                    row("wrap-1", "agent_demo", now),
                    row("demo-1", "agent-demo", now + 0.1, parent_run_id="wrap-1"),
                    row("wrap-2", "agent_demo", now + 2, metadata=replay),
                    row("demo-2", "agent-demo", now + 2.1, parent_run_id="wrap-2", metadata=replay),
                    row("lossy", "lossy", now + 4),
                ],
                write_errors=[("lossy", 3, "span 9: OverflowError: int too large")],
            )
        )


def test_runs_list_one_entry_an_execution_and_spend_once(cli: Cli, tmp_path: Path) -> None:
    _family(tmp_path / ".steptrace" / "runs.db")
    lines = cli("runs", "--color", "never").stdout.splitlines()
    assert [line.split()[:3] for line in lines[1:6]] == [
        ["lossy", "lossy", "(3"],
        ["wrap-2", "agent_demo", "(replay)"],
        ["demo-2", "└", "agent-demo"],
        ["wrap-1", "agent_demo", "completed"],
        ["demo-1", "└", "agent-demo"],
    ]
    assert "(3 rows not stored)" in lines[1]
    # Each call once: the children are in their parents' totals; the replay spent nothing.
    assert lines[6] == "3 runs: 2 LLM calls, 200 tokens in, 20 out, $1.00 (1 replay not counted)"
    # A filter finds the execution a matching child run belongs to.
    named = cli("runs", "--name", "agent-demo").stdout.splitlines()
    assert [line.split()[0] for line in named[1:-1]] == ["wrap-2", "demo-2", "wrap-1", "demo-1"]
    data = json.loads(cli("runs", "--json").stdout)
    assert [r["id"] for r in data["runs"]] == ["lossy", "wrap-2", "wrap-1"]
    assert [c["id"] for c in data["runs"][2]["children"]] == ["demo-1"]
    assert data["runs"][2]["children"][0]["parent_run_id"] == "wrap-1"
    assert data["runs"][1]["replay_of"] == "wrap-1"
    assert data["runs"][0]["write_errors"] == 3
    assert data["totals"]["cost_usd"] == 1.0


def test_a_replay_is_marked_and_spends_nothing(cli: Cli, tmp_path: Path) -> None:
    assert cli("run", "-q", str(PIPELINE)).returncode == 0
    done = cli("replay", "-q", "last", str(PIPELINE))
    assert done.returncode == 0, done.stderr
    original, replay = read_runs(tmp_path / ".steptrace" / "runs.db")
    assert (original.run.replay_of, replay.run.replay_of) == (None, original.id)
    assert replay.run.cost_usd == original.run.cost_usd  # what it would have cost
    lines = cli("runs", "--color", "never").stdout.splitlines()
    assert [line.split()[:3] for line in lines[1:3]] == [
        [replay.id, "pipeline", "(replay)"],
        [original.id, "pipeline", "completed"],
    ]
    assert (
        lines[3] == "2 runs: 2 LLM calls, 300 tokens in, 60 out, $0.000420 (1 replay not counted)"
    )
    with SQLiteStore(tmp_path / ".steptrace" / "runs.db") as store:
        assert [(a.key, a.llm_calls) for a in store.aggregate("model")] == [("test-model", 2)]
    shown = cli("show", replay.id, "--color", "never").stdout
    assert f"  replay of {original.id}: its calls were answered from that run" in shown
