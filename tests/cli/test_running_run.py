"""A run still going: ``runs`` and ``show`` read it from another process, with
its usage so far (its totals are written only when it ends)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from .conftest import ENTRY, PIPELINE, cli_env, run_cli


def _listed(workdir: Path) -> list[dict[str, Any]]:
    done = run_cli("runs", "--json", cwd=workdir)
    if done.returncode != 0:  # the store file is not there yet
        return []
    runs: list[dict[str, Any]] = json.loads(done.stdout)["runs"]
    return runs


def test_a_running_run_shows_its_usage_so_far_then_its_totals(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*ENTRY, "run", "-q", str(PIPELINE), "--wait"],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
        runs = _listed(tmp_path)
        # The script waits inside `fetch`, after its call: the call reaches the
        # store within the writer's batch interval.
        while not (runs and runs[0]["llm_calls"] == 1) and time.monotonic() < deadline:
            time.sleep(0.05)
            runs = _listed(tmp_path)
        (running,) = runs
        assert (running["status"], running["ended_at"], running["personas"]) == (
            "running",
            None,
            ["analyst"],
        )
        assert (running["input_tokens"], running["output_tokens"]) == (100, 20)
        shown = run_cli("show", "last", cwd=tmp_path).stdout
        assert f"run {running['id']}  pipeline  running\n" in shown
        assert "so far: 1 LLM calls, 100 tokens in, 20 out, $0.000140" in shown
        assert process.stdin is not None
        process.stdin.write("\n")
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdin is not None:
            process.stdin.close()
    (ended,) = _listed(tmp_path)
    assert (ended["status"], ended["input_tokens"], ended["output_tokens"]) == (
        "completed",
        300,
        60,
    )
