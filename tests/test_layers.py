"""The package's layers import only downwards.

The core (``steptrace/*.py``) imports no subpackage; ``llm`` builds on the core
only; ``agent`` on ``llm`` and the core; ``export``, ``store`` and ``shared`` on the core
(and read what the others record); ``testing`` serves tests of everything.
Checked on the source's import statements, so a cycle cannot creep in through
a lazy import either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "steptrace"
SUBPACKAGES = {"llm", "agent", "export", "store", "testing", "shared", "integrations"}

# What each layer may import from the other layers (the core is always allowed).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "llm": set(),
    "agent": {"llm"},
    "export": set(),
    "store": set(),
    "shared": set(),
    "testing": {"llm"},
    # Framework integrations price and estimate as the llm layer does.
    "integrations": {"llm"},
    # The applications at the top: the web viewer reads the store; the CLI
    # drives everything (it runs scripts, replays, exports, serves the portal).
    "portal": {"store"},
    "cli": {"llm", "agent", "store", "export", "testing", "portal", "shared"},
}


def layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else "core"


def imported_layers(path: Path) -> set[str]:
    """The subpackages of steptrace this module imports (relatively or not)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = ("steptrace", *path.relative_to(PACKAGE).parent.parts)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package_parts[: len(package_parts) - node.level + 1])
                target = [*base, *(node.module.split(".") if node.module else [])]
                names = [[*target, alias.name] for alias in node.names]
            else:
                names = [(node.module or "").split(".")]
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        else:
            continue
        for parts in names:
            if len(parts) > 1 and parts[0] == "steptrace" and parts[1] in SUBPACKAGES:
                found.add(parts[1])
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_the_layers_below_it(path: Path) -> None:
    layer = layer_of(path)
    wrong = imported_layers(path) - ALLOWED[layer] - {layer}
    assert not wrong, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(wrong)}"


def test_the_checker_resolves_relative_imports_to_their_layer() -> None:
    # Known imports (a module's own layer counts too): ``from ..llm._call`` two
    # levels up, ``from .providers...`` inside llm, ``from ..llm.providers``
    # in testing.
    assert imported_layers(PACKAGE / "agent" / "_loop.py") == {"agent", "llm"}
    assert imported_layers(PACKAGE / "llm" / "__init__.py") == {"llm"}
    assert imported_layers(PACKAGE / "testing" / "__init__.py") == {"llm", "testing"}
    assert imported_layers(PACKAGE / "_accounting.py") == set()
