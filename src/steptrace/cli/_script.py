"""Running a user's script inside a run, the way ``python SCRIPT.py`` would.

``run_script`` executes the file with ``runpy`` as ``__main__``, with
``sys.argv`` set to the script and its arguments and the script's directory
first on ``sys.path``, inside ``steptrace.run(name)``. It returns the exit
code Python would have given: ``SystemExit``'s code (``None`` is 0, a
non-integer is printed and gives 1), 1 for an uncaught exception (its
traceback printed from the script's first frame, without steptrace's), 130
for Ctrl-C. The run ends ``completed`` for exit code 0 and ``failed``
otherwise. ``RunsSeen`` collects every run that starts meanwhile: the
script may open runs of its own.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._run import run as open_run
from ..spans import Span
from ._common import CliError
from ._render import terminal_lines, terminal_text

if TYPE_CHECKING:
    from .._run import Run

__all__ = ["RunsSeen", "ScriptResult", "check_script", "run_script"]


class RunsSeen:
    """A span processor keeping every (non-default) run that starts, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs: list[Run] = []

    def on_start(self, span: Span) -> None:
        run: Run | None = getattr(span, "run", None)
        if run is not None and not run.is_default and span is run.root:
            with self._lock:
                self.runs.append(run)

    def on_end(self, span: Span) -> None:
        pass


@dataclass(frozen=True, slots=True)
class ScriptResult:
    exit_code: int
    run: Run
    """The run ``steptrace`` opened around the script."""


def check_script(text: str) -> Path:
    """The script's path; ``CliError`` when there is nothing to run there."""
    path = Path(text)
    if not path.exists():
        raise CliError(f"no script at {path.absolute()}")
    if path.is_dir() and not (path / "__main__.py").is_file():
        raise CliError(f"{path} is a directory without a __main__.py: give a Python script")
    return path


def run_script(
    path: Path,
    args: Sequence[str],
    *,
    name: str,
    metadata: Mapping[str, Any],
) -> ScriptResult:
    """Run the script at ``path`` inside a new run (see the module docstring)."""
    saved_argv = sys.argv
    saved_path = list(sys.path)
    sys.argv = [os.fspath(path), *args]
    sys.path[0:1] = [os.fspath(path.absolute().parent if path.is_file() else path.absolute())]
    run = open_run(name, metadata=metadata)
    run.__enter__()
    error: BaseException | None = None
    code = 0
    try:
        runpy.run_path(os.fspath(path), run_name="__main__")
    except SystemExit as exc:
        code = exit_code(exc)
        error = exc if code else None
    except KeyboardInterrupt as exc:
        error, code = exc, 130
        print("KeyboardInterrupt", file=sys.stderr)
    except BaseException as exc:
        error, code = exc, 1
        print_script_traceback(exc, path)
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
        run.__exit__(
            None if error is None else type(error),
            error,
            None if error is None else error.__traceback__,
        )
    return ScriptResult(code, run)


def exit_code(exc: SystemExit) -> int:
    """What Python exits with for this ``SystemExit`` (printing a message code)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(terminal_text(code), file=sys.stderr)
    return 1


def print_script_traceback(exc: BaseException, path: Path) -> None:
    """The traceback Python would print, starting at the script's own frames."""
    script = os.path.realpath(path / "__main__.py" if path.is_dir() else path)
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and os.path.realpath(tb.tb_frame.f_code.co_filename) != script:
        tb = tb.tb_next
    # No frame of the script (a SyntaxError while compiling it): the exception
    # itself says where.
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    sys.stderr.write(terminal_lines(text))
