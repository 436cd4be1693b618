"""``steptrace replay``: the script again, offline, every LLM call answered
from the stored run's transcripts, the new run stored; a run stored without
content cannot be replayed and the error says why."""

from __future__ import annotations

from pathlib import Path

from steptrace.store import SQLiteStore

from .conftest import PIPELINE, Cli, Recorded, read_runs


def _responses(store: Path, run_id: str) -> list[str]:
    with SQLiteStore(store) as opened:
        return [str(t.response["text"]) for t in opened.transcripts(run_id) if t.response]


def test_a_replay_answers_with_the_recorded_outputs_and_is_stored(recorded: Recorded) -> None:
    # The script's own provider would end its answers with " (replayed)": the
    # recorded answers end with " (recorded)".
    done = recorded.cli(
        "replay", recorded.run_id, str(PIPELINE), env={"PIPELINE_SALT": " (replayed)"}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(" (recorded)")
    assert f"replayed run {recorded.run_id}: 2 of 2 recorded call(s) answered" in done.stderr
    original, replay = read_runs(recorded.store)[-2:]
    assert original.id == recorded.run_id
    assert replay.run.metadata == {"script": str(PIPELINE), "argv": [], "replay_of": original.id}
    assert replay.status == "completed"
    assert _responses(recorded.store, replay.id) == _responses(recorded.store, original.id)
    assert _responses(recorded.store, original.id)[0].endswith(" (recorded)")
    assert [(s.name, s.input_tokens, s.output_tokens) for s in replay.completed_steps] == [
        ("fetch", 100, 20),
        ("summarize", 200, 40),
    ]
    chats = [s for s in replay.spans if s.kind == "llm_call"]
    assert {s.metadata["gen_ai.system"] for s in chats} == {"replay"}


def test_the_cassette_can_be_kept(recorded: Recorded, tmp_path: Path) -> None:
    cassette = tmp_path / "calls.jsonl"
    done = recorded.cli("replay", "--cassette", str(cassette), "-q", "last", str(PIPELINE))
    assert done.returncode == 0, done.stderr
    lines = cassette.read_text().splitlines()
    assert len(lines) == 3  # the header and two calls
    assert f"cassette kept at {cassette}" in done.stderr
    assert "fetch notes on batteries" in lines[1]


def test_a_call_the_stored_run_did_not_make_fails_the_replay(recorded: Recorded) -> None:
    done = recorded.cli("replay", "--strict-order", recorded.run_id, str(PIPELINE), "--raise")
    assert done.returncode == 1  # explode() raises after the two replayed calls
    assert "ValueError: boom" in done.stderr
    other = recorded.workdir / "other.py"
    other.write_text(
        "import steptrace.llm as llm\n"
        "llm.configure(provider=llm.ScriptedProvider(['never used']))\n"
        "print(llm.llm_call('a question nobody asked', model='test-model', max_tokens=5).text)\n"
    )
    missing = recorded.cli("replay", recorded.run_id, str(other))
    assert missing.returncode == 1
    assert "ReplayMissing: no recorded response for this request (model 'test-model'" in (
        missing.stderr
    )
    assert "never used" not in missing.stdout
    assert read_runs(recorded.store)[-1].status == "failed"


def test_a_run_stored_without_content_cannot_be_replayed(cli: Cli, tmp_path: Path) -> None:
    assert cli("run", "-q", "--no-content", str(PIPELINE)).returncode == 0
    done = cli("replay", "last", str(PIPELINE))
    assert done.returncode == 1
    (run,) = read_runs(tmp_path / ".steptrace" / "runs.db")
    assert done.stderr.startswith(
        f"steptrace: error: run {run.id} was stored without content (steptrace run "
        "--no-content, or STEPTRACE_CAPTURE_CONTENT=0): 2 of its 2 LLM call(s) have no "
        "prompt or response to replay."
    )
    assert len(read_runs(tmp_path / ".steptrace" / "runs.db")) == 1  # nothing was run


def test_a_replay_reaches_no_network(recorded: Recorded) -> None:
    script = recorded.workdir / "dial.py"
    script.write_text(
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('192.0.2.1', 443), timeout=5)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    done = recorded.cli("replay", recorded.run_id, str(script), "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "NetworkBlocked\n"
