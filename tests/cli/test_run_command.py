"""``steptrace run``: the script runs as ``__main__`` inside a stored run, its
exit code comes back, and the store holds exactly what it did."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import EXAMPLES, PIPELINE, Cli, read_runs


def test_a_script_runs_inside_a_stored_run_and_the_report_shows_its_ledger(
    cli: Cli, tmp_path: Path
) -> None:
    done = cli("run", str(PIPELINE))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("summarize says: ")  # the script's own output, on stdout
    assert "run `pipeline` completed: 2 LLM calls, 300 tokens in, 60 out, $0.000420" in (
        done.stderr
    )
    ledger = [
        line.split() for line in done.stderr.splitlines() if line.startswith(("fetch", "summ"))
    ]
    assert ledger == [
        [
            "fetch",
            "analyst",
            "test-model",
            "completed",
            "100",
            "20",
            "1",
            "0.000140",
            "120/1000",
            "tok",
        ],
        ["summarize", "analyst", "test-model", "completed", "200", "40", "1", "0.000280", "-"],
    ]
    (run,) = read_runs(tmp_path / ".steptrace" / "runs.db")
    assert f"steptrace show {run.id}" in done.stderr
    assert (run.name, run.status) == ("pipeline", "completed")
    assert (run.run.input_tokens, run.run.output_tokens, run.run.llm_calls) == (300, 60, 2)
    assert run.run.cost_usd == 0.00042
    assert run.run.metadata == {"script": str(PIPELINE), "argv": []}
    assert [(s.name, s.status, s.total_tokens) for s in run.completed_steps] == [
        ("fetch", "completed", 120),
        ("summarize", "completed", 240),
    ]


def test_arguments_after_the_script_are_the_scripts_even_when_they_look_like_ours(
    cli: Cli, tmp_path: Path
) -> None:
    done = cli("run", "--name", "named", str(PIPELINE), "--exit", "0", "--quiet", "--store", "x")
    assert done.returncode == 0, done.stderr
    (run,) = read_runs(tmp_path / ".steptrace" / "runs.db")
    assert run.name == "named"
    assert run.run.metadata["argv"] == ["--exit", "0", "--quiet", "--store", "x"]
    assert not (tmp_path / "x").exists()


def test_the_scripts_exit_code_is_the_commands_and_a_nonzero_one_fails_the_run(
    cli: Cli, tmp_path: Path
) -> None:
    done = cli("run", str(PIPELINE), "--exit", "3")
    assert done.returncode == 3, done.stderr
    (run,) = read_runs(tmp_path / ".steptrace" / "runs.db")
    assert (run.status, run.run.error) == ("failed", "SystemExit: 3")
    assert run.run.llm_calls == 2  # what it did before exiting is kept


def test_an_uncaught_exception_prints_its_traceback_exits_1_and_stores_a_failed_run(
    cli: Cli, tmp_path: Path
) -> None:
    done = cli("run", str(PIPELINE), "--raise")
    assert done.returncode == 1
    traceback = done.stderr[done.stderr.index("Traceback") :]
    assert traceback.splitlines()[1].startswith(f'  File "{PIPELINE}"')  # no runpy frames
    assert "<frozen runpy>" not in done.stderr
    assert "steptrace/cli" not in done.stderr
    assert 'raise ValueError("boom")' in traceback
    assert "\nValueError: boom\n" in done.stderr
    (run,) = read_runs(tmp_path / ".steptrace" / "runs.db")
    assert (run.status, run.run.error) == ("failed", "ValueError: boom")
    assert [(s.name, s.status, s.error) for s in run.completed_steps] == [
        ("fetch", "completed", None),
        ("summarize", "completed", None),
        ("explode", "failed", "ValueError: boom"),
    ]


def test_a_string_exit_code_is_printed_and_gives_1(cli: Cli, tmp_path: Path) -> None:
    script = tmp_path / "bye.py"
    script.write_text("import sys\nsys.exit('giving up: no input')\n")
    done = cli("run", str(script))
    assert done.returncode == 1
    assert "giving up: no input" in done.stderr
    (run,) = read_runs(tmp_path / ".steptrace" / "runs.db")
    assert (run.name, run.status) == ("bye", "failed")


def test_the_script_sees_itself_as_main_with_its_argv_and_its_directory_on_the_path(
    cli: Cli, tmp_path: Path
) -> None:
    (tmp_path / "helper.py").write_text("VALUE = 'imported from next to the script'\n")
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys\nimport steptrace\nfrom helper import VALUE\n"
        "print(__name__, sys.argv, VALUE, steptrace.current_run().name)\n"
    )
    done = cli("run", str(script), "a", "--b")
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout
        == f"__main__ {[str(script), 'a', '--b']} imported from next to the script probe\n"
    )


def test_store_location_comes_from_the_option_or_the_environment(cli: Cli, tmp_path: Path) -> None:
    assert cli("run", "-q", "--store", "a.db", str(PIPELINE)).returncode == 0
    assert cli("run", "-q", str(PIPELINE), env={"STEPTRACE_STORE": "b.db"}).returncode == 0
    assert cli("--store", "c.db", "run", str(PIPELINE)).returncode == 0
    assert [len(read_runs(tmp_path / name)) for name in ("a.db", "b.db", "c.db")] == [1, 1, 1]
    assert not (tmp_path / ".steptrace").exists()


def test_no_content_stores_usage_but_no_prompt_or_response(cli: Cli, tmp_path: Path) -> None:
    from steptrace.store import SQLiteStore

    assert cli("run", "--no-content", str(PIPELINE)).returncode == 0
    (run,) = read_runs(tmp_path / ".steptrace" / "runs.db")
    assert run.run.llm_calls == 2
    with SQLiteStore(tmp_path / ".steptrace" / "runs.db") as store:
        transcripts = store.transcripts(run.id)
    assert [(t.request, t.response) for t in transcripts] == [(None, None), (None, None)]


def test_a_missing_script_is_an_error_that_runs_nothing(cli: Cli, tmp_path: Path) -> None:
    done = cli("run", "nowhere.py")
    assert done.returncode == 1
    assert f"steptrace: error: no script at {tmp_path / 'nowhere.py'}" in done.stderr
    assert not (tmp_path / ".steptrace").exists()


def test_runs_the_script_opens_itself_are_stored_and_reported(cli: Cli, tmp_path: Path) -> None:
    done = cli("run", str(EXAMPLES / "agent_demo.py"))
    assert done.returncode == 0, done.stderr
    runs = read_runs(tmp_path / ".steptrace" / "runs.db")
    assert [(r.name, r.status) for r in runs] == [
        ("agent_demo", "completed"),
        ("agent-demo", "completed"),
    ]
    _wrapper, demo = runs
    assert "the script's work is in its own runs below" in done.stderr
    assert f"run {demo.id} `agent-demo` completed" in done.stderr
    assert done.stderr.endswith(f"stored in .steptrace/runs.db: steptrace show {demo.id}\n")
    assert demo.run.llm_calls > 5
    assert demo.events
    assert {s.status for s in demo.completed_steps} >= {"completed", "skipped"}


def test_one_execution_is_one_entry_with_the_scripts_runs_under_it(
    cli: Cli, tmp_path: Path
) -> None:
    done = cli("run", str(EXAMPLES / "agent_demo.py"))
    assert done.returncode == 0, done.stderr
    wrapper, demo = read_runs(tmp_path / ".steptrace" / "runs.db")
    assert (wrapper.name, demo.name) == ("agent_demo", "agent-demo")
    assert demo.run.parent_run_id == wrapper.id
    assert wrapper.child_run_ids == [demo.id]
    listed = json.loads(cli("runs", "--json").stdout)
    (entry,) = listed["runs"]
    assert entry["id"] == wrapper.id
    assert [child["id"] for child in entry["children"]] == [demo.id]
    # The wrapper's usage is its child's: counted once.
    assert listed["totals"]["llm_calls"] == demo.run.llm_calls
    assert entry["cost_usd"] == demo.run.cost_usd


def test_an_execution_replays_from_its_one_entry(cli: Cli, tmp_path: Path) -> None:
    """The entry `runs` lists for a script is the wrapper run; replaying it
    answers the calls its child runs made, and the new runs are all replays."""
    assert cli("run", "-q", str(EXAMPLES / "agent_demo.py")).returncode == 0
    (entry,) = json.loads(cli("runs", "--json").stdout)["runs"]
    done = cli("replay", "-q", entry["id"], str(EXAMPLES / "agent_demo.py"))
    assert done.returncode == 0, done.stderr
    calls = entry["llm_calls"]
    assert f"replayed run {entry['id']}: {calls} of {calls} recorded call(s) answered" in (
        done.stderr
    )
    replay, demo = read_runs(tmp_path / ".steptrace" / "runs.db")[-2:]
    assert (replay.run.replay_of, demo.run.replay_of) == (entry["id"], entry["id"])
    assert demo.run.parent_run_id == replay.id
    listed = json.loads(cli("runs", "--json").stdout)
    assert [r["id"] for r in listed["runs"]] == [replay.id, entry["id"]]
    assert listed["totals"]["llm_calls"] == calls  # the replay spent nothing
