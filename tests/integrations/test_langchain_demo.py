"""examples/langchain_demo.py runs offline: tools recorded with the model's
ids, and the review node skipped without sending its request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "langchain_demo.py"


def test_the_langchain_demo_records_tools_and_skips_the_review() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    events = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and "{" in line]
    assert events == ["LlmCall", "ToolExecution", "ToolExecution", "LlmCall"]
    assert "'tool_use_id': 'call_" in out
    assert "review -> (none: the review node ran out of budget)" in out
    review = next(line.split() for line in out.splitlines() if line.startswith("review  "))
    assert review[3] == "skipped"
    assert "run `langchain-demo` completed: 2 LLM calls, 250 tokens in, 60 out" in out
    assert "2 requests reached the servers" in out
