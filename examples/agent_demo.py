"""A budgeted, traced agent run over a sample workspace, on the built-in offline provider.

A ``maintainer`` persona (capped at $0.25) reviews a small project workspace
(a copy of ``examples/workspace`` in a temporary directory, so the bundled
files never change) with ``steptrace.agent.agent_loop``:

- four ``@tool`` functions: ``list_files``, ``read_file`` and ``search``
  (``read_only``) and ``write_file`` (``workspace_write``);
- three phases: ``plan`` (look around, no writing; ends at its 2-turn cap),
  ``act`` (read, search, write ``STATUS.md``; ends when the model calls the
  built-in ``next_phase`` tool) and ``verify`` (read back, then answer);
- loop detection that warns at the 2nd identical call and blocks at the 3rd,
  and a small compaction threshold, so the transcript is compacted mid-run.

The scripted model is a function of each request: it looks at the tools the
phase offers, the calls already made (the compaction summary included) and the
last tool results, so every run takes the same path. It tries to write during
``plan`` (``ToolRejected``), repeats one search until loop detection warns and
then blocks it (``LoopIntervention``), reads the files, writes the summary and
answers. A second agent loop, drafting release notes under a token budget too
small for it with ``error_boundary="continue"``, runs out of budget mid-loop:
its step is recorded ``skipped`` and the run goes on to a last step that
writes a headline. Prices come from the maintained genai-prices table, offline.

While it runs it prints a progress line per model request and tool call (a
span processor) and per finished step (a ``PostStep`` hook); on a terminal the
line updates in place. It ends with the step ledger, the agent loops' summaries,
the count of each agent event type and the cost.

Run it with ``scripts/demo.sh``. ``--live`` runs the same script against OpenAI
(``OPENAI_API_KEY``) or Anthropic (``ANTHROPIC_API_KEY``) instead;
``--workdir DIR`` copies the workspace into ``DIR`` and leaves it there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import steptrace
from steptrace import llm
from steptrace.agent import AgentResult, Compaction, LoopDetection, Phase, Tool, agent_loop, tool
from steptrace.llm import LlmRequest, Message, ToolCall
from steptrace.llm.prices import install_default_prices
from steptrace.report import ledger_table, totals_line

WORKSPACE = Path(__file__).resolve().parent / "workspace"
STATUS_FILE = "STATUS.md"
NOTES_FILE = "notes/2026-03-12-release-sync.md"

# (agent model, writer model) per provider; the offline run prices OpenAI's.
MODELS = {
    "openai": ("gpt-4o-mini", "gpt-4o"),
    "anthropic": ("claude-haiku-4-5", "claude-sonnet-4-5"),
}

SYSTEM = (
    "You are a careful maintainer's assistant working in a small project workspace. "
    "Use the tools to look at the files; never guess at their content. Work in phases: "
    "call `next_phase` when a phase's work is done."
)
REVIEW_TASK = (
    "Review the project workspace: find what blocks the 0.4 release and which action "
    f"items are still open, then write a short status report to {STATUS_FILE} and "
    "answer with a one-paragraph summary."
)
PHASES = (
    Phase(
        "plan",
        tools=["list_files", "search"],
        max_iterations=2,
        instructions="Plan: list the files and search them; do not change anything yet.",
    ),
    Phase(
        "act",
        tools=["list_files", "read_file", "search", "write_file"],
        max_iterations=10,
        instructions=f"Act: read what you need, then write {STATUS_FILE}.",
    ),
    Phase(
        "verify",
        tools=["read_file", "list_files"],
        max_iterations=3,
        instructions=f"Verify: read {STATUS_FILE} back, then give your final answer.",
    ),
)
NOTES_TASK = "Draft the release notes for tidewater 0.4 from CHANGELOG.md and TODO.md."


# -- the tools ---------------------------------------------------------------------------


def workspace_tools(root: Path) -> dict[str, Tool]:
    """The agent's tools, confined to ``root`` (a path that leaves it is an error
    the model sees)."""
    root = root.resolve()

    def inside(path: str) -> Path:
        target = (root / path).resolve()
        if not target.is_relative_to(root):
            raise ValueError(f"{path!r} is outside the workspace")
        return target

    def files() -> list[Path]:
        return sorted(p for p in root.rglob("*") if p.is_file())

    @tool(classification="read_only")
    def list_files() -> list[str]:
        """List every file of the workspace, as paths relative to its root."""
        return [p.relative_to(root).as_posix() for p in files()]

    @tool(classification="read_only")
    def read_file(path: str) -> str:
        """Read a text file of the workspace.

        Args:
            path: The file's path relative to the workspace root.
        """
        return inside(path).read_text(encoding="utf-8")

    @tool(classification="read_only")
    def search(pattern: str) -> str:
        """Find the lines of every file that match a regular expression, ignoring
        case, like ``grep -in``: one ``path:line: text`` a match.

        Args:
            pattern: A Python regular expression.
        """
        regex = re.compile(pattern, re.IGNORECASE)
        hits = [
            f"{p.relative_to(root).as_posix()}:{number}: {line.strip()}"
            for p in files()
            for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if regex.search(line)
        ]
        return "\n".join(hits) or "no matches"

    @tool(classification="workspace_write")
    def write_file(path: str, text: str) -> str:
        """Create or overwrite a text file of the workspace.

        Args:
            path: The file's path relative to the workspace root.
            text: The whole new content of the file.
        """
        target = inside(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        return f"wrote {len(text)} characters to {path}"

    return {t.name: t for t in (list_files, read_file, search, write_file)}


# -- the scripted model --------------------------------------------------------------------

Reply = str | list[ToolCall]


def rendered(name: str, arguments: Mapping[str, Any]) -> str:
    """A call as the compaction summary writes it: ``name({"sorted": "json"})``."""
    return f"{name}({json.dumps(dict(arguments), sort_keys=True)})"[:120]


def calls(request: LlmRequest, *wanted: tuple[str, dict[str, Any]]) -> list[ToolCall]:
    """Tool calls with ids unique in the run's transcript."""
    turn = len(request.messages)
    return [
        ToolCall(id=f"call_{turn}_{i}", name=name, arguments=arguments)
        for i, (name, arguments) in enumerate(wanted)
    ]


def history(messages: Sequence[Message]) -> str:
    """What the model knows it did: its tool calls, every tool result and user
    message (a compaction summary lists archived calls the same way)."""
    lines: list[str] = []
    for message in messages:
        lines.extend(rendered(c.name, c.arguments) for c in message.tool_calls)
        if message.role in ("tool", "user"):
            lines.append(message.content)
    return "\n".join(lines)


def result_of(messages: Sequence[Message], name: str, arguments: Mapping[str, Any]) -> str | None:
    """The latest result of that call still in the transcript."""
    ids = {
        c.id
        for m in messages
        for c in m.tool_calls
        if c.name == name and dict(c.arguments) == dict(arguments)
    }
    found = [m.content for m in messages if m.role == "tool" and m.tool_call_id in ids]
    return found[-1] if found else None


def status_report(request: LlmRequest) -> str:
    todo = result_of(request.messages, "read_file", {"path": "TODO.md"}) or ""
    open_items = [line[6:] for line in todo.splitlines() if line.startswith("- [ ] ")]
    items = "\n".join(f"- {item}" for item in open_items) or "- (TODO.md not read)"
    return (
        "# tidewater 0.4 status\n\n"
        "Release planned for 2026-04-08, blocked on the PostgreSQL 16 restore test "
        "(due 2026-04-01, Maya).\n\n"
        f"## Open items (TODO.md)\n\n{items}\n\n"
        "## Watch\n\n- The staging bucket credentials expire on 2026-04-01.\n"
    )


def review_turn(request: LlmRequest) -> Reply:
    """The reviewing agent: what to do next, from the phase and what was done."""
    offered = {t.name for t in request.tools}
    done = history(request.messages)
    if "write_file" in offered:  # act
        plan: list[list[tuple[str, dict[str, Any]]]] = [
            [("read_file", {"path": "README.md"})],
            [("read_file", {"path": NOTES_FILE})],
            [("search", {"pattern": "TODO"})],  # repeated until loop detection blocks it
            [("read_file", {"path": "TODO.md"}), ("read_file", {"path": "CHANGELOG.md"})],
            [("write_file", {"path": STATUS_FILE, "text": status_report(request)})],
        ]
        for wanted in plan:
            name, arguments = wanted[0]
            if name == "search":
                blocked = ("loop detection] Blocked: `search`", "Not run: `search`")
                if not any(marker in done for marker in blocked):
                    return calls(request, *wanted)
            elif rendered(name, arguments) not in done:
                return calls(request, *wanted)
        return calls(request, ("next_phase", {}))
    if "next_phase" in offered:  # plan; it ends at its turn cap
        if rendered("list_files", {}) not in done:
            return calls(request, ("list_files", {}))
        # Too eager: writes during planning, which the phase does not offer.
        return calls(
            request,
            ("search", {"pattern": "release|blocker"}),
            ("write_file", {"path": STATUS_FILE, "text": "# Status\n\nTBD\n"}),
        )
    if rendered("read_file", {"path": STATUS_FILE}) not in done:  # verify
        return calls(request, ("read_file", {"path": STATUS_FILE}))
    return (
        f"Wrote {STATUS_FILE}. tidewater 0.4 is planned for 2026-04-08 and blocked on the "
        "PostgreSQL 16 restore test (due 2026-04-01, Maya). Four TODO items are open: the "
        "restore test, the `[wal]` documentation, the stale-backup alert and the rotation "
        "of the staging credentials, which expire on 2026-04-01."
    )


def notes_turn(request: LlmRequest) -> Reply:
    """The release-notes agent: reads two files, searches, then would answer."""
    done = history(request.messages)
    if rendered("read_file", {"path": "CHANGELOG.md"}) not in done:
        return calls(
            request,
            ("read_file", {"path": "CHANGELOG.md"}),
            ("read_file", {"path": "TODO.md"}),
        )
    if rendered("search", {"pattern": "incremental"}) not in done:
        return calls(request, ("search", {"pattern": "incremental"}))
    return "tidewater 0.4: incremental backups through WAL archiving, tiered retention."


def offline_model(request: LlmRequest) -> Reply:
    """The scripted provider's answers, by the step that asks."""
    step = steptrace.current_step()
    if step is not None and step.name == "review_workspace":
        return review_turn(request)
    if step is not None and step.name == "draft_release_notes":
        return notes_turn(request)
    return "tidewater 0.4 on track for 2026-04-08 once the PostgreSQL 16 restore test passes"


# -- the persona and its steps ---------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    review: AgentResult
    notes: AgentResult
    headline: str | None


@steptrace.step(budget={"max_usd": 0.01})
def write_headline(summary: str, model: str) -> str:
    prompt = f"Write a one-line headline (under 100 characters) for this status:\n\n{summary}"
    return llm.llm_call(prompt, model=model, max_tokens=60).text


@steptrace.persona(budget={"max_usd": 0.25})
def maintainer(root: Path, model: str, writer: str) -> Outcome:
    tools = workspace_tools(root)
    review = agent_loop(
        REVIEW_TASK,
        SYSTEM,
        tools=list(tools.values()),
        model=model,
        max_iterations=16,
        phases=PHASES,
        loop_detection=LoopDetection(warn_after=2, block_after=3),
        compaction=Compaction(max_tokens=1_700, keep_last=4),
        budget={"max_tokens": 50_000},
        error_boundary="fail",
        name="review_workspace",
    )
    # Too small a budget: the loop runs out mid-way; `continue` records the step
    # `skipped` and hands back what the loop did, and the persona goes on.
    notes = agent_loop(
        NOTES_TASK,
        tools=[tools["read_file"], tools["search"]],
        model=model,
        budget={"max_tokens": 5_000},
        error_boundary="continue",
        name="draft_release_notes",
    )
    return Outcome(review, notes, write_headline(review.text or REVIEW_TASK, writer))


# -- live progress -----------------------------------------------------------------------------


class Progress:
    """A span processor printing a line per model request and tool call, with the
    run's tokens and cost so far; ``keep`` prints a line that stays. On a
    terminal the request/tool line is rewritten in place, else each is a line."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out
        self.width = 0  # of the line being rewritten in place, 0 when none
        self.step = "-"
        self.iteration = 0
        self.tokens = 0
        self.cost_usd = 0.0

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    def on_start(self, span: steptrace.Span) -> None:
        if span.kind is steptrace.SpanKind.STEP:
            self.step, self.iteration = span.name, 0

    def on_end(self, span: steptrace.Span) -> None:
        meta = span.metadata
        if span.kind is steptrace.SpanKind.LLM_CALL:
            if span.status == "error":  # the request is retried within the same turn
                iteration = self.iteration + 1
            else:
                self.iteration = iteration = self.iteration + 1
                self.tokens += meta.get("gen_ai.usage.input_tokens", 0)
                self.tokens += meta.get("gen_ai.usage.output_tokens", 0)
                self.cost_usd += meta.get("steptrace.cost_usd") or 0.0
            what = f"model {meta.get('gen_ai.request.model', '?')}"
        elif span.kind is steptrace.SpanKind.TOOL:
            iteration = self.iteration
            what = f"tool  {meta.get('gen_ai.tool.name', '?')}"
        else:
            return
        status = meta.get("steptrace.status", span.status)
        self.show(
            f"  {self.step:<20} iter {iteration:>2}  {what:<22} {status:<6} "
            f"run so far: {self.tokens:>6,} tokens  ${self.cost_usd:.6f}"
        )

    def show(self, line: str) -> None:
        if self.out.isatty():
            # Cut to the terminal's width: a line that wraps cannot be redrawn.
            line = line[: shutil.get_terminal_size().columns - 1]
            self.out.write("\r" + line.ljust(self.width))
            self.width = len(line)
            self.out.flush()
        else:
            print(line, file=self.out)

    def keep(self, line: str) -> None:
        if self.width:
            self.out.write("\r" + " " * self.width + "\r")
            self.width = 0
        print(line, file=self.out, flush=True)


PROGRESS = Progress()


@steptrace.on("PostStep")
def step_finished(context: steptrace.HookContext) -> None:
    """A line that stays, per finished step (the error of a skipped one included)."""
    usage = context.usage
    PROGRESS.keep(
        f"  {context.step:<20} {context.status} (step: {usage.total_tokens:,} tokens, "
        f"${usage.cost_usd:.6f})"
    )
    if context.error is not None:
        PROGRESS.keep(f"  {'':<20} -> {context.error}")


# -- the report --------------------------------------------------------------------------------


EVENT_TYPES = (
    "LlmCall",
    "ToolExecution",
    "ToolRejected",
    "LoopIntervention",
    "ContextCompaction",
    "PhaseChange",
    "LoopComplete",
    "SchemaRetry",
)


def loop_lines(name: str, result: AgentResult) -> list[str]:
    """An agent loop's summary (``AgentResult.summary``, the seed's rollup)."""
    s = result.summary
    return [
        f"  {name:<20} {s['status']} after {s['iterations']} iterations: "
        f"llm_calls {s['llm_calls']}, tool_executions {s['tool_executions']}, "
        f"tool_rejections {s['tool_rejections']}, interventions {s['interventions']}, "
        f"compactions {s['compactions']}",
        f"  {'':<20} tokens {s['total_input_tokens']:,} in, {s['total_output_tokens']:,} out; "
        f"tools used: {', '.join(s['tools_used']) or '-'}",
    ]


def event_lines(events: Sequence[steptrace.AgentEvent]) -> list[str]:
    """``count`` per event type, with what the interesting ones said."""
    details: dict[str, list[str]] = {}
    for event in events:
        match event:
            case steptrace.ToolRejected():
                note = f"{event.tool_name} at iter {event.iteration}: {event.reason}"
            case steptrace.LoopIntervention():
                note = f"{event.kind} {event.tool_name} (call {event.count})"
            case steptrace.ContextCompaction():
                note = (
                    f"iter {event.iteration}: {event.archived_messages} messages "
                    f"-> {event.new_summary_len}-char summary"
                )
            case steptrace.PhaseChange():
                note = f"{event.from_phase} -> {event.to_phase} (iter {event.iteration})"
            case steptrace.LoopComplete():
                note = f"{event.status} after {event.iterations} iterations"
            case _:
                continue
        details.setdefault(type(event).__name__, []).append(note)
    counts = Counter(type(event).__name__ for event in events)
    return [
        f"  {kind:<18} {counts[kind]:>3}  {'; '.join(details.get(kind, []))}".rstrip()
        for kind in EVENT_TYPES
    ]


# -- main --------------------------------------------------------------------------------------


def choose_provider(live: bool) -> str:
    """``openai`` or ``anthropic`` by the key present (live), else the scripted
    provider, configured here and pricing OpenAI's models."""
    if not live:
        llm.configure(provider=llm.ScriptedProvider(offline_model))
        return "openai"
    for name, key in (("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")):
        if os.environ.get(key):
            return name
    print(
        "--live needs OPENAI_API_KEY or ANTHROPIC_API_KEY in the environment; "
        "without --live the demo runs offline on the scripted provider.",
        file=sys.stderr,
    )
    raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--live", action="store_true", help="call OpenAI or Anthropic instead")
    parser.add_argument("--workdir", type=Path, help="copy the workspace here and keep it")
    args = parser.parse_args(argv)
    install_default_prices()
    provider = choose_provider(args.live)
    model, writer = MODELS[provider]
    mode = f"live, {provider}" if args.live else "offline, scripted provider"
    with tempfile.TemporaryDirectory(prefix="steptrace-demo-") as scratch:
        root = args.workdir if args.workdir is not None else Path(scratch) / "workspace"
        shutil.copytree(WORKSPACE, root, dirs_exist_ok=True)
        print(f"agent demo ({mode}): {model} reviews a copy of examples/workspace")
        steptrace.add_span_processor(PROGRESS)
        run = steptrace.run("agent-demo", budget={"max_usd": 1})
        print(f"run {run.id}")
        try:
            with run:
                outcome: Outcome | None = maintainer(root, model, writer)
        except steptrace.StepTraceError as exc:  # a live model may run out of budget
            outcome = None
            PROGRESS.keep(f"run failed: {type(exc).__name__}: {exc}")
        status = root / STATUS_FILE
        if status.exists():
            lines = len(status.read_text(encoding="utf-8").splitlines())
            print(f"\n{STATUS_FILE} written in the copy ({lines} lines)")
        else:
            print(f"\n{STATUS_FILE} not written")
    if outcome is not None:
        print(f"answer: {outcome.review.text or '-'}")
        print(f"headline: {outcome.headline or '-'}")
    print(f"\nstep ledger\n{ledger_table(run)}")
    if outcome is not None:
        print("\nagent loops")
        print("\n".join(loop_lines("review_workspace", outcome.review)))
        print("\n".join(loop_lines("draft_release_notes", outcome.notes)))
    print("\nagent events (all loops of the run)")
    print("\n".join(event_lines(run.events)))
    print(f"\ncost: {totals_line(run)}")
    if outcome is None:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
