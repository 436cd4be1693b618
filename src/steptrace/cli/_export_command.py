"""``steptrace export RUN --format jsonl|otlp-json [-o PATH]``: a stored run to a file.

The files are ``steptrace.export.export_run``'s (see ``steptrace.export``):
steptrace's JSON lines, or an OTLP/JSON trace any OpenTelemetry collector
reads. Without ``-o`` the file is ``<run id>.jsonl`` or ``<run id>.otlp.json``
in the working directory; ``-o -`` writes to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..export import export_run
from ._common import CliError, reading_store
from ._render import terminal_json, terminal_text
from ._resolve import resolve_run_id

__all__ = ["add_parser"]

EXAMPLES = """\
examples:
  steptrace export last                                  -> <run id>.jsonl
  steptrace export last --format otlp-json -o trace.json
  steptrace export 20261122-0318 -o - | head
"""

_SUFFIX = {"jsonl": ".jsonl", "otlp-json": ".otlp.json"}


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "export",
        help="write a stored run to a JSON lines or OTLP/JSON file",
        description="Write a stored run to a file: steptrace's JSON lines (jsonl) or an "
        "OpenTelemetry OTLP/JSON trace (otlp-json).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "run", metavar="RUN", help="a run id, a unique prefix of one, `last`, or a run name"
    )
    parser.add_argument(
        "--format", choices=("jsonl", "otlp-json"), default="jsonl", help="file format (jsonl)"
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="where to write (default: <run id>.jsonl or <run id>.otlp.json; - for stdout)",
    )
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    with reading_store(args.store) as store:
        run_id = resolve_run_id(store, args.run)
        stored = store.get_run(run_id)
    if stored is None:
        raise CliError(f"run {run_id} vanished from the store while reading it")
    if args.output == "-":
        with tempfile.TemporaryDirectory(prefix="steptrace-export-") as scratch:
            path = export_run(stored, Path(scratch) / "run", args.format)
            with path.open("r", encoding="utf-8") as source:
                for line in source:  # JSON text: made safe for a terminal as JSON
                    sys.stdout.write(terminal_json(line))
        return 0
    target = Path(args.output) if args.output else Path(run_id + _SUFFIX[args.format])
    if target.is_dir():
        target = target / (run_id + _SUFFIX[args.format])
    try:
        path = export_run(stored, target, args.format)
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    print(
        terminal_text(f"wrote run {run_id} ({args.format}) to {os.fspath(path)}"), file=sys.stderr
    )
    return 0
