"""What every benchmark prints about where it ran: the checkout's revision and
the machine's load average (a busy shared machine explains noisy figures);
and the one way the benchmarks count CPU instructions (callgrind), a figure
such a machine does not disturb."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import steptrace

__all__ = ["instructions", "load_average", "revision"]


def revision() -> str:
    """The checkout's git commit, ``+dirty`` when ``src/`` has local changes,
    or ``unknown``."""
    root = Path(steptrace.__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, or ``n/a``."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def instructions(command: list[str]) -> int:
    """The CPU instructions ``command`` executes, counted by valgrind's
    callgrind, with one hash seed so dict and set layouts (hence counts)
    repeat exactly."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found[1])
