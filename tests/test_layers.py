"""The architecture's import contracts (``[tool.importlinter]`` in
pyproject.toml, checked by ``lint-imports`` in scripts/test.sh) cover the
whole package and catch the breaks they are there for.

What the contracts cannot say themselves is checked here: that every core
module sits in a layer and every underscore module of a subpackage is
protected (a new module cannot slip past them), and that the core imports
nothing outside the standard library at all (the contract can only name the
third-party packages it knows). Each break is proved to fail ``lint-imports``
on a copy of the package with one bad import added.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "steptrace"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

CONFIG: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
    "importlinter"
]
CONTRACTS: list[dict[str, Any]] = CONFIG["contracts"]
CORE = sorted(p for p in PACKAGE.glob("*.py"))
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_core_module_sits_in_a_layer() -> None:
    (layers,) = [c for c in CONTRACTS if c["type"] == "layers"]
    named = {name.strip() for layer in layers["layers"] for name in layer.split("|")}
    missing = {p.stem for p in CORE if p.name != "__init__.py"} - named
    assert not missing, f"core modules in no layer of pyproject.toml: {sorted(missing)}"
    assert set(SUBPACKAGES) <= named, "each subpackage is a layer of its own"


def test_every_underscore_module_of_a_subpackage_is_protected() -> None:
    protected = {
        module
        for contract in CONTRACTS
        if contract["type"] == "protected"
        for module in contract["protected_modules"]
    }
    private = {
        module_name(path)
        for sub in SUBPACKAGES
        for path in (PACKAGE / sub).rglob("*.py")
        if any(
            part.startswith("_") and part not in ("__init__", "__main__")
            for part in path.relative_to(PACKAGE / sub).with_suffix("").parts
        )
    }
    assert private - protected == set(), "add these to a protected contract in pyproject.toml"
    assert protected - private == set(), "these protected modules no longer exist"


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of what ``path`` imports that are neither the standard
    library nor steptrace (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.partition(".")[0]
            if top != "steptrace" and top not in sys.stdlib_module_names:
                found.add(top)
    return found


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_the_core_imports_only_the_standard_library(path: Path) -> None:
    assert third_party_imports(path) == set()


def lint(project: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the package in ``project/src`` with the project's config."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(project / "pyproject.toml")],
        cwd=project,
        env={"PYTHONPATH": str(project / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_contracts_hold() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


BREAKS = {
    "the store imports the portal": ("store/_liveness.py", "import steptrace.portal", "Layers"),
    "budget imports the CLI": ("budget.py", "from steptrace import cli", "Layers"),
    "the CLI reads a store's private module": (
        "cli/_tree.py",
        "from steptrace.store import _sqlite",
        "Only steptrace.store imports",
    ),
    "the portal runs its own SQL": (
        "portal/_api.py",
        "from steptrace.store import _queries",
        "The portal reads stores only through",
    ),
    "the portal imports the CLI's renderer": (
        "portal/_api.py",
        "from steptrace.cli import _render",
        "Layers",
    ),
    "export imports an llm internal": (
        "export/_files.py",
        "from steptrace.llm import _call",
        "Only steptrace.llm imports",
    ),
    "the core imports a third-party package": (
        "events.py",
        "import pydantic",
        "The core imports the standard library only",
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_a_broken_layer_fails_lint_imports(case: str, tmp_path: Path) -> None:
    target, line, contract = BREAKS[case]
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(PACKAGE, tmp_path / "src" / "steptrace", ignore=shutil.ignore_patterns("*.pyc"))
    module = tmp_path / "src" / "steptrace" / target
    module.write_text(module.read_text() + f"\n{line}  # the break under test\n")
    result = lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert any(row.startswith(contract) for row in broken), result.stdout
