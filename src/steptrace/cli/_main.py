"""The ``steptrace`` parser and entry point: global options, subcommands, exit codes.

Each subcommand's module adds its own parser (``add_parser``) and sets a
``handler``; ``main`` parses, calls it and turns a ``CliError`` into a
one-paragraph message on stderr. ``--store`` and ``--color`` are accepted
before or after the subcommand (for ``run`` and ``replay``, before SCRIPT:
everything after it belongs to the script).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import (
    _export_command,
    _portal_command,
    _prices_command,
    _replay_command,
    _run_command,
    _runs_command,
    _show_command,
)
from ._common import EXIT_ERROR, EXIT_USAGE, CliError
from ._render import terminal_lines

__all__ = ["build_parser", "main"]

DESCRIPTION = """\
steptrace: run Python LLM agents under hard budgets and read back what they did.
Runs are stored in .steptrace/runs.db under the working directory, or where
--store or $STEPTRACE_STORE points (a file path or a postgresql:// URL)."""

EPILOG = """\
examples:
  steptrace run agent.py --topic batteries     run a script, recorded, with live progress
  steptrace runs --status failed               recent failed runs
  steptrace show last                          the step tree, budgets, ledger, summary
  steptrace export last --format otlp-json     an OpenTelemetry trace file
  steptrace replay last agent.py               re-run offline on the recorded answers
  steptrace prices gpt-4o-mini                 what a model costs
  steptrace portal                             the web viewer on http://127.0.0.1:8765

RUN is a run id, a unique prefix of one, `last` (or `latest`), or a run name
(its latest run). Colour is used only on a terminal, never with NO_COLOR set.

exit codes:
  0  success
  1  an error (a message says what and what to do); `run` and `replay` exit
     with the script's own code instead (1 for an uncaught exception)
  2  a usage error (unknown command or option, bad value)
"""


def _common_options() -> argparse.ArgumentParser:
    # SUPPRESS: a value given before the subcommand is not reset by the
    # subparser's default; ``main`` fills in the real defaults afterwards.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        default=argparse.SUPPRESS,
        metavar="PATH_OR_URL",
        help="the run store: a SQLite file or postgresql:// URL "
        "(default: $STEPTRACE_STORE, else .steptrace/runs.db)",
    )
    common.add_argument(
        "--color",
        "--colour",
        dest="color",
        choices=("auto", "always", "never"),
        default=argparse.SUPPRESS,
        help="colour output: auto (on a terminal, unless NO_COLOR is set), always, never",
    )
    return common


class _CommandsParser(argparse.ArgumentParser):
    """Adds the common options to every subcommand."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        parents = list(kwargs.pop("parents", []) or [])  # type: ignore[call-overload]
        kwargs["parents"] = [*parents, _common_options()]
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steptrace",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options()],
    )
    commands = parser.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=_CommandsParser
    )
    for module in (
        _run_command,
        _runs_command,
        _show_command,
        _export_command,
        _replay_command,
        _prices_command,
        _portal_command,
    ):
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``steptrace`` command with ``argv`` (default: ``sys.argv[1:]``);
    return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "store", None) is None:
        args.store = None
    if getattr(args, "color", None) is None:
        args.color = "auto"
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = handler(args)
    except CliError as exc:
        _flush_quietly()
        print(f"steptrace: error: {terminal_lines(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("steptrace: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`steptrace runs | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    return code


def _flush_quietly() -> None:
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
