"""The agent loop's cost per iteration in CPU instructions, which load does not move.

On a shared machine the wall and CPU times of ``bench_agent.py`` swing by 2x
between runs; the number of instructions a run executes does not. This runs
the same workloads as ``bench_agent.py`` (3 tools, async by default, 24
iterations: the loop, the hand-written loop and the baseline of the bare
model and tool calls)
under valgrind's callgrind, each twice (2 and 12 runs after a warm-up), and
reports the difference per iteration, so interpreter start-up and imports
cancel out. Ratios are against the hand-written loop and the baseline.

Run: ``.venv/bin/python benchmarks/bench_agent_instructions.py [--kind
async|sync|inline]`` (needs ``valgrind``; several minutes: every workload runs
about 50x slower under it). ``sync`` runs the tools in the tool threads (the
hand-written loop through ``asyncio.to_thread``), whose counts move a little
with thread scheduling; ``inline`` declares them ``thread=False``. ``--budget``
runs the loop with a budget (as a step, every turn's request estimated for its
pre-flight hold); the hand-written loop and the baseline have none.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

from _machine import instructions

_HERE = Path(__file__).resolve().parent
WORKLOADS = ("agent", "hand", "base")
KINDS = ("async", "sync", "inline")
ITERATIONS = 24
FEW, MANY = 2, 12


BUDGET = {"max_tokens": 10**9}
"""Never reached: it only puts the loop in a step with a limit in force."""


async def _child(kind: Any, what: str, runs: int, budget: bool) -> None:
    """Run ``what`` with ``kind`` tools ``runs`` times after one warm-up of each workload."""
    sys.path.insert(0, str(_HERE))
    import bench_agent as bench
    import steptrace

    if budget:
        bench.BUDGET = BUDGET

    steptrace.configure(price_source=bench.FlatPrices())
    _, _, provider = await bench.run_agent(kind, ITERATIONS)
    await bench.run_hand_loop(kind, ITERATIONS)
    await bench.run_baseline(kind, ITERATIONS, provider.requests)
    for _ in range(runs):
        if what == "agent":
            await bench.run_agent(kind, ITERATIONS)
        elif what == "hand":
            await bench.run_hand_loop(kind, ITERATIONS)
        else:
            await bench.run_baseline(kind, ITERATIONS, provider.requests)


def _instructions(kind: str, what: str, runs: int, budget: bool = False) -> int:
    command = [sys.executable, __file__, "--child", kind, what, str(runs)]
    return instructions([*command, "--budget"] if budget else command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--kind", choices=KINDS, default="async", help="the tools: async (default), sync, inline"
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("KIND", "WORKLOAD", "RUNS"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--budget", action="store_true", help="run the loop with a budget (never reached)"
    )
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(_child(args.child[0], args.child[1], int(args.child[2]), args.budget))
        return 0
    if shutil.which("valgrind") is None:
        print("bench_agent_instructions: valgrind is not installed; nothing measured")
        return 0
    per_iteration: dict[str, float] = {}
    for what in WORKLOADS:
        few = _instructions(args.kind, what, FEW, args.budget)
        many = _instructions(args.kind, what, MANY, args.budget)
        per_iteration[what] = (many - few) / ((MANY - FEW) * ITERATIONS)
        print(
            f"{what:<6} {per_iteration[what]:>12,.0f} instructions per iteration "
            f"({args.kind} tools{', budget' if args.budget else ''})",
            flush=True,
        )
    agent, hand, base = (per_iteration[w] for w in WORKLOADS)
    print(
        f"loop / hand-written loop {agent / hand:.2f}x; loop - baseline {agent - base:,.0f} "
        f"instructions per iteration; loop - hand-written loop {agent - hand:,.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
