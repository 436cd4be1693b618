"""The README's main demo: a real agent run on the scripted provider, as documented."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from steptrace.testing import (
    FAKE_OPENAI_API_KEY,
    FakeOpenAI,
    OpenAIReply,
    OpenAIToolCall,
    RecordedRequest,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO = EXAMPLES / "agent_demo.py"
WORKSPACE = EXAMPLES / "workspace"
EVENT_TYPES = (
    "LlmCall",
    "ToolExecution",
    "ToolRejected",
    "LoopIntervention",
    "ContextCompaction",
    "PhaseChange",
    "LoopComplete",
)


def hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run_demo(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, str(DEMO), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def section(out: str, title: str) -> list[str]:
    """The lines under ``title`` up to the next blank line."""
    lines = out.splitlines()
    start = lines.index(title) + 1
    end = lines.index("", start) if "" in lines[start:] else len(lines)
    return lines[start:end]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, dict[str, str]]:
    """One offline run, into a kept copy of the workspace, with the bundled
    files' hashes from before it."""
    before = hashes(WORKSPACE)
    workdir = tmp_path_factory.mktemp("demo") / "workspace"
    done = run_demo("--workdir", str(workdir))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout, workdir, before


def test_the_ledger_lists_each_step_with_the_one_out_of_budget_skipped(
    demo: tuple[str, Path, dict[str, str]],
) -> None:
    out, _, _ = demo
    rows = [line.split() for line in section(out, "step ledger")[2:] if not line.startswith(" ")]
    assert [(row[0], row[1], row[3]) for row in rows] == [
        ("review_workspace", "maintainer", "completed"),
        ("draft_release_notes", "maintainer", "skipped"),
        ("write_headline", "maintainer", "completed"),
    ]
    assert "cannot afford the next call within its max_tokens budget" in out
    assert re.search(r"^cost: run `agent-demo` completed: 15 LLM calls, ", out, re.M)


def test_every_agent_event_type_is_produced(demo: tuple[str, Path, dict[str, str]]) -> None:
    out, _, _ = demo
    counts = {
        fields[0]: int(fields[1])
        for fields in (line.split() for line in section(out, "agent events (all loops of the run)"))
    }
    for kind in EVENT_TYPES:
        assert counts.get(kind, 0) >= 1, kind
    assert counts["LoopIntervention"] >= 2
    assert "warn search" in out
    assert "block search" in out
    assert "tool `write_file` is not available in phase `plan`" in out
    assert "plan -> act" in out
    assert "act -> verify" in out
    loops = section(out, "agent loops")
    assert loops[0].split()[:2] == ["review_workspace", "done"]
    assert loops[2].split()[:2] == ["draft_release_notes", "budget_exhausted"]


def test_progress_is_one_line_per_model_request_and_tool_call_off_a_terminal(
    demo: tuple[str, Path, dict[str, str]],
) -> None:
    out, _, _ = demo
    assert "\r" not in out
    progress = re.findall(
        r"^  \w+ +iter +\d+  (model|tool) +([\w.-]+) +(\w+) +run so far:", out, re.M
    )
    counts = {
        fields[0]: int(fields[1])
        for fields in (line.split() for line in section(out, "agent events (all loops of the run)"))
    }
    assert sum(kind == "model" for kind, _, _ in progress) == counts["LlmCall"]
    assert sum(kind == "tool" for kind, _, _ in progress) == counts["ToolExecution"]
    assert ("tool", "write_file", "ok") in progress
    assert re.search(r"^  draft_release_notes  skipped \(step: [\d,]+ tokens", out, re.M)


def test_the_summary_is_written_in_the_copy_and_the_bundled_workspace_is_unchanged(
    demo: tuple[str, Path, dict[str, str]],
) -> None:
    out, workdir, before = demo
    assert hashes(WORKSPACE) == before
    assert "STATUS.md" not in before
    status = (workdir / "STATUS.md").read_text(encoding="utf-8")
    assert "blocked on the PostgreSQL 16 restore test" in status
    assert "- Document the new `[wal]` section of config.toml (Ines)" in status
    assert "STATUS.md written in the copy" in out


def test_the_run_is_deterministic_apart_from_run_ids_and_durations(
    demo: tuple[str, Path, dict[str, str]],
) -> None:
    out, _, before = demo
    again = run_demo()  # into a temporary directory this time
    assert again.returncode == 0, again.stderr
    assert hashes(WORKSPACE) == before
    run_id = re.compile(r"^run \S+$", re.M)
    assert run_id.sub("run ID", again.stdout) == run_id.sub("run ID", out)


def test_live_without_an_api_key_says_so_and_exits_2() -> None:
    done = run_demo("--live")
    assert done.returncode == 2
    assert "OPENAI_API_KEY or ANTHROPIC_API_KEY" in done.stderr
    assert done.stdout == ""


def test_live_runs_the_same_script_through_the_openai_sdk() -> None:
    def model(request: RecordedRequest) -> str | OpenAIReply:
        tools = [t["function"]["name"] for t in request.body.get("tools", [])]
        if "next_phase" in tools:  # a model that moves straight through the phases
            return OpenAIReply(tool_calls=[OpenAIToolCall(name="next_phase")])
        return "Nothing is blocking 0.4." if tools else "tidewater 0.4: on track"

    with FakeOpenAI(model) as fake:
        done = run_demo("--live", OPENAI_API_KEY=FAKE_OPENAI_API_KEY, OPENAI_BASE_URL=fake.base_url)
        models = {body["model"] for body in fake.requests}
    assert done.returncode == 0, done.stderr
    assert "agent demo (live, openai): gpt-4o-mini" in done.stdout
    assert "answer: Nothing is blocking 0.4." in done.stdout
    assert "headline: tidewater 0.4: on track" in done.stdout
    assert models == {"gpt-4o-mini", "gpt-4o"}
