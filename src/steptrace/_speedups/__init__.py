"""Optional compiled accelerators for the core's hottest paths.

Each C module here mirrors one pure-Python function, which stays the reference:
the module that owns the function imports the accelerator through ``load`` and
falls back to its own code when it is missing (no compiler at install time) or
disabled (``STEPTRACE_PURE_PYTHON=1``). Tests run both and hold them equal.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE_PYTHON = os.environ.get("STEPTRACE_PURE_PYTHON", "") not in ("", "0")
"""``STEPTRACE_PURE_PYTHON=1`` turns every accelerator off, for this process."""


def load(name: str) -> ModuleType | None:
    """The compiled module ``steptrace._speedups.<name>``, or None when it was not
    built or accelerators are turned off."""
    if PURE_PYTHON:
        return None
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ImportError:
        return None
