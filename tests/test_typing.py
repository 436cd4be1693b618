"""mypy --strict accepts the typed usage examples and rejects wrong calls.

The second half is what proves ParamSpec keeps the signature: a decorator
typed ``Callable[..., Any]`` would accept every wrong call below.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK_API = ROOT / "tests" / "typing" / "check_api.py"

WRONG = textwrap.dedent(
    """\
    from collections.abc import Iterator

    import steptrace


    @steptrace.step
    def plain(a: int, *, flag: bool = False) -> str:
        return str(a)


    @steptrace.step(model="m", budget={"max_tokens": 10})
    async def coro(question: str) -> int:
        return len(question)


    @steptrace.persona(name="p")
    def gen(n: int) -> Iterator[int]:
        yield n


    class Assistant:
        @steptrace.step
        def greet(self, who: str) -> str:
            return who


    plain("not an int")  # E
    wrong_return: int = plain(1)  # E
    plain(1, flag="yes")  # E
    plain(1, 2)  # E
    Assistant().greet(3)  # E
    wrong_items: list[str] = list(gen(3))  # E


    async def main() -> None:
        wrong_await: str = await coro("q")  # E
        await coro(question=1)  # E
    """
)
# The lines marked ``# E``, 1-based.
WRONG_LINES = {n for n, line in enumerate(WRONG.splitlines(), 1) if line.endswith("# E")}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy_cache")


def _mypy(path: Path, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--strict",
            "--cache-dir",
            str(cache_dir),
            "--no-color-output",
            "--show-error-codes",
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_typed_usage_examples_pass_mypy_strict(cache_dir: Path) -> None:
    assert CHECK_API.is_file()
    result = _mypy(CHECK_API, cache_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 1 source file" in result.stdout


def test_wrong_calls_are_mypy_errors(tmp_path: Path, cache_dir: Path) -> None:
    snippet = tmp_path / "wrong_usage.py"
    snippet.write_text(WRONG)
    result = _mypy(snippet, cache_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    error_lines = {
        int(match.group(1))
        for match in re.finditer(r"wrong_usage\.py:(\d+): error:", result.stdout)
    }
    # Every deliberate mistake is reported, and nothing else is.
    assert len(WRONG_LINES) == 8
    assert error_lines == WRONG_LINES, result.stdout
    assert 'Argument 1 to "plain" has incompatible type "str"; expected "int"' in result.stdout
    assert '"greet" of "Assistant" has incompatible type "int"; expected "str"' in result.stdout
