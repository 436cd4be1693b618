"""What the agent loop costs per iteration, beyond the model and the tools, in one run.

Each benchmark run is ``aagent_loop`` on the scripted provider inside a fresh
``steptrace.run()``. The scripted model is a function of the request: it reads
the turn number from the last tool result's call id and answers with the same
three ``ToolCall`` every turn (arguments varying with the turn, so loop
detection, left on, never steps in) until the last iteration, where it answers
with a final text. The tools return at once.

Rows (median of repeats, microseconds per iteration, gc off while timing):

- the baseline: the scripted provider's own ``complete()`` on the very requests
  the loop sent (replayed on a fresh provider with the same script) plus the
  bare tool functions called as many times, without the loop;
- ``aagent_loop`` with three async tools (awaited concurrently), with three
  sync tools (run in the loop's tool threads) and with the same sync tools
  declared ``thread=False`` (called in the loop's own thread). Net = loop
  minus baseline: everything but the model and tool time;
- the hand-written loop: what a user would write without steptrace for the
  same run (the same requests on the growing transcript, the tools awaited
  with ``asyncio.gather``, sync ones through ``asyncio.to_thread`` or, for
  the ``thread=False`` row, called directly, their results appended; no
  validation, policy, spans, events or usage records),
  timed in the same repeat; ``x hand`` is the median of loop / hand-written
  loop over the repeats, the figure least moved by a loaded machine.

Targets (issue 14): net at most 100 microseconds per iteration with three
async tools, 150 with three sync tools (either way). Then the cost of a 500-iteration run
with a small compaction threshold, next to the same run without compaction:
seconds, microseconds per iteration, compactions, peak memory (tracemalloc)
and the working vs the full transcript.

Run: ``.venv/bin/python benchmarks/bench_agent.py [--quick] [--check] [--profile] [--cpu]``.
``--check`` exits 1 when a target is missed (without it the exit code is 0);
``--profile`` adds a cProfile breakdown of the per-iteration cost; ``--cpu``
times the process's CPU time instead of wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import math
import os
import platform
import pstats
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# Benchmark the checkout this file lives in, whether or not it is installed.
_SRC = Path(__file__).resolve().parents[1] / "src"
if (_SRC / "steptrace").is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

import steptrace  # noqa: E402
from _machine import load_average, revision  # noqa: E402
from steptrace.agent import (  # noqa: E402
    AgentResult,
    Compaction,
    LoopDetection,
    Tool,
    aagent_loop,
    tool,
)
from steptrace.events import ContextCompaction  # noqa: E402
from steptrace.llm import (  # noqa: E402
    LlmRequest,
    LlmResponse,
    Message,
    ToolCall,
    estimate_input_tokens,
)
from steptrace.testing import ScriptedProvider  # noqa: E402

MODEL = "m"
SYSTEM = "You are a careful assistant. Use the tools to look things up, then answer."
TASK = "Collect the notes, the matching lines and the file sizes, then summarize them."
FINAL_TEXT = "Done: every note, match and size is collected and summarized."

COMPACT_MAX_TOKENS = 1_500
"""The compaction threshold of the long run, in estimated tokens: small, so it compacts often."""
COMPACT_KEEP_LAST = 6

Kind = Literal["async", "sync", "inline"]
"""Async tools, sync tools in the tool threads, sync tools with ``thread=False``."""

TARGET_US: dict[Kind, float] = {"async": 100.0, "sync": 150.0, "inline": 150.0}
"""Loop overhead per iteration with three tools, in microseconds (issue 14's targets)."""

BUDGET: dict[str, Any] | None = None
"""The loop's ``budget=`` (None: no budget, the headline rows). With one, the
loop runs as a step and every turn places a pre-flight hold, estimating its
request (``bench_agent_instructions.py --budget``)."""

clock = time.perf_counter
"""The timer of every timed run: wall time, or with ``--cpu`` the process's CPU
time (all its threads), which a loaded machine disturbs less."""

# -- the tools: return at once, so only the loop's handling of them is timed ----------


@tool(classification="read_only")
async def read_note(n: int) -> str:
    """Read note number n."""
    return f"note {n}"


@tool(classification="read_only")
async def search_lines(n: int) -> str:
    """Search for lines mentioning n."""
    return f"{n} matches"


@tool(classification="read_only")
async def file_size(n: int) -> str:
    """The size of file n in bytes."""
    return f"{n * 10} bytes"


@tool(name="read_note", classification="read_only")
def read_note_sync(n: int) -> str:
    """Read note number n."""
    return f"note {n}"


@tool(name="search_lines", classification="read_only")
def search_lines_sync(n: int) -> str:
    """Search for lines mentioning n."""
    return f"{n} matches"


@tool(name="file_size", classification="read_only")
def file_size_sync(n: int) -> str:
    """The size of file n in bytes."""
    return f"{n * 10} bytes"


TOOLS: dict[Kind, tuple[Tool, ...]] = {
    "async": (read_note, search_lines, file_size),
    "sync": (read_note_sync, search_lines_sync, file_size_sync),
    "inline": tuple(
        Tool(
            name=t.name,
            description=t.description,
            parameters=t.parameters,
            fn=t.fn,
            is_async=False,
            classification=t.classification,
            thread=False,
        )
        for t in (read_note_sync, search_lines_sync, file_size_sync)
    ),
}


class Script:
    """The scripted model: a pure function of the request. The turn number is
    read from the last tool result's call id (``call-<turn>-<k>``), which stays
    in the working transcript through every compaction (the tail is kept)."""

    def __init__(self, iterations: int, tool_names: Sequence[str]) -> None:
        self.iterations = iterations
        self.tool_names = tuple(tool_names)

    def __call__(self, request: LlmRequest) -> str | list[ToolCall]:
        call_id = request.messages[-1].tool_call_id
        turn = 0 if call_id is None else int(call_id.split("-")[1]) + 1
        if turn >= self.iterations - 1:
            return FINAL_TEXT
        return [
            ToolCall(id=f"call-{turn}-{k}", name=name, arguments={"n": turn})
            for k, name in enumerate(self.tool_names)
        ]


class LastRequestOnly(ScriptedProvider):
    """The scripted provider without its log of every request (it keeps only the
    last), for the memory pass: the log belongs to the benchmark, not to the loop."""

    def complete(self, request: LlmRequest) -> LlmResponse:
        response = super().complete(request)
        del self.requests[:-1]
        return response


class FlatPrices:
    """A price source, so each call is priced as it would be against a real model."""

    def cost_usd(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float | None:
        return (input_tokens + 4 * output_tokens) / 1_000_000


# -- one timed agent run and its baseline ----------------------------------------------


async def agent(
    kind: Kind,
    iterations: int,
    compaction: Compaction | None = None,
    provider: ScriptedProvider | None = None,
) -> AgentResult:
    """One ``aagent_loop`` of ``iterations`` turns with the ``kind`` tools."""
    tools = TOOLS[kind]
    return await aagent_loop(
        TASK,
        SYSTEM,
        tools=tools,
        model=MODEL,
        max_iterations=iterations,
        loop_detection=LoopDetection(),
        compaction=compaction,
        provider=provider or ScriptedProvider(Script(iterations, [t.name for t in tools])),
        budget=BUDGET,
    )


async def run_agent(
    kind: Kind, iterations: int, compaction: Compaction | None = None
) -> tuple[float, AgentResult, ScriptedProvider]:
    """Seconds for one agent run in a fresh ``steptrace.run()``, with the cyclic
    garbage collector off while timing, its result, and the provider (whose
    ``requests`` the baseline replays)."""
    provider = ScriptedProvider(Script(iterations, [t.name for t in TOOLS[kind]]))
    with steptrace.run("bench-agent"):
        gc.collect()
        gc.disable()
        try:
            started = clock()
            result = await agent(kind, iterations, compaction, provider)
            elapsed = clock() - started
        finally:
            gc.enable()
    _check_result(result, iterations, len(TOOLS[kind]))
    return elapsed, result, provider


def _check_result(result: AgentResult, iterations: int, tools: int) -> None:
    """The run must be the one described: every turn's tools run, nothing rejected."""
    summary = result.summary
    expected = {
        "status": "done",
        "iterations": iterations,
        "tool_executions": tools * (iterations - 1),
        "tool_rejections": 0,
        "interventions": 0,
    }
    got = {key: summary.get(key) for key in expected}
    if got != expected or result.text != FINAL_TEXT:
        raise RuntimeError(f"bench_agent: the agent run went off script: {got} != {expected}")


async def run_baseline(kind: Kind, iterations: int, requests: Sequence[LlmRequest]) -> float:
    """Seconds for the model and tool work alone: ``complete()`` of a fresh scripted
    provider (same script) on each request the loop sent, and the bare tool
    functions called as often as the loop called them (sync ones in this thread)."""
    tools = TOOLS[kind]
    provider = ScriptedProvider(Script(iterations, [t.name for t in tools]))
    fns = [t.fn for t in tools]
    gc.collect()
    gc.disable()
    try:
        started = clock()
        for request in requests:
            provider.complete(request)
        if kind == "async":
            for turn in range(iterations - 1):
                for fn in fns:
                    await fn(n=turn)
        else:
            for turn in range(iterations - 1):
                for fn in fns:
                    fn(n=turn)
        return clock() - started
    finally:
        gc.enable()


async def run_hand_loop(kind: Kind, iterations: int) -> float:
    """Seconds for the least a user would write for the same run without steptrace:
    one request a turn on the growing transcript (the same messages and tool
    specs the loop sends) to a fresh scripted provider, the turn's tools
    awaited concurrently (sync ones through ``asyncio.to_thread``), their
    results appended; no validation, policy, spans, events or usage records."""
    tools = TOOLS[kind]
    provider = ScriptedProvider(Script(iterations, [t.name for t in tools]))
    fns = {t.name: t.fn for t in tools}
    specs = tuple(t.spec() for t in tools)
    messages = [Message(role="system", content=SYSTEM), Message(role="user", content=TASK)]
    gc.collect()
    gc.disable()
    try:
        started = clock()
        for _ in range(iterations):
            request = LlmRequest(model=MODEL, messages=tuple(messages), tools=specs)
            response = await provider.acomplete(request)
            calls = response.tool_calls
            messages.append(Message(role="assistant", content=response.text, tool_calls=calls))
            if not calls:
                break
            if kind == "async":
                results = await asyncio.gather(*(fns[c.name](**c.arguments) for c in calls))
            elif kind == "inline":
                results = [fns[c.name](**c.arguments) for c in calls]
            else:
                results = await asyncio.gather(
                    *(asyncio.to_thread(fns[c.name], **c.arguments) for c in calls)
                )
            for call, text in zip(calls, results, strict=True):
                messages.append(
                    Message(role="tool", content=text, tool_call_id=call.id, name=call.name)
                )
        elapsed = clock() - started
    finally:
        gc.enable()
    if messages[-1].content != FINAL_TEXT:
        raise RuntimeError("bench_agent: the hand-written loop went off script")
    return elapsed


# -- rows --------------------------------------------------------------------------------


@dataclass
class Row:
    """One timed configuration: per-repeat figures and their medians."""

    label: str
    iterations: int
    loop_us: list[float] = field(default_factory=list)
    """Per repeat: the whole agent run, microseconds per iteration."""
    base_us: list[float] = field(default_factory=list)
    """Per repeat: the baseline of the same requests and tool calls."""
    hand_us: list[float] = field(default_factory=list)
    """Per repeat: the hand-written loop doing the same requests and tool calls."""
    target: float | None = None

    @property
    def loop(self) -> float:
        return statistics.median(self.loop_us)

    @property
    def base(self) -> float:
        return statistics.median(self.base_us)

    @property
    def hand(self) -> float:
        return statistics.median(self.hand_us) if self.hand_us else math.nan

    @property
    def net(self) -> float:
        return self.loop - self.base

    @property
    def ratio(self) -> float:
        """Median over repeats of loop / hand-written loop, each pair timed together."""
        if not self.hand_us:
            return math.nan
        return statistics.median(a / b for a, b in zip(self.loop_us, self.hand_us, strict=True))

    @property
    def mad(self) -> float:
        """Relative median absolute deviation of the loop's repeats."""
        mid = self.loop
        return statistics.median(abs(v - mid) for v in self.loop_us) / mid if mid else 0.0

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.net <= self.target


async def measure(
    row: Row, kind: Kind, compaction: Compaction | None = None, hand: bool = False
) -> tuple[AgentResult, ScriptedProvider]:
    """One repeat of ``row``: the agent run, then its baseline (and, with ``hand``,
    the hand-written loop)."""
    elapsed, result, provider = await run_agent(kind, row.iterations, compaction)
    base = await run_baseline(kind, row.iterations, provider.requests)
    row.loop_us.append(elapsed / row.iterations * 1e6)
    row.base_us.append(base / row.iterations * 1e6)
    if hand:
        row.hand_us.append(await run_hand_loop(kind, row.iterations) / row.iterations * 1e6)
    return result, provider


async def overhead_rows(iterations: int, repeats: int) -> list[Row]:
    """The headline rows, repeats round-robin so machine drift hits both alike."""
    rows: dict[Kind, Row] = {
        "async": Row(
            f"3 async tools, {iterations} iterations", iterations, target=TARGET_US["async"]
        ),
        "sync": Row(
            f"3 sync tools (threads), {iterations} iterations",
            iterations,
            target=TARGET_US["sync"],
        ),
        "inline": Row(
            f"3 sync tools (thread=False), {iterations} it.",
            iterations,
            target=TARGET_US["inline"],
        ),
    }
    for kind in rows:  # warm-up: imports, schemas, the thread pools
        await run_agent(kind, iterations)
        await run_hand_loop(kind, iterations)
    for _ in range(repeats):
        for kind, row in rows.items():
            await measure(row, kind, hand=True)
    return list(rows.values())


def compaction_config() -> Compaction:
    return Compaction(max_tokens=COMPACT_MAX_TOKENS, keep_last=COMPACT_KEEP_LAST)


@dataclass
class LongRun:
    """A long run: its timing row and the shape of its result."""

    row: Row
    seconds: list[float] = field(default_factory=list)
    compactions: int = 0
    archived: int = 0
    working_messages: int = 0
    working_tokens: int = 0
    full_messages: int = 0
    full_tokens: int = 0
    peak_bytes: int | None = None
    retained_bytes: int | None = None


def _tokens(messages: Sequence[Message]) -> int:
    """The transcript's estimated prompt tokens (the rule compaction uses)."""
    return estimate_input_tokens(LlmRequest(model=MODEL, messages=tuple(messages)))


async def long_runs(iterations: int, repeats: int, memory: bool) -> list[LongRun]:
    """A long run with compaction at a small threshold, and the same without."""
    configs = {
        "with compaction": compaction_config(),
        "without compaction": Compaction(enabled=False),
    }
    runs = {name: LongRun(Row(f"{iterations} iterations, {name}", iterations)) for name in configs}
    results: dict[str, AgentResult] = {}
    for _ in range(repeats):
        for name, config in configs.items():
            run = runs[name]
            results[name], _ = await measure(run.row, "async", config)
            run.seconds.append(run.row.loop_us[-1] * iterations / 1e6)
    for name, config in configs.items():
        run, result = runs[name], results[name]  # every repeat is the same run
        compactions = [e for e in result.events if isinstance(e, ContextCompaction)]
        run.compactions = len(compactions)
        run.archived = sum(e.archived_messages for e in compactions)
        run.working_messages, run.working_tokens = len(result.messages), _tokens(result.messages)
        run.full_messages, run.full_tokens = len(result.transcript), _tokens(result.transcript)
        if memory:
            run.peak_bytes, run.retained_bytes = await memory_of(iterations, config)
    return list(runs.values())


async def memory_of(iterations: int, config: Compaction) -> tuple[int, int]:
    """(peak, held) tracemalloc bytes of one run: the peak while it runs, and what
    is still held when it ends, inside its ``steptrace.run()`` (the result with
    its transcripts and events, and the run's spans, ledger and event log)."""
    provider = LastRequestOnly(Script(iterations, [t.name for t in TOOLS["async"]]))
    with steptrace.run("bench-agent-memory"):
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            result = await agent("async", iterations, config, provider)
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    _check_result(result, iterations, len(TOOLS["async"]))
    return peak - base, current - base


# -- profile -------------------------------------------------------------------------------

_StatsRow = tuple[int, int, float, float, Any]  # ncalls, primitive calls, own s, cumulative s


async def profile(iterations: int, runs: int, top: int) -> list[str]:
    """cProfile of ``runs`` agent runs (3 async tools): the functions with the most
    own and cumulative time, per iteration. Profiling inflates every call, so read
    the shares, not the absolute figures."""
    await run_agent("async", iterations)
    profiler = cProfile.Profile()
    for _ in range(runs):
        provider = ScriptedProvider(Script(iterations, [t.name for t in TOOLS["async"]]))
        with steptrace.run("bench-agent-profile"):
            profiler.enable()
            await agent("async", iterations, None, provider)
            profiler.disable()
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], _StatsRow] = vars(stats)["stats"]
    total_s: float = vars(stats)["total_tt"]
    per_iter = 1e6 / (runs * iterations)
    package = os.sep + "steptrace" + os.sep

    def where(key: tuple[str, int, str]) -> str:
        filename, line, name = key
        if package in filename:
            filename = filename.rsplit(package, 1)[1]
        elif filename.startswith(("<", "~")):
            return name
        else:
            filename = Path(filename).name
        return f"{filename}:{line}({name})"

    def table(title: str, keys: list[tuple[str, int, str]]) -> list[str]:
        lines = [
            title,
            f"  {'function':<58} {'calls/it':>8} {'own us/it':>10} {'cum us/it':>10}",
        ]
        for key in keys:
            calls, _, own, cum, _ = raw[key]
            lines.append(
                f"  {where(key)[:58]:<58} {calls / (runs * iterations):8.1f} "
                f"{own * per_iter:10.1f} {cum * per_iter:10.1f}"
            )
        return lines

    ours = [k for k in raw if package in k[0] and "providers" + os.sep + "scripted" not in k[0]]
    theirs = [k for k in raw if package not in k[0] and k[0] != "~"]
    builtins = [k for k in raw if k[0] == "~"]
    own_total = sum(raw[k][2] for k in ours)
    scripted = sum(raw[k][2] for k in raw if "providers" + os.sep + "scripted" in k[0])
    lines = [
        f"cProfile, {runs} runs x {iterations} iterations, 3 async tools: "
        f"{total_s * per_iter:.0f} us per iteration profiled "
        f"({own_total * per_iter:.0f} us own time in steptrace code, "
        f"{scripted * per_iter:.0f} us in the scripted provider's own code)",
    ]
    lines += table(
        "steptrace functions by own time:",
        sorted(ours, key=lambda k: raw[k][2], reverse=True)[:top],
    )
    lines += table(
        "steptrace functions by cumulative time:",
        sorted(ours, key=lambda k: raw[k][3], reverse=True)[:top],
    )
    lines += table(
        "library and builtin functions by own time (called from steptrace or the provider):",
        sorted(theirs + builtins, key=lambda k: raw[k][2], reverse=True)[: max(5, top // 2)],
    )
    dumps = [k for k in raw if k[2] == "dumps" and k[0].endswith(os.sep + "__init__.py")]
    if dumps:
        callers: dict[tuple[str, int, str], tuple[int, int, float, float]] = raw[dumps[0]][4]
        lines.append("json.dumps by caller (calls/it, cum us/it):")
        for key, (calls, _, _, cum) in sorted(callers.items(), key=lambda kv: -kv[1][3]):
            lines.append(
                f"  {where(key)[:58]:<58} {calls / (runs * iterations):8.1f} "
                f"{'':>10} {cum * per_iter:10.1f}"
            )
    lines.append(
        "calls/it counts each resumption of a coroutine as a call; cProfile inflates "
        "every call, so read the shares rather than the absolute figures."
    )
    return lines


# -- report ----------------------------------------------------------------------------------


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: ""}[passed]


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


def print_rows(rows: Sequence[Row]) -> None:
    header = (
        f"{'row':<40} {'loop us/it':>10} {'±MAD':>6} {'base us/it':>10} {'net us/it':>9}  "
        f"{'target':<7} {'result':<6} {'hand us/it':>10} {'x hand':>6}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        target = "" if row.target is None else f"<= {row.target:g}"
        hand = f"{row.hand:10.1f} {row.ratio:5.2f}x" if row.hand_us else ""
        print(
            f"{row.label:<40} {row.loop:10.1f} {f'±{row.mad * 100:.1f}%':>6} "
            f"{row.base:10.1f} {row.net:9.1f}  {target:<7} {_verdict(row.passed):<6} {hand}"
        )


def print_long(runs: Sequence[LongRun]) -> None:
    print_rows([run.row for run in runs])
    print()
    for run in runs:
        print(
            f"{run.row.label}: {statistics.median(run.seconds):.3f} s per run, "
            f"{run.compactions} compactions archiving {run.archived} messages; "
            f"working transcript {run.working_messages} messages ({run.working_tokens} est. "
            f"tokens) vs full {run.full_messages} messages ({run.full_tokens} est. tokens); "
            f"peak memory {_mib(run.peak_bytes)}, held at the end {_mib(run.retained_bytes)}"
        )


async def main_async(args: argparse.Namespace) -> list[Row]:
    iterations = args.iterations
    repeats = args.repeats or (3 if args.quick else 31)
    long_iterations = 100 if args.quick else 500
    long_repeats = 1 if args.quick else 3
    steptrace.configure(price_source=FlatPrices())
    print(
        f"steptrace {steptrace.__version__} ({revision()}) agent loop benchmark, "
        f"{Path(steptrace.__file__).parent}"
    )
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average {load_average()} before"
    )
    print(
        "aagent_loop on the scripted provider in a fresh steptrace.run(), 3 tool calls a turn "
        "(the last turn answers), loop detection and default compaction on; gc disabled "
        f"while timing; {'CPU time of the process' if clock is time.process_time else 'wall time'}."
    )
    print(
        "loop: the whole run per iteration; base: the scripted provider's complete() on the "
        "same requests plus the bare tool calls; net = loop - base (medians)."
    )
    print()
    print(f"Loop overhead per iteration ({repeats} repeats):")
    rows = await overhead_rows(iterations, repeats)
    print_rows(rows)
    print()
    print(
        f"Long runs ({long_repeats} repeats, 3 async tools; compaction at "
        f"{COMPACT_MAX_TOKENS} est. tokens, keep_last={COMPACT_KEEP_LAST}, deterministic "
        "summary; memory by tracemalloc in a separate run):"
    )
    long = await long_runs(long_iterations, long_repeats, memory=True)
    print_long(long)
    if args.profile:
        print()
        for line in await profile(iterations, 5 if args.quick else 40, 15):
            print(line)
    print()
    print(f"load average {load_average()} after")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, noisy numbers")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--profile", action="store_true", help="add a cProfile breakdown")
    parser.add_argument(
        "--iterations", type=int, default=24, help="iterations of the headline rows (24)"
    )
    parser.add_argument("--repeats", type=int, help="repeats of the headline rows (31)")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="time CPU used by the process (all threads) instead of wall time",
    )
    args = parser.parse_args(argv)
    if args.cpu:
        global clock
        clock = time.process_time
    if args.iterations < 2:
        parser.error("--iterations must be at least 2")
    rows = asyncio.run(main_async(args))
    missed = [row.label for row in rows if row.passed is False]
    if args.check and missed:
        print(f"--check: target missed by {len(missed)} row(s): {', '.join(missed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
