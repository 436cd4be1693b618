"""examples/litellm_demo.py runs offline and shows the refused request's step skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "litellm_demo.py"


def test_the_litellm_demo_skips_the_step_whose_request_cannot_fit() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line}
    assert rows["translate"][3] == "skipped"
    assert rows["explain"][3] == "completed"
    assert rows["summarize"][3] == "completed"
    assert "run `litellm-demo` completed: 4 LLM calls, 940 tokens in, 210 out" in done.stdout
    assert "4 requests reached the server" in done.stdout
