"""Hot-path cost in CPU instructions, which a busy machine does not disturb.

Run ``python benchmarks/bench_instructions.py`` (needs ``valgrind``, the
Debian package of that name; about 3 minutes). Each case runs N times in a
fresh interpreter under callgrind, and so does an empty case; the difference
over N is the case's instructions per call, shown as a ratio to a ContextVar
set/reset pair measured the same way. Instructions are not nanoseconds (cache
misses and allocation weigh more in time), but they are the same on a quiet
and a loaded machine, so they show whether a change made a path cheaper when
``bench_core.py``'s timings are drowned in noise. ``--src DIR`` measures
another checkout's ``src`` (e.g. a ``git worktree`` of an older commit) in
the same run, for a before/after. The ``pure Python`` rows run the same case
with ``STEPTRACE_PURE_PYTHON=1`` (no compiled accelerator), each against its
own empty case, so one run shows what the accelerator saves.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _machine import instructions

HERE = Path(__file__).resolve().parent
DEFAULT_SRC = HERE.parent / "src"

# Every case runs inside a run and, for record_llm_usage, inside a step, as in
# bench_core.py; "none" is the same program doing nothing N times.
PROGRAM = r"""
import contextvars, gc, os, sys
case, n = sys.argv[2], int(sys.argv[3])
if case.startswith("pure:"):  # the pure-Python reference, accelerators off
    os.environ["STEPTRACE_PURE_PYTHON"] = "1"
    case = case.removeprefix("pure:")
sys.path.insert(0, sys.argv[1])
import steptrace
gc.disable()
if case.endswith("+gc"):
    gc.enable()
var = contextvars.ContextVar("v", default=None)

@steptrace.step(name="bench.sync")
def step_sync():
    return None

@steptrace.step(name="bench.holder")
def holder(body):
    body()

@steptrace.step(name="bench.budget", budget={"max_tokens": 10**15, "max_usd": 1e6})
def budgeted(body):
    body()

def none():
    for _ in range(n):
        pass

def pair():
    for _ in range(n):
        var.reset(var.set(1))

def step():
    for _ in range(n):
        step_sync()

def record():
    usage = steptrace.record_llm_usage
    for _ in range(n):
        usage("m", 10, 20, cost_usd=0.0)

def emit():
    event = steptrace.LlmCall(call_id="c", model="m", input_tokens=1, output_tokens=1,
                              cache_tokens=0, duration_ms=1, iteration=1)
    emit_event = steptrace.emit_event
    for _ in range(n):
        emit_event(event)

try:  # imported by every case, so the import cancels out against "none"
    from steptrace.integrations._chains_request import ModelRequest, TokenCounts
except ImportError:  # an older checkout: its "request" case fails and reads n/a
    ModelRequest = None

class FlatPrices:
    def cost_usd(self, model, input_tokens, output_tokens, *, cache_read_tokens=0,
                 cache_write_tokens=0):
        return (input_tokens + output_tokens) * 1e-6

def request():
    # What a framework integration does for one model request (LiteLLM's and
    # LangChain's hooks): pre-flight hold, span, priced conclusion, settle.
    steptrace.configure(price_source=FlatPrices())
    start, counts = ModelRequest.start, TokenCounts(12, 7)
    for _ in range(n):
        start("m", system="bench", estimated_input_tokens=10, max_output_tokens=100).finish(
            counts, response_id="r", finish_reasons=["stop"]
        )

with steptrace.run("bench"):
    name = case.removesuffix("+gc")
    if name == "record":
        holder(record)
    elif name in ("record_budget", "request"):
        budgeted(record if name == "record_budget" else request)
    else:
        {"none": none, "pair": pair, "step": step, "emit": emit}[name]()
"""

CASES = [
    ("step", "@step sync call"),
    ("step+gc", "@step sync call, gc on"),
    ("pure:step", "@step sync call, pure Python"),
    ("pure:step+gc", "@step sync call, gc on, pure Python"),
    ("record", "record_llm_usage, step without budget"),
    ("record_budget", "record_llm_usage, step with budget"),
    ("pure:record", "record_llm_usage, no budget, pure Python"),
    ("pure:record_budget", "record_llm_usage, budget, pure Python"),
    ("emit", "emit_event(prebuilt LlmCall)"),
    ("request", "integration model request, budgeted step"),
]


def _count(program: Path, src: Path, case: str, n: int) -> int:
    return instructions([sys.executable, str(program), str(src), case, str(n)])


def measure(program: Path, src: Path, n: int) -> dict[str, float]:
    """Instructions per call of each case (and of the pair) for one checkout."""
    empty = _count(program, src, "none", n)
    # Without the accelerator the import differs: its own empty case.
    empty_pure = _count(program, src, "pure:none", n)
    per_call = {"pair": (_count(program, src, "pair", n) - empty) / n}
    for case, _ in CASES:
        base = empty_pure if case.startswith("pure:") else empty
        try:
            per_call[case] = (_count(program, src, case, n) - base) / n
        except subprocess.CalledProcessError:  # an older checkout without this path
            per_call[case] = math.nan
    return per_call


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="calls per case (default 20000)")
    parser.add_argument("--src", type=Path, help="also measure this checkout's src directory")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        program = Path(tmp) / "cases.py"
        program.write_text(PROGRAM)
        checkouts = {"this": DEFAULT_SRC}
        if args.src is not None:
            checkouts["other"] = args.src.resolve()
        results = {name: measure(program, src, args.n) for name, src in checkouts.items()}
    print(f"instructions per call (callgrind, {args.n:,} calls a case), ratio to the pair")
    for name, src in checkouts.items():
        print(f"  {name}: {src}")
    # The pair's own count moves with the hash layout of the context's
    # variables, so between checkouts compare the counts themselves.
    header = f"{'case':42}" + "".join(f"{name:>22}" for name in checkouts)
    if len(checkouts) == 2:
        header += f"{'this / other':>14}"
    print(header)
    print("-" * len(header))
    for case, label in [("pair", "ContextVar set/reset pair"), *CASES]:
        cells = ""
        for name in checkouts:
            value = results[name][case]
            ratio = value / results[name]["pair"]
            cells += f"{value:>12,.0f} {ratio:>6.2f}x  "
        if len(checkouts) == 2:
            cells += f"{results['this'][case] / results['other'][case]:>12.2f}x"
        print(f"{label:42}{cells}")
    gc_cost = {name: r["step+gc"] / r["step"] for name, r in results.items()}
    print("@step gc on / gc off: " + ", ".join(f"{k} {v:.2f}x" for k, v in gc_cost.items()))
    gc_cost = {name: r["pure:step+gc"] / r["pure:step"] for name, r in results.items()}
    print(
        "@step gc on / gc off, pure Python: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in gc_cost.items())
    )
    speedup = {name: r["pure:step"] / r["step"] for name, r in results.items()}
    print(
        "@step pure Python / accelerated: " + ", ".join(f"{k} {v:.2f}x" for k, v in speedup.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
