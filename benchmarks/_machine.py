"""What every benchmark prints about where it ran: the checkout's revision and
the machine's load average (a busy shared machine explains noisy figures)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import steptrace

__all__ = ["load_average", "revision"]


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
