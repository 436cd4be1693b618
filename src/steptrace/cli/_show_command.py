"""``steptrace show RUN``: one stored run for a person, or (``--json``) a machine.

Text: the run's header (status, times, metadata, error), its step tree with
usage and budget use at every run, persona and step node (used / limit and
percent, with the status), the count of each event type, the event stream
(``--events``: all; ``--type T``: those types), the completed-step ledger and
the summary. ``--json`` prints the same facts as one JSON object: ``run``,
``summary``, ``tree`` (see ``_tree.node_json``), ``completed_steps``,
``llm_calls``, ``event_counts``, ``child_runs`` and, when asked for,
``events``. A child run names its parent run; a run with children lists them
(``child runs``), each with its status and usage.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Any

from ..events import _EVENT_TYPES
from ..report import ledger_table
from ..store import EventRow, RunRow, RunStore, StoredRun
from ._common import CliError, print_json, reading_store
from ._render import (
    Style,
    format_cost,
    format_duration,
    format_limit_usd,
    format_pct,
    format_time,
    format_tokens,
    format_usd,
    table,
    terminal_lines,
    terminal_text,
    wants_colour,
)
from ._resolve import resolve_run_id
from ._tree import Node, node_json, step_tree

__all__ = ["add_parser"]

EXAMPLES = """\
examples:
  steptrace show last                     the most recent run
  steptrace show 20261122-0318            a unique prefix of a run id
  steptrace show nightly                  the latest run named `nightly`
  steptrace show last --events            with every agent event
  steptrace show last --type tool_execution --type tool_rejected
  steptrace show last --json | jq .summary
"""

_PAGE = 1000
_VALUE_WIDTH = 80


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "show",
        help="show one run: step tree, budgets, events, ledger, summary",
        description="Show one stored run: its step tree with budget use, event counts and "
        "stream, completed-step ledger and summary.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "run", metavar="RUN", help="a run id, a unique prefix of one, `last`, or a run name"
    )
    parser.add_argument("--events", action="store_true", help="list every agent event")
    parser.add_argument(
        "--type",
        dest="types",
        action="append",
        metavar="TYPE",
        help=f"list the events of this type (repeatable): {', '.join(sorted(_EVENT_TYPES))}",
    )
    parser.add_argument(
        "--spans",
        action="store_true",
        help="show LLM-call and tool spans in the tree (folded into counts by default)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    parser.set_defaults(handler=run_show)


def run_show(args: argparse.Namespace) -> int:
    types: list[str] | None = args.types
    if types:
        unknown = sorted(set(types) - set(_EVENT_TYPES))
        if unknown:
            raise CliError(
                f"unknown event type(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_EVENT_TYPES))}"
            )
    with reading_store(args.store) as store:
        run_id = resolve_run_id(store, args.run)
        stored = store.get_run(run_id)
        if stored is None:  # deleted between the two reads
            raise CliError(f"run {run_id} vanished from the store while reading it")
        counts = store.event_counts(run_id)
        children = sorted(
            store.list_runs(parent_run_id=run_id, limit=1000), key=lambda r: r.started_at
        )
        wanted = args.events or bool(types)
        event_types = None if args.events else types
        roots = step_tree(stored, all_spans=args.spans)
        if args.json:
            data = _json(stored, roots, counts)
            data["child_runs"] = [_child_json(child) for child in children]
            if wanted:
                data["events"] = [
                    {"seq": e.seq, "span_id": e.span_id, **e.data}
                    for e in _events(store, run_id, event_types)
                ]
            print_json(data)
            return 0
        style = Style(wants_colour(sys.stdout, args.color))
        out = sys.stdout
        out.write(_header(stored, style) + "\n\n")
        if children:
            out.write(_child_runs(children, style) + "\n\n")
        out.write(style.paint("step tree", "bold") + "  (usage of each subtree; used / limit)\n")
        out.write(_tree_table(roots, style) + "\n\n")
        out.write(_event_counts(counts, wanted, style) + "\n")
        if wanted:
            for event in _events(store, run_id, event_types):
                out.write(_event_line(event) + "\n")
        out.write("\n" + style.paint("ledger", "bold") + "\n")
        ledger = ledger_table(stored) if stored.completed_steps else "(no completed steps)"
        out.write(terminal_lines(ledger) + "\n\n")
        out.write(_summary(stored, style, _loop_names(store, stored)) + "\n")
        return 0


def _events(store: RunStore, run_id: str, types: list[str] | None) -> Iterator[EventRow]:
    after = -1
    while True:
        page = store.events(run_id, types=types, after_seq=after, limit=_PAGE)
        yield from page
        if len(page) < _PAGE:
            return
        after = page[-1].seq


def _header(stored: StoredRun, style: Style) -> str:
    run = stored.run
    lines = [
        f"{style.paint('run', 'bold')} {style.paint(run.id, 'cyan')}  "
        f"{style.paint(run.name, 'bold')}  {style.status(run.status)}"
    ]
    when = f"  started {format_time(run.started_at)}"
    if run.ended_at is not None:
        when += f"   ended {format_time(run.ended_at)}   took {format_duration(run.duration_s)}"
    elif run.status == "running":
        when += f"   running for {format_duration(time.time() - run.started_at)}"
    lines.append(when)
    if run.budget:
        limits = _limits_text(run.budget.get("max_tokens"), run.budget.get("max_usd"))
        lines.append(terminal_text(f"  budget: {limits}"))
    if run.metadata:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in run.metadata.items())
        lines.append(terminal_text(f"  metadata: {shown}"))
    if run.parent_run_id is not None:
        parent = terminal_text(run.parent_run_id)
        lines.append(
            f"  child run of {style.paint(parent, 'cyan')}"
            + style.paint(f"  (steptrace show {parent})", "dim")
        )
    if run.replay_of is not None:
        original = terminal_text(run.replay_of)
        lines.append(
            f"  replay of {style.paint(original, 'cyan')}: its calls were answered from "
            "that run and spent nothing (left out of spend totals)"
        )
    if run.write_errors:
        detail = terminal_text(
            f"{run.write_errors} row(s) could not be stored; last: {run.write_error}"
        )
        lines.append("  " + style.paint(detail, "yellow"))
    if run.host or run.pid:
        lines.append(style.paint(f"  recorded by pid {run.pid} on {run.host}", "dim"))
    if run.error:
        lines.append("  " + style.paint(f"error: {run.error}", "red"))
    return "\n".join(lines)


def _child_runs(children: list[RunRow], style: Style) -> str:
    """The runs opened inside this one (their usage is part of this run's)."""
    rows = [
        [
            child.id,
            child.name,
            child.status,
            format_tokens(child.input_tokens + child.output_tokens),
            format_usd(child.cost_usd),
            format_duration(child.duration_s),
        ]
        for child in children
    ]
    painters: list[list[Any]] = [
        [None, None, lambda text, s=child.status: style.status(s, text)] for child in children
    ]
    title = style.paint("child runs", "bold") + "  (included in this run's usage)"
    listing = table(
        ["ID", "NAME", "STATUS", "TOKENS", "COST", "TIME"],
        rows,
        right=(3, 4, 5),
        painters=painters,
        style=style,
    )
    return f"{title}\n{listing}"


def _child_json(child: RunRow) -> dict[str, Any]:
    return {
        "id": child.id,
        "name": child.name,
        "status": child.status,
        "started_at": child.started_at,
        "ended_at": child.ended_at,
        "input_tokens": child.input_tokens,
        "output_tokens": child.output_tokens,
        "cost_usd": child.cost_usd,
        "llm_calls": child.llm_calls,
    }


def _limits_text(max_tokens: Any, max_usd: Any) -> str:
    parts = []
    if isinstance(max_tokens, int):
        parts.append(f"{format_tokens(max_tokens)} tokens")
    if isinstance(max_usd, int | float):
        parts.append(format_limit_usd(float(max_usd)))
    return ", ".join(parts) or "none"


def _tree_table(roots: list[Node], style: Style) -> str:
    rows: list[list[str]] = []
    painters: list[list[Any]] = []

    def visit(node: Node, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─ " if last else "├─ ")
        total = node.total
        tokens = format_tokens(total.tokens)
        if node.max_tokens is not None:
            tokens += f" / {format_tokens(node.max_tokens)}"
        cost = format_cost(total.cost_usd, total.unpriced_calls)
        if node.max_usd is not None:
            cost += f" / {format_limit_usd(node.max_usd)}"
        pct = node.budget_pct
        extras = []
        if node.llm_spans and node.llm_spans != node.own.llm_calls:
            # More requests than recorded calls: retries or schema re-prompts.
            extras.append(f"{node.llm_spans} LLM requests")
        if node.tool_spans:
            extras.append(f"{node.tool_spans} tool call{'s' if node.tool_spans != 1 else ''}")
        if node.span.error and node.kind not in ("run",):
            extras.append(node.span.error)
        rows.append(
            [
                prefix + branch + node.span.name,
                node.kind,
                node.status,
                tokens,
                cost,
                format_pct(pct),
                str(total.llm_calls),
                format_duration(node.duration_s),
                "; ".join(extras),
            ]
        )
        status = node.status
        painters.append(
            [
                None,
                lambda text: style.paint(text, "dim"),
                lambda text, s=status: style.status(s, text),
                None,
                None,
                lambda text, p=pct: style.pct(p, text),
                None,
                None,
                lambda text: style.paint(text, "dim"),
            ]
        )
        child_prefix = prefix + ("" if top else ("   " if last else "│  "))
        for i, child in enumerate(node.children):
            visit(child, child_prefix, i == len(node.children) - 1, False)

    for root in roots:
        visit(root, "", True, True)
    if not rows:
        return "(no spans stored yet)"
    return table(
        ["NAME", "KIND", "STATUS", "TOKENS", "COST", "BUDGET", "CALLS", "TIME", ""],
        rows,
        right=(3, 4, 5, 6, 7),
        painters=painters,
        style=style,
    )


def _event_counts(counts: dict[str, int], listing: bool, style: Style) -> str:
    if not counts:
        return style.paint("events", "bold") + ": none"
    shown = terminal_text(", ".join(f"{kind} {n:,}" for kind, n in sorted(counts.items())))
    total = sum(counts.values())
    hint = "" if listing else style.paint("  (list them with --events or --type TYPE)", "dim")
    return f"{style.paint('events', 'bold')} ({total:,}): {shown}{hint}"


def _short(value: Any) -> str:
    text = terminal_text(value if isinstance(value, str) else repr(value))
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 3] + "..."


def _event_line(event: EventRow) -> str:
    data = event.data
    fields = " ".join(f"{k}={_short(v)}" for k, v in data.items() if k != "type")
    return terminal_text(f"  {event.seq:>6}  {data.get('type', '?'):<18} {fields}")


def _loop_names(store: RunStore, stored: StoredRun) -> list[str]:
    """The name of the span each ended agent loop ran in (its step, or its
    own span), in the order the loops ended: how the summary's loops are named."""
    names = {span.span_id: span.name for span in stored.spans}
    return [
        names.get(row.span_id, "?") if row.span_id is not None else "?"
        for row in _events(store, stored.id, ["loop_complete"])
    ]


def _summary(stored: StoredRun, style: Style, loop_names: list[str] | None = None) -> str:
    summary = stored.summary
    lines = [style.paint("summary", "bold")]
    if stored.run.ended_at is None:
        # The run's totals are written when it ends; until then, its call log.
        calls = stored.llm_calls
        lines.append(
            f"  so far: {len(calls):,} LLM calls, "
            f"{format_tokens(sum(c.input_tokens for c in calls))} tokens in, "
            f"{format_tokens(sum(c.output_tokens for c in calls))} out, "
            f"{format_cost(sum(c.cost_usd or 0.0 for c in calls), _unpriced(calls))}"
        )
    else:
        lines.append(
            f"  {summary['llm_calls']:,} LLM calls, "
            f"{format_tokens(summary['input_tokens'])} tokens in, "
            f"{format_tokens(summary['output_tokens'])} out, "
            f"{format_cost(summary['cost_usd'], summary.get('unpriced_calls', 0))}"
        )
    steps = summary["steps"]
    step_text = ", ".join(f"{n} {status}" for status, n in steps.items() if n) or "none"
    lines.append(f"  steps: {step_text}")
    agent = summary.get("agent") or {}
    loops = agent.get("loops") or []
    if loops or agent.get("iterations") or agent.get("tool_executions"):
        outside = (agent.get("outside_loops") or {}).get("llm_calls") or 0
        lines.append(
            f"  agent ({len(loops)} loop{'s, all together' if len(loops) != 1 else ''}): "
            + _agent_counts(agent)
            + (f"; {outside} LLM call(s) outside any loop" if outside else "")
        )
        if len(loops) > 1:
            named = loop_names or []
            for i, loop in enumerate(loops, 1):
                name = f" {_short(named[i - 1])}" if i <= len(named) else ""
                lines.append(f"    loop {i}{name}: {_agent_counts(loop)}")
        tools = agent.get("tools_used") or []
        if tools:
            lines.append(f"  tools used: {', '.join(map(str, tools))}")
    # The first line is painted (safe already); the rest carry stored text.
    return "\n".join([lines[0], *map(terminal_text, lines[1:])])


def _agent_counts(agent: dict[str, Any]) -> str:
    return (
        f"{agent.get('status')}, {agent.get('iterations')} iterations, "
        f"{agent.get('llm_calls')} LLM calls, {agent.get('tool_executions')} tool executions, "
        f"{agent.get('tool_rejections')} rejections, "
        f"{agent.get('interventions')} interventions, {agent.get('compactions')} compactions"
    )


def _json(stored: StoredRun, roots: list[Node], counts: dict[str, int]) -> dict[str, Any]:
    run = stored.run
    return {
        "run": {
            "id": run.id,
            "name": run.name,
            "status": run.status,
            "started_at": run.started_at,
            "ended_at": run.ended_at,
            "duration_s": run.duration_s,
            "error": run.error,
            "metadata": run.metadata,
            "budget": run.budget,
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "cost_usd": run.cost_usd,
            "llm_calls": run.llm_calls,
            "pid": run.pid,
            "host": run.host,
            "parent_run_id": run.parent_run_id,
            "parent_span_id": run.parent_span_id,
            "replay_of": run.replay_of,
            "write_errors": run.write_errors,
            "write_error": run.write_error,
        },
        "summary": stored.summary,
        "tree": [node_json(root) for root in roots],
        "completed_steps": [row.to_dict() for row in stored.completed_steps],
        "llm_calls": [
            {
                "seq": c.seq,
                "span_id": c.span_id,
                "step": c.step,
                "persona": c.persona,
                "model": c.model,
                "input_tokens": c.input_tokens,
                "output_tokens": c.output_tokens,
                "cache_tokens": c.cache_tokens,
                "cost_usd": c.cost_usd,
                "duration_ms": c.duration_ms,
                "at": c.at,
            }
            for c in stored.llm_calls
        ],
        "event_counts": counts,
    }


def _unpriced(calls: Any) -> int:
    """How many of the call log's calls have no known cost."""
    return sum(1 for call in calls if call.cost_usd is None)
