"""``steptrace run SCRIPT.py [ARGS...]``: a script inside a recorded run.

The run is named after the script (``--name`` to choose), stored while it
goes (``record_runs``: ``--store`` / ``$STEPTRACE_STORE`` / the default;
``--no-content`` keeps prompts and responses out of the store), shown live
(``_live``) unless ``--quiet``, and reported at the end on stderr: each run's
ledger and totals (the one ``steptrace`` opened and any the script opened
itself), and where it was stored. The exit code is the script's.
``record_script`` is shared with ``replay``, which wraps the script in its
own context.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..report import ledger_table, totals_line
from ..spans import add_span_processor, remove_span_processor
from ..store import StoreWriter, record_runs, store_location
from ._common import CliError
from ._live import LiveDisplay
from ._render import Style, format_duration, terminal_lines, terminal_text, wants_colour
from ._script import RunsSeen, check_script, run_script

if TYPE_CHECKING:
    from .._run import Run

__all__ = ["add_parser", "add_script_arguments", "record_script"]

EXAMPLES = """\
examples:
  steptrace run agent.py                       run it, recorded, with live progress
  steptrace run agent.py --topic batteries     arguments after the script go to it
  steptrace run --name nightly --no-content agent.py
  steptrace --store runs.db run agent.py       (or STEPTRACE_STORE=runs.db)

The script runs as `python SCRIPT.py ARGS...` would (as __main__, sys.argv set),
inside steptrace.run(<script name>). Runs the script opens itself are stored
and reported too. The exit code is the script's: its SystemExit code, or 1
for an uncaught exception (the run is then stored as failed).
"""


def add_script_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``run`` and ``replay`` share, and SCRIPT [ARGS...]."""
    parser.add_argument("--name", help="the run's name (default: the script's file name)")
    parser.add_argument(
        "--no-content",
        action="store_true",
        help="store no prompt or response text (usage, spans and events only); "
        "such a run cannot be replayed",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no live progress display")
    parser.add_argument("script", metavar="SCRIPT.py", help="the Python script to run")
    parser.add_argument(
        "script_args",
        nargs=argparse.REMAINDER,
        metavar="ARGS",
        help="arguments for the script (everything after SCRIPT.py)",
    )


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "run",
        help="run a Python script inside a recorded run, with live progress",
        description="Run a Python script inside a steptrace run: stored as it goes, with a "
        "live display of the current step and budgets, then the ledger and summary.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_script_arguments(parser)
    parser.set_defaults(handler=run_run)


def run_run(args: argparse.Namespace) -> int:
    path = check_script(args.script)
    metadata = {"script": str(path), "argv": list(args.script_args)}
    return record_script(args, path, name=args.name or _stem(path), metadata=metadata)


def _stem(path: Path) -> str:
    return path.absolute().name if path.is_dir() else path.stem


def record_script(
    args: argparse.Namespace,
    path: Path,
    *,
    name: str,
    metadata: Mapping[str, Any],
    around: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    after: Callable[[Run, TextIO, Style], None] | None = None,
) -> int:
    """Run the script recorded and displayed; report; return its exit code.

    ``around()`` is entered just around the script (replay's offline
    provider); ``after`` adds lines to the report."""
    writer = _start_writer(args.store, args.no_content)
    out = sys.stderr
    style = Style(wants_colour(out, args.color))
    seen = RunsSeen()
    add_span_processor(seen)
    display: LiveDisplay | None = None
    if not args.quiet:
        display = LiveDisplay(out, tty=bool(out.isatty()), style=style)
        add_span_processor(display)
        display.start()
    try:
        with around():
            result = run_script(path, args.script_args, name=name, metadata=metadata)
    finally:
        if display is not None:
            display.stop()
            remove_span_processor(display)
        remove_span_processor(seen)
        writer.stop()
    shown = report(seen.runs, result.run, out, style)
    if after is not None:
        after(result.run, out, style)
    _report_store(writer, args.store, shown, out, style)
    return result.exit_code


def _start_writer(target: str | None, no_content: bool) -> StoreWriter:
    try:
        return record_runs(target, capture_content=False if no_content else None)
    except ImportError as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:
        raise CliError(
            f"cannot open the run store at {store_location(target)}: "
            f"{type(exc).__name__}: {exc}; the script was not run"
        ) from None


def report(runs: list[Run], wrapper: Run, out: TextIO, style: Style) -> list[Run]:
    """Each run's ledger and totals; the wrapper run in one line when the
    script did its work in runs of its own. Returns the runs worth a look."""
    others = [r for r in runs if r is not wrapper]
    # The wrapper's usage includes its child runs': "empty" means no calls of its own.
    empty = bool(others) and not wrapper.completed_steps and not wrapper.llm_trace
    for run in [wrapper, *others]:
        if run is wrapper and empty:
            out.write(
                "\n"
                + style.paint(
                    f"run {run.id} `{run.name}` {run.status} "
                    "(the script's work is in its own runs below)",
                    "dim",
                )
                + "\n"
            )
            continue
        duration = format_duration(None if run.ended_at is None else run.duration_ms / 1000)
        title = (
            style.paint(f"run {run.id} `{run.name}`", "bold")
            + " "
            + style.status(run.status)
            + style.paint(f" in {duration}", "bold")
        )
        out.write("\n" + title + "\n")
        steps = run.completed_steps
        out.write(terminal_lines(ledger_table(run) if steps else "(no steps)") + "\n")
        summary = run.summary()
        statuses = ", ".join(f"{n} {s}" for s, n in summary["steps"].items() if n)
        totals = totals_line(run) + (f"; steps: {statuses}" if statuses else "")
        out.write(terminal_text(totals) + "\n")
        if run.error:
            # Its first line: the traceback above holds the rest (a diff, say).
            first, *rest = run.error.splitlines() or [""]
            out.write(style.paint(f"error: {first}{' ...' if rest else ''}", "red") + "\n")
    return others if empty else [wrapper, *others]


def _report_store(
    writer: StoreWriter, target: str | None, runs: list[Run], out: TextIO, style: Style
) -> None:
    location = store_location(target)
    if writer.failures or writer.dropped:
        out.write(
            style.paint(
                f"warning: the store at {location} did not record everything "
                f"({writer.failures} failed writes, {writer.dropped} records dropped); "
                "see the log above",
                "yellow",
            )
            + "\n"
        )
    shows = ", ".join(f"steptrace show {run.id}" for run in runs)
    out.write(style.paint(f"stored in {location}: {shows}", "dim") + "\n")
