"""Core overhead benchmark: what steptrace costs per call, against same-process baselines.

Run ``python benchmarks/bench_core.py`` (``--quick`` for a smoke run, ``--json PATH``
to write the results, ``--check`` to exit non-zero when a target fails). Every
timing row is the median, over several repeats, of the net nanoseconds per call
of a timeit-style loop (the empty loop's own cost is measured and subtracted),
each repeat calibrated to take about ``--target-time`` seconds. Rows are shown
as a ratio to the ContextVar set/reset pair (the floor of any context-carrying
wrapper) and to their own baseline (a plain call, or a plain awaited coroutine
for async rows). Memory and import time are measured separately: tracemalloc
around a run producing many completed steps, and fresh interpreters.

Runs keep every completed step and span, so each repeat of a loop that creates
records runs inside a fresh ``steptrace.run()``; the records of one repeat are
dropped before the next starts. See benchmarks/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import tracemalloc
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Benchmark the checkout this file lives in, whether or not it is installed.
_SRC = Path(__file__).resolve().parents[1] / "src"
if (_SRC / "steptrace").is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

import steptrace  # noqa: E402
from _machine import load_average, revision  # noqa: E402
from steptrace import CompletedStep, LlmCall, Span  # noqa: E402

# -- targets (from the issue) -------------------------------------------------------

STEP_MAX_X_PAIR = 4.0
"""A sync ``@step`` call costs at most this many ContextVar set/reset pairs
(6x at the core issue, 4x since the performance issue)."""
STEP_GC_MAX_X = 1.3
"""... and with the cyclic GC on, at most this many times its cost with it off."""
STEP_MAX_X_OTEL = 0.1
"""... and at most this fraction of an OpenTelemetry SDK span."""
RECORD_MAX_X_PAIR = 4.0
"""``record_llm_usage`` costs at most this many ContextVar set/reset pairs."""
IMPORT_MAX_MS = 25.0
"""``import steptrace`` adds less than this to interpreter start-up."""
RECORD_MAX_BYTES = 1024
"""A completed step (ledger row and span, as the run keeps them) takes less than this."""

# -- the code under test ------------------------------------------------------------

_var: contextvars.ContextVar[object] = contextvars.ContextVar("bench_var", default=None)


def plain() -> None:
    return None


async def aplain() -> None:
    return None


def bare_wrapper(fn: Callable[[], None]) -> Callable[[], None]:
    """The reference: the least a wrapper carrying one ContextVar can do."""

    def wrapper() -> None:
        token = _var.set(fn)
        try:
            return fn()
        finally:
            _var.reset(token)

    return wrapper


wrapped_plain = bare_wrapper(plain)


@steptrace.step(name="bench.sync")
def step_sync() -> None:
    return None


def _pure_python_step(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` as a step on the pure-Python call, the compiled one's reference,
    so one run measures both (the same step when the accelerator is not built)."""
    from steptrace import _wrappers

    saved = _wrappers._step_speedup
    _wrappers._step_speedup = None
    try:
        return steptrace.step(name="bench.sync.pure")(fn)
    finally:
        _wrappers._step_speedup = saved


def _sync_pure() -> None:
    return None


step_sync_pure = _pure_python_step(_sync_pure)
STEP_ACCELERATED = type(step_sync) is not type(step_sync_pure)


@steptrace.step(name="bench.async")
async def step_async() -> None:
    return None


@steptrace.step(name="bench.inner")
def nested_inner() -> None:
    return None


@steptrace.step(name="bench.middle")
def nested_middle() -> None:
    return nested_inner()


@steptrace.step(name="bench.outer")
def nested_outer() -> None:
    return nested_middle()


@steptrace.step(name="bench.memory", model="m")
def step_memory() -> None:
    return None


@steptrace.step(name="bench.holder")
def _hold_unbudgeted(thunk: Callable[[], float]) -> float:
    return thunk()


# Large enough that no benchmark ever exhausts it; the checks still run on every call.
@steptrace.step(name="bench.holder.budget", budget={"max_tokens": 10**15, "max_usd": 1e6})
def _hold_budgeted(thunk: Callable[[], float]) -> float:
    return thunk()


EVENT = LlmCall(
    call_id="c1",
    model="m",
    input_tokens=10,
    output_tokens=20,
    cache_tokens=0,
    duration_ms=5,
    iteration=1,
)

NAMESPACE: dict[str, Any] = {
    "gc": gc,
    "plain": plain,
    "var": _var,
    "wrapped_plain": wrapped_plain,
    "step_sync": step_sync,
    "step_sync_pure": step_sync_pure,
    "nested_outer": nested_outer,
    "record_llm_usage": steptrace.record_llm_usage,
    # The pure-Python reference of the compiled record_llm_usage, timed beside it.
    "record_llm_usage_pure": getattr(
        steptrace._accounting, "_reference_record_llm_usage", steptrace.record_llm_usage
    ),
    "emit_event": steptrace.emit_event,
    "LlmCall": LlmCall,
    "EVENT": EVENT,
}

# -- environments a timing repeat runs in -------------------------------------------

Thunk = Callable[[], float]
Env = Callable[[Thunk], float]


def env_plain(thunk: Thunk) -> float:
    return thunk()


def env_fresh_run(thunk: Thunk) -> float:
    with steptrace.run("bench"):
        return thunk()


def env_step(thunk: Thunk) -> float:
    with steptrace.run("bench"):
        return _hold_unbudgeted(thunk)


def env_budgeted_step(thunk: Thunk) -> float:
    with steptrace.run("bench"):
        return _hold_budgeted(thunk)


# -- measuring ----------------------------------------------------------------------


@dataclass
class Config:
    repeats: int
    target_time: float
    import_runs: int
    memory_steps: int
    gc_enabled: bool


@dataclass
class Row:
    key: str
    label: str
    ns: float | None
    """Median net ns per call; None when the row could not be measured."""
    base: str
    """Key of the row this one is compared with (its own baseline)."""
    runs_ns: list[float] = field(default_factory=list)
    loops: int = 0
    note: str = ""
    target: str = ""
    passed: bool | None = None
    ratio_pair: float | None = None
    ratio_base: float | None = None


def _next_n(n: int, elapsed: float, target: float) -> int | None:
    """Calibration: the final loop count once a trial is long enough, else None."""
    if elapsed >= target / 5 or n >= 10**8:
        return max(1, round(n * target / max(elapsed, 1e-9)))
    return None


def _grow(n: int, elapsed: float, target: float) -> int:
    return n * (10 if elapsed < target / 50 else 2)


@dataclass
class Case:
    """One timed row: ``time_n(n)`` runs ``n`` loops in the row's environment and
    returns the seconds they took (``time_n`` is a coroutine function for async rows)."""

    key: str
    label: str
    base: str
    time_n: Callable[[int], Any]
    note: str = ""


def sync_case(
    key: str,
    label: str,
    base: str,
    stmt: str,
    cfg: Config,
    env: Env = env_plain,
    note: str = "",
    gc_on: bool = False,
) -> Case:
    """A timeit loop of ``stmt`` over ``NAMESPACE``, each repeat run inside
    ``env``; with the cyclic GC on when ``gc_on`` or ``--gc``."""
    setup = "gc.enable()" if cfg.gc_enabled or gc_on else "pass"
    timer = timeit.Timer(stmt, setup=setup, globals=NAMESPACE)
    return Case(key, label, base, lambda n: env(lambda: timer.timeit(n)), note)


def _rows(
    cases: list[Case], runs: dict[str, list[float]], loops: dict[str, int], loop_key: str
) -> list[Row]:
    """Net ns per call: the empty loop's median cost is subtracted from every repeat."""
    overhead = statistics.median(runs[loop_key])
    rows = []
    for case in cases:
        if case.key == loop_key:
            rows.append(Row(case.key, case.label, overhead * 1e9, case.key, note=case.note))
            continue
        net = [(r - overhead) * 1e9 for r in runs[case.key]]
        row = Row(case.key, case.label, statistics.median(net), case.base, net, loops[case.key])
        row.note = case.note
        rows.append(row)
    return rows


def run_sync_cases(cases: list[Case], cfg: Config, loop_key: str) -> list[Row]:
    """Calibrate every case, then take the repeats round-robin across cases, so a
    change in machine load during the run shifts every row alike."""
    loops: dict[str, int] = {}
    for case in cases:
        n = 1
        while True:
            elapsed = case.time_n(n)
            final = _next_n(n, elapsed, cfg.target_time)
            if final is not None:
                loops[case.key] = final
                break
            n = _grow(n, elapsed, cfg.target_time)
    runs: dict[str, list[float]] = {case.key: [] for case in cases}
    for _ in range(cfg.repeats):
        for case in cases:
            gc.collect()
            runs[case.key].append(case.time_n(loops[case.key]) / loops[case.key])
    return _rows(cases, runs, loops, loop_key)


async def run_async_cases(cases: list[Case], cfg: Config, loop_key: str) -> list[Row]:
    """``run_sync_cases`` for coroutine cases, inside the running event loop."""
    loops: dict[str, int] = {}
    for case in cases:
        n = 1
        while True:
            elapsed = await case.time_n(n)
            final = _next_n(n, elapsed, cfg.target_time)
            if final is not None:
                loops[case.key] = final
                break
            n = _grow(n, elapsed, cfg.target_time)
    runs: dict[str, list[float]] = {case.key: [] for case in cases}
    for _ in range(cfg.repeats):
        for case in cases:
            gc.collect()
            runs[case.key].append(await case.time_n(loops[case.key]) / loops[case.key])
    return _rows(cases, runs, loops, loop_key)


def _relative_mad(values: list[float]) -> float:
    """Median absolute deviation over the median: the noise of a row, robust to one
    disturbed repeat."""
    med = statistics.median(values)
    return statistics.median(abs(v - med) for v in values) / med if med else 0.0


async def _aloop(fn: Callable[[], Awaitable[None]] | None, n: int, gc_enabled: bool) -> float:
    """Seconds for ``n`` awaits of ``fn()`` (an empty loop when ``fn`` is None)."""
    was_enabled = gc.isenabled()
    if not gc_enabled:
        gc.disable()
    try:
        loop = itertools.repeat(None, n)
        if fn is None:
            start = time.perf_counter()
            for _ in loop:
                pass
            return time.perf_counter() - start
        start = time.perf_counter()
        for _ in loop:
            await fn()
        return time.perf_counter() - start
    finally:
        if was_enabled:
            gc.enable()


def async_case(
    key: str,
    label: str,
    base: str,
    fn: Callable[[], Awaitable[None]] | None,
    cfg: Config,
    fresh_run: bool,
    note: str = "",
) -> Case:
    async def time_n(n: int) -> float:
        if fresh_run:
            async with steptrace.run("bench"):
                return await _aloop(fn, n, cfg.gc_enabled)
        return await _aloop(fn, n, cfg.gc_enabled)

    return Case(key, label, base, time_n, note)


class OtelPeer:
    """An OpenTelemetry SDK tracer with an in-memory exporter, imported only here."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("steptrace-bench")

    def env(self, thunk: Thunk) -> float:
        self.exporter.clear()  # the exporter keeps every span, as a run does
        try:
            return thunk()
        finally:
            self.exporter.clear()

    def shutdown(self) -> None:
        self.provider.shutdown()


USAGE = 'record_llm_usage("m", 10, 20, cost_usd=0.0001)'
USAGE_PURE = USAGE.replace("record_llm_usage", "record_llm_usage_pure")
NEW_EVENT = (
    'emit_event(LlmCall(call_id="c1", model="m", input_tokens=10, output_tokens=20, '
    "cache_tokens=0, duration_ms=5, iteration=1))"
)
OTEL_LABEL = "OpenTelemetry SDK span (peer)"


def timing_rows(cfg: Config) -> list[Row]:
    fresh, in_step, in_budget = env_fresh_run, env_step, env_budgeted_step
    cases = [
        sync_case("loop", "empty loop (subtracted from every row)", "loop", "pass", cfg),
        sync_case("call", "plain function call", "call", "plain()", cfg),
        sync_case(
            "pair", "ContextVar set/reset pair (floor)", "call", "var.reset(var.set(1))", cfg
        ),
        sync_case(
            "wrapper",
            "bare wrapper setting one ContextVar",
            "call",
            "wrapped_plain()",
            cfg,
            note="reference",
        ),
        sync_case("step_sync", "@step sync call", "call", "step_sync()", cfg, fresh),
        sync_case(
            "step_sync_gc",
            "@step sync call, gc on",
            "step_sync",
            "step_sync()",
            cfg,
            fresh,
            note="x base: against the gc-off row",
            gc_on=True,
        ),
        sync_case(
            "step_sync_pure",
            "@step sync call, pure Python",
            "call",
            "step_sync_pure()",
            cfg,
            fresh,
            note="STEPTRACE_PURE_PYTHON=1's path",
        ),
        sync_case(
            "step_sync_pure_gc",
            "@step sync call, gc on, pure Python",
            "step_sync_pure",
            "step_sync_pure()",
            cfg,
            fresh,
            note="x base: against the gc-off row",
            gc_on=True,
        ),
        sync_case(
            "step_nested",
            "@step nested 3 deep (per outer call)",
            "call",
            "nested_outer()",
            cfg,
            fresh,
            note="three steps per call",
        ),
        sync_case("record", "record_llm_usage, step without budget", "call", USAGE, cfg, in_step),
        sync_case(
            "record_budget", "record_llm_usage, step with budget", "call", USAGE, cfg, in_budget
        ),
        sync_case(
            "record_pure",
            "record_llm_usage, no budget, pure Python",
            "call",
            USAGE_PURE,
            cfg,
            in_step,
            note="STEPTRACE_PURE_PYTHON=1's path",
        ),
        sync_case(
            "record_budget_pure",
            "record_llm_usage, budget, pure Python",
            "call",
            USAGE_PURE,
            cfg,
            in_budget,
            note="STEPTRACE_PURE_PYTHON=1's path",
        ),
        sync_case("emit", "emit_event(prebuilt LlmCall)", "call", "emit_event(EVENT)", cfg, fresh),
        sync_case(
            "emit_new", "emit_event(LlmCall(...)) incl. construction", "call", NEW_EVENT, cfg, fresh
        ),
    ]
    peer: OtelPeer | None
    try:
        peer = OtelPeer()
    except ImportError:
        peer = None
    else:
        NAMESPACE["tracer"] = peer.tracer
        stmt = 'with tracer.start_as_current_span("x"):\n    pass'
        note = "SimpleSpanProcessor(InMemorySpanExporter())"
        cases.append(sync_case("otel", OTEL_LABEL, "call", stmt, cfg, peer.env, note))
    try:
        rows = run_sync_cases(cases, cfg, "loop")
    finally:
        if peer is not None:
            peer.shutdown()
    if peer is None:
        note = "not installed: pip install -e '.[bench]'"
        rows.append(Row("otel", OTEL_LABEL, None, "call", note=note))
    after = next(i for i, row in enumerate(rows) if row.key == "step_nested") + 1
    rows[after:after] = asyncio.run(_async_rows(cfg))
    return rows


async def _async_rows(cfg: Config) -> list[Row]:
    cases = [
        async_case("aloop", "empty async loop (subtracted)", "aloop", None, cfg, False),
        async_case("aplain", "plain coroutine awaited (async base)", "aplain", aplain, cfg, False),
        async_case("step_async", "@step async call, awaited", "aplain", step_async, cfg, True),
    ]
    return await run_async_cases(cases, cfg, "aloop")


# -- import time --------------------------------------------------------------------


@dataclass
class ImportResult:
    ms: float
    """Median wall time of ``import steptrace`` minus ``pass``, fresh interpreters."""
    base_ms: float
    with_import_ms: float
    importtime_ms: float | None
    """Median cumulative time of the ``steptrace`` line of ``-X importtime``."""
    own_modules_ms: float | None
    """... of which the self time of steptrace's own modules (the rest is stdlib)."""
    runs: int


def _child_env(pycache: str) -> dict[str, str]:
    """Fresh interpreters that find this checkout and have its bytecode cached.

    The bytecode goes to a temporary ``PYTHONPYCACHEPREFIX`` (never into the
    source tree), and ``PYTHONDONTWRITEBYTECODE`` is dropped, so after the warm-up
    run each import reads .pyc files as an installed wheel would.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pycache
    src = str(Path(steptrace.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def _wall(code: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - start


def _importtime_us(env: dict[str, str]) -> tuple[float, float] | None:
    """(cumulative us of ``steptrace``, self us of its own modules) from ``-X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import steptrace"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    own = 0.0
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[0].split(":")[-1].strip().isdigit():
            continue
        name = parts[2].strip()
        if name == "steptrace" or name.startswith("steptrace."):
            own += float(parts[0].split(":")[-1])
        if name == "steptrace":
            return float(parts[1]), own
    return None


def measure_import(runs: int) -> ImportResult:
    with tempfile.TemporaryDirectory(prefix="steptrace-bench-pyc-") as pycache:
        env = _child_env(pycache)
        for code in ("pass", "import steptrace"):  # compile and cache the bytecode
            _wall(code, env)
        base, with_import = [], []
        for _ in range(runs):  # interleaved so drift hits both equally
            base.append(_wall("pass", env))
            with_import.append(_wall("import steptrace", env))
        parsed = [r for r in (_importtime_us(env) for _ in range(runs)) if r is not None]
    base_ms = statistics.median(base) * 1e3
    with_ms = statistics.median(with_import) * 1e3
    return ImportResult(
        ms=with_ms - base_ms,
        base_ms=base_ms,
        with_import_ms=with_ms,
        importtime_ms=statistics.median(r[0] for r in parsed) / 1e3 if parsed else None,
        own_modules_ms=statistics.median(r[1] for r in parsed) / 1e3 if parsed else None,
        runs=runs,
    )


# -- memory -------------------------------------------------------------------------


@dataclass
class MemoryResult:
    steps: int
    bytes_per_step: float
    """tracemalloc growth per step once the run's ledger and spans have been read
    (rows a run builds on demand included): the figure checked against the target."""
    bytes_per_step_unread: float
    """... right after the steps ran, before anything read the ledger."""
    getsizeof_completed_step: int
    """``sys.getsizeof`` of one ``CompletedStep`` (the object alone)."""
    getsizeof_span: int
    getsizeof_span_metadata: int
    owned_bytes_per_step: int
    """``sys.getsizeof`` summed over every object one step's row and span own."""


def _reachable(roots: Iterable[object]) -> dict[int, object]:
    """Objects reachable from ``roots`` through records, spans and containers."""
    found: dict[int, object] = {}
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in found:
            continue
        found[id(obj)] = obj
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple):
            stack.extend(obj)
        elif isinstance(obj, CompletedStep | Span):
            for cls in type(obj).__mro__:
                slots = getattr(cls, "__slots__", ())
                names = (slots,) if isinstance(slots, str) else slots
                stack.extend(getattr(obj, name) for name in names if hasattr(obj, name))
    return found


def _owned_size(mine: list[object], other: list[object]) -> int:
    """Bytes reachable from ``mine`` and not from ``other`` (a sibling step).

    Whatever two sibling steps share (the definition's strings, interned keys,
    enum members, small ints, the parent span id) is not owned by either.
    """
    shared = _reachable(other)
    return sum(sys.getsizeof(o) for i, o in _reachable(mine).items() if i not in shared)


def measure_memory(steps: int) -> MemoryResult:
    """Bytes per completed step that a run keeps, by tracemalloc and by getsizeof.

    The ledger and the spans are read once inside the traced window, so rows a
    run may build lazily on first read (and then keep) are counted; the lists
    that reading returns are dropped before the final measurement.
    """
    gc.collect()
    with steptrace.run("bench-warmup") as warmup:
        step_memory()
        len(warmup.completed_steps)
    with steptrace.run("bench-memory") as run:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(steps):
                step_memory()
            gc.collect()
            unread = tracemalloc.get_traced_memory()[0]
            len(run.completed_steps)
            len(run.spans)
            gc.collect()
            read = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        spans = {span.span_id: span for span in run.spans}
        first, second = run.completed_steps[-2:]
    span1, span2 = spans[first.span_id or 0], spans[second.span_id or 0]
    # Before anything reads ``.metadata``, which a span may build on access.
    owned = _owned_size([first, span1], [second, span2])
    return MemoryResult(
        steps=steps,
        bytes_per_step=(read - before) / steps,
        bytes_per_step_unread=(unread - before) / steps,
        getsizeof_completed_step=sys.getsizeof(first),
        getsizeof_span=sys.getsizeof(span1),
        getsizeof_span_metadata=sys.getsizeof(span1.metadata),
        owned_bytes_per_step=owned,
    )


# -- reporting ----------------------------------------------------------------------


@dataclass
class Check:
    name: str
    measured: str
    limit: str
    passed: bool | None
    """None when it could not be measured (counts as failed under --check)."""


def evaluate(rows: dict[str, Row], imp: ImportResult, mem: MemoryResult) -> list[Check]:
    pair = rows["pair"].ns or 0.0
    for row in rows.values():
        if row.ns is not None and row.key not in ("loop", "aloop"):
            row.ratio_pair = row.ns / pair if pair > 0 else None
            base = rows[row.base].ns
            row.ratio_base = row.ns / base if base else None

    checks: list[Check] = []

    def ratio_check(key: str, limit: float) -> None:
        row = rows[key]
        ok = None if row.ratio_pair is None else row.ratio_pair <= limit
        row.target, row.passed = f"<= {limit:g}x pair", ok
        measured = "n/a" if row.ratio_pair is None else f"{row.ratio_pair:.2f}x pair"
        checks.append(Check(f"{row.label} <= {limit:g}x pair", measured, f"{limit:g}x", ok))

    ratio_check("step_sync", STEP_MAX_X_PAIR)
    ratio_check("record", RECORD_MAX_X_PAIR)
    ratio_check("record_budget", RECORD_MAX_X_PAIR)

    with_gc = rows["step_sync_gc"]
    ok_gc = None if with_gc.ratio_base is None else with_gc.ratio_base <= STEP_GC_MAX_X
    with_gc.target, with_gc.passed = f"<= {STEP_GC_MAX_X:g}x gc off", ok_gc
    measured = "n/a" if with_gc.ratio_base is None else f"{with_gc.ratio_base:.2f}x gc off"
    checks.append(
        Check(
            f"{with_gc.label} <= {STEP_GC_MAX_X:g}x gc off", measured, f"{STEP_GC_MAX_X:g}x", ok_gc
        )
    )

    otel, step = rows["otel"], rows["step_sync"]
    if otel.ns and step.ns is not None:
        frac = step.ns / otel.ns
        ok_otel: bool | None = frac <= STEP_MAX_X_OTEL
        measured = f"{frac:.3f}x OTel span"
    else:
        ok_otel, measured = None, "n/a (OpenTelemetry SDK not installed)"
    otel.target, otel.passed = f"@step sync <= {STEP_MAX_X_OTEL:g}x this", ok_otel
    checks.append(
        Check(
            f"@step sync <= {STEP_MAX_X_OTEL:g}x OTel span",
            measured,
            f"{STEP_MAX_X_OTEL:g}x",
            ok_otel,
        )
    )
    checks.append(
        Check(
            "import steptrace adds",
            f"{imp.ms:.1f} ms",
            f"< {IMPORT_MAX_MS:g} ms",
            imp.ms < IMPORT_MAX_MS,
        )
    )
    checks.append(
        Check(
            "completed step record (tracemalloc)",
            f"{mem.bytes_per_step:.0f} B",
            f"< {RECORD_MAX_BYTES} B",
            mem.bytes_per_step < RECORD_MAX_BYTES,
        )
    )
    return checks


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[passed]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@dataclass
class Machine:
    revision: str
    python: str
    platform: str
    cpus: int | None
    load_before: str
    load_after: str = ""


def print_report(
    cfg: Config,
    machine: Machine,
    rows: list[Row],
    checks: list[Check],
    imp: ImportResult,
    mem: MemoryResult,
) -> None:
    print(
        f"steptrace {steptrace.__version__} ({machine.revision}) core benchmark, "
        f"{Path(steptrace.__file__).parent}"
    )
    print(
        f"Python {machine.python} on {machine.platform}, {machine.cpus} CPUs; load average "
        f"{machine.load_before} before, {machine.load_after} after"
    )
    print(
        f"{cfg.repeats} repeats x ~{cfg.target_time:g} s each, median net ns per call "
        f"(empty-loop cost subtracted); gc {'enabled' if cfg.gc_enabled else 'disabled'} "
        "while timing."
    )
    compiled = "on" if STEP_ACCELERATED else "not built or turned off"
    print(f"Compiled step call (steptrace._speedups.step): {compiled}.")
    print(
        "Each repeat of a row that creates records (@step, emit_event, record_llm_usage) "
        "runs in a fresh steptrace.run(), so the run's growing record does not dominate."
    )
    print()
    header = (
        f"{'row':<44} {'ns/call':>9} {'±MAD':>7} {'x pair':>7} {'x base':>7}  "
        f"{'target':<24} {'result':<6}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        spread = None if not row.runs_ns else _relative_mad(row.runs_ns) * 100
        base = "" if row.ratio_base is None or row.base == row.key else f"{row.ratio_base:.2f}"
        result = "" if not row.target else _verdict(row.passed)
        print(
            f"{row.label:<44} {_fmt(row.ns, '9.1f'):>9} "
            f"{'' if spread is None else f'±{spread:.1f}%':>7} "
            f"{_fmt(row.ratio_pair, '.2f') if row.ratio_pair is not None else '':>7} "
            f"{base:>7}  {row.target:<24} {result:<6}" + (f"  {row.note}" if row.note else "")
        )
    print()
    print(
        "±MAD: median absolute deviation of the repeats, relative. x base: against the "
        "plain call; the async @step row against the plain coroutine."
    )
    print()
    print(
        f"import steptrace: {imp.ms:.1f} ms added (median of {imp.runs} fresh interpreters: "
        f"{imp.with_import_ms:.1f} ms with the import, {imp.base_ms:.1f} ms without, "
        "bytecode cached)"
    )
    print(
        f"  -X importtime: {_fmt(imp.importtime_ms, '.1f')} ms cumulative, of which "
        f"{_fmt(imp.own_modules_ms, '.1f')} ms in steptrace's own modules, the rest stdlib"
    )
    print(
        f"completed step: {mem.bytes_per_step:.0f} B per step by tracemalloc over "
        f"{mem.steps} steps in one run, ledger and spans read once "
        f"({mem.bytes_per_step_unread:.0f} B before the first read)"
    )
    print(
        f"  sys.getsizeof: CompletedStep {mem.getsizeof_completed_step} B, its span "
        f"{mem.getsizeof_span} B, span metadata dict when read {mem.getsizeof_span_metadata} B; "
        f"every object one step's row and span own: {mem.owned_bytes_per_step} B"
    )
    print()
    width = max(len(c.name) for c in checks)
    print(f"{'target':<{width}}  {'measured':>22}  {'limit':>9}  result")
    for c in checks:
        print(f"{c.name:<{width}}  {c.measured:>22}  {c.limit:>9}  {_verdict(c.passed)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fast smoke run, noisy numbers")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target fails")
    parser.add_argument("--repeats", type=int, help="timing repeats per row (default 7)")
    parser.add_argument("--target-time", type=float, help="seconds per repeat (default 0.15)")
    parser.add_argument("--gc", action="store_true", help="keep the cyclic GC on while timing")
    args = parser.parse_args(argv)

    cfg = Config(
        repeats=args.repeats or (3 if args.quick else 7),
        target_time=args.target_time or (0.01 if args.quick else 0.15),
        import_runs=3 if args.quick else 11,
        memory_steps=1_000 if args.quick else 10_000,
        gc_enabled=args.gc,
    )
    machine = Machine(
        revision=revision(),
        python=f"{platform.python_version()} ({platform.python_implementation()})",
        platform=f"{platform.system()} {platform.machine()}",
        cpus=os.cpu_count(),
        load_before=load_average(),
    )
    steptrace.reset()
    rows = timing_rows(cfg)
    imp = measure_import(cfg.import_runs)
    mem = measure_memory(cfg.memory_steps)
    machine.load_after = load_average()
    by_key = {row.key: row for row in rows}
    checks = evaluate(by_key, imp, mem)
    print_report(cfg, machine, rows, checks, imp, mem)

    if args.json:
        payload = {
            "steptrace": steptrace.__version__,
            "machine": asdict(machine),
            "config": asdict(cfg),
            "rows": [asdict(row) for row in rows],
            "import": asdict(imp),
            "memory": asdict(mem),
            "checks": [asdict(c) for c in checks],
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")

    if args.check:
        failed = [c.name for c in checks if c.passed is not True]
        if failed:
            print(f"\n--check: {len(failed)} target(s) not met: {', '.join(failed)}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
