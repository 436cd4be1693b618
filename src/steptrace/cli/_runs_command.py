"""``steptrace runs``: the table of recent runs, filtered, with a totals line.

Columns: id, name, status, persona(s), started, duration, tokens, cost. The
personas of a run are those its LLM calls were charged to (one small
aggregate query a row, which also counts its calls of unknown price: a cost
that leaves some out says so, ``$0.1500 + 2 unknown``, as ``steptrace show``
does). ``--since`` takes a span back from now (``30m``,
``2h``, ``7d``, ``1w``) or a date or time (``2026-11-21``,
``2026-11-21T14:00``, local time).

One entry an execution: the list holds top-level runs (filters match a run
or one of its child runs), each followed by the runs opened inside it,
indented (``└``). A parent's usage includes its children's, so the totals
line adds up the top-level entries only, and leaves replays out: a replay's
calls were answered from a stored run and spent nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from datetime import datetime
from typing import Any

from ..store import RunRow, RunStore
from ._common import print_json, reading_store
from ._render import (
    Style,
    format_cost,
    format_duration,
    format_time,
    format_tokens,
    table,
    wants_colour,
)

__all__ = ["add_parser", "parse_since"]

_STATUSES = ("running", "completed", "over_budget", "failed", "interrupted")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

EXAMPLES = """\
examples:
  steptrace runs                          the 20 most recent runs
  steptrace runs --status failed --since 1d
  steptrace runs --name nightly --limit 100
  steptrace runs --persona analyst --json
"""


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "runs",
        help="list recent runs",
        description="List stored runs, newest first, with their usage and a totals line.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--name", help="only runs with this name")
    parser.add_argument("--status", choices=_STATUSES, help="only runs with this status")
    parser.add_argument("--persona", help="only runs with a span of this persona")
    parser.add_argument(
        "--since",
        type=parse_since,
        metavar="WHEN",
        help="only runs started since WHEN: 30m, 2h, 7d, 1w, or a date/time like "
        "2026-11-21 or 2026-11-21T14:00 (local time)",
    )
    parser.add_argument(
        "--limit", type=_positive_int, default=20, metavar="N", help="show at most N runs (20)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run_runs)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_since(text: str, *, now: float | None = None) -> float:
    """``time.time()`` seconds for a ``--since`` value (see the module docstring)."""
    value = text.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", value)
    if match:
        amount, unit = match.groups()
        return (time.time() if now is None else now) - float(amount) * _UNITS[unit]
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cannot read {text!r} as a time: use 30m, 2h, 7d, 1w, or a date/time like "
            "2026-11-21 or 2026-11-21T14:00"
        ) from None


def _so_far(store: RunStore, run: RunRow, children: list[RunRow]) -> RunRow:
    """A running run's usage from its call log and its children's (its totals
    are written at its end)."""
    if run.ended_at is not None:
        return run
    usage = [
        a
        for run_id in (run.id, *(child.id for child in children))
        for a in store.aggregate("model", run_id=run_id)
    ]
    return dataclasses.replace(
        run,
        input_tokens=sum(a.input_tokens for a in usage),
        output_tokens=sum(a.output_tokens for a in usage),
        cost_usd=sum(a.cost_usd for a in usage),
        llm_calls=sum(a.llm_calls for a in usage),
    )


def _own_calls(store: RunStore, run_id: str) -> tuple[list[str], int]:
    """The personas a run's own calls were charged to, and how many of its own
    calls have no known price."""
    groups = store.aggregate("persona", run_id=run_id)
    personas = sorted(a.key for a in groups if a.key is not None)
    return personas, sum(a.unpriced_calls for a in groups)


def _children(store: RunStore, run_id: str, depth: int = 1) -> list[tuple[int, RunRow]]:
    """``(depth, run)`` for every run opened inside ``run_id``, each followed by
    its own, in start order."""
    rows = sorted(store.list_runs(parent_run_id=run_id, limit=1000), key=lambda r: r.started_at)
    found: list[tuple[int, RunRow]] = []
    for row in rows:
        below = _children(store, row.id, depth + 1)
        found.append((depth, _so_far(store, row, [r for _, r in below])))
        found.extend(below)
    return found


def _run_json(run: RunRow, personas: list[str], unpriced: int) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "personas": personas,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "duration_s": run.duration_s,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cost_usd": run.cost_usd,
        "unpriced_calls": unpriced,
        "llm_calls": run.llm_calls,
        "error": run.error,
        "metadata": run.metadata,
        "parent_run_id": run.parent_run_id,
        "replay_of": run.replay_of,
        "write_errors": run.write_errors,
        "write_error": run.write_error,
    }


def run_runs(args: argparse.Namespace) -> int:
    with reading_store(args.store) as store:
        filters: dict[str, Any] = {
            "name": args.name,
            "status": args.status,
            "persona": args.persona,
            "started_after": args.since,
        }
        runs: list[RunRow] = []
        children: dict[str, list[tuple[int, RunRow]]] = {}
        for run in store.list_runs(**filters, top_level=True, limit=args.limit):
            children[run.id] = _children(store, run.id)
            runs.append(_so_far(store, run, [child for _, child in children[run.id]]))
        matching = store.count_runs(**filters, top_level=True)
        every = [*runs, *(child for below in children.values() for _, child in below)]
        own = {run.id: _own_calls(store, run.id) for run in every}
    personas = {run_id: names for run_id, (names, _) in own.items()}
    unpriced = _unpriced(runs, children, {run_id: n for run_id, (_, n) in own.items()})
    if args.json:
        print_json(
            {
                "runs": [
                    {
                        **_run_json(run, personas[run.id], unpriced[run.id]),
                        "children": [
                            _run_json(child, personas[child.id], unpriced[child.id])
                            for _, child in children[run.id]
                        ],
                    }
                    for run in runs
                ],
                "shown": len(runs),
                "matching": matching,
                "totals": _totals(runs, unpriced),
            }
        )
        return 0
    style = Style(wants_colour(sys.stdout, args.color))
    if not runs:
        filtered = any(v is not None for v in filters.values())
        print("no runs match these filters" if filtered else "no runs stored yet")
        return 0
    now = time.time()
    rows = []
    painters = []
    for run, depth in (
        (shown, depth) for top in runs for depth, shown in [(0, top), *children[top.id]]
    ):
        duration = run.duration_s
        if duration is None and run.status == "running":
            duration = now - run.started_at
        rows.append(
            [
                run.id,
                ("  " * (depth - 1) + "└ " if depth else "") + run.name + _marks(run),
                run.status,
                ", ".join(personas[run.id]) or "-",
                format_time(run.started_at),
                format_duration(duration),
                format_tokens(run.input_tokens + run.output_tokens),
                format_cost(run.cost_usd, unpriced[run.id]),
            ]
        )
        painters.append(
            [None, None, lambda text, s=run.status: style.status(s, text), None, None, None]
        )
    print(
        table(
            ["ID", "NAME", "STATUS", "PERSONAS", "STARTED", "DURATION", "TOKENS", "COST"],
            rows,
            right=(5, 6, 7),
            painters=painters,
            style=style,
        )
    )
    totals = _totals(runs, unpriced)
    shown = f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
    of = f" (of {matching} matching; --limit shows more)" if matching > len(runs) else ""
    replays = sum(r.replay_of is not None for r in runs)
    left_out = f" ({replays} replay{'s' if replays != 1 else ''} not counted)" if replays else ""
    print(
        style.paint(
            f"{shown}{of}: {totals['llm_calls']:,} LLM calls, "
            f"{format_tokens(totals['input_tokens'])} tokens in, "
            f"{format_tokens(totals['output_tokens'])} out, "
            f"{format_cost(totals['cost_usd'], totals['unpriced_calls'])}"
            f"{left_out}",
            "bold",
        )
    )
    return 0


def _marks(run: RunRow) -> str:
    """What sets a run apart in the list: a replay, rows the store refused."""
    marks = []
    if run.replay_of is not None:
        marks.append("replay")
    if run.write_errors:
        marks.append(f"{run.write_errors} rows not stored")
    return f" ({', '.join(marks)})" if marks else ""


def _unpriced(
    runs: list[RunRow], children: dict[str, list[tuple[int, RunRow]]], own: dict[str, int]
) -> dict[str, int]:
    """Each listed run's calls of unknown price, its child runs' included (as
    its usage includes theirs): ``own`` counts each run's own calls."""
    found: dict[str, int] = {}
    for top in runs:
        below = children[top.id]
        # Depth-first order: a run's descendants are the entries after it
        # that are deeper than it.
        for index, (depth, run) in enumerate([(0, top), *below]):
            total = own[run.id]
            for deeper, child in below[index:]:
                if deeper <= depth:
                    break
                total += own[child.id]
            found[run.id] = total
    return found


def _totals(runs: list[RunRow], unpriced: dict[str, int]) -> dict[str, Any]:
    """What the top-level ``runs`` spent (their children's usage is in theirs),
    replays left out; ``unpriced_calls`` are left out of ``cost_usd``."""
    spent = [r for r in runs if r.replay_of is None]
    return {
        "llm_calls": sum(r.llm_calls for r in spent),
        "input_tokens": sum(r.input_tokens for r in spent),
        "output_tokens": sum(r.output_tokens for r in spent),
        "cost_usd": round(sum(r.cost_usd for r in spent), 12),
        "unpriced_calls": sum(unpriced[r.id] for r in spent),
    }
