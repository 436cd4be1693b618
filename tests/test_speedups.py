"""Every compiled accelerator in ``src/steptrace/_speedups`` is built and loads.

Locally a missing C compiler skips these (the pure-Python paths still run and
are tested); in CI (``STEPTRACE_REQUIRE_SERVICES=1``) a missing build fails,
since the equivalence tests against the pure-Python reference would otherwise
compare the reference with itself.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

import steptrace._speedups as speedups

SOURCES = sorted(Path(speedups.__file__).parent.glob("*.c"))


def require_built(name: str) -> None:
    """Skip (locally) or fail (in CI) unless the accelerator ``name`` is built."""
    try:
        importlib.import_module(f"steptrace._speedups.{name}")
    except ImportError as missing:
        reason = (
            f"compiled accelerator steptrace._speedups.{name} not built ({missing}): "
            "install a C compiler (apt-get install gcc) and rerun scripts/setup.sh dev"
        )
        if os.environ.get("STEPTRACE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.mark.parametrize("source", SOURCES, ids=[source.stem for source in SOURCES])
def test_each_accelerator_is_built(source: Path) -> None:
    require_built(source.stem)


def test_load_honours_pure_python_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speedups, "PURE_PYTHON", True)
    for source in SOURCES:
        assert speedups.load(source.stem) is None
    assert speedups.load("no_such_accelerator") is None
