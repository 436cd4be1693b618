"""Soak benchmark: a long-lived service's memory stays flat (issue 10 case 4).

A service-like loop serves ``--requests`` requests (default 1,000,000), each a
``@step`` that records one LLM call, from a pool of worker threads (each
thread's default run lives as long as the thread) or as one asyncio task per
request. With ``--store``, the requests run inside one long-lived explicit
run with ``retain=10_000`` recorded into a SQLite file, so retention has to
wait for the writer before it drops anything. The resident set size is read
after a warm-up (a tenth of the requests) and at the end; the growth between
must stay under 50 MB. The same loop with a plain function instead of the
step is timed in the same run, as the baseline the step's cost is shown
against.

Run: ``python benchmarks/bench_soak.py [--quick] [--mode threads|tasks] [--store]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_SRC = Path(__file__).resolve().parents[1] / "src"
if (_SRC / "steptrace").is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

import steptrace  # noqa: E402
from _machine import load_average, revision  # noqa: E402

GROWTH_LIMIT_MB = 50.0
WORKERS = 4
BATCH = 1000  # requests a worker takes at a time (a request queue's drain)


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@steptrace.step(model="m")
def handle(n: int) -> int:
    steptrace.record_llm_usage("m", 12, 7, cost_usd=0.0)
    return n


def plain(n: int) -> int:
    return n


def serve_threads(work: Callable[[int], int], requests: int, bind: bool) -> tuple[float, float]:
    """Serve on a pool of threads; return (rss after warm-up, rss at the end)."""

    def batch(start: int) -> None:
        for n in range(start, min(start + BATCH, requests)):
            work(n)

    job = steptrace.bind(batch) if bind else batch
    warm = requests // 10
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(job, range(0, warm, BATCH)))
        gc.collect()
        after_warm_up = rss_mb()
        list(pool.map(job, range(warm, requests, BATCH)))
    gc.collect()
    return after_warm_up, rss_mb()


def serve_tasks(work: Callable[[int], int], requests: int) -> tuple[float, float]:
    async def request(n: int) -> None:
        work(n)

    async def main() -> tuple[float, float]:
        warm = requests // 10
        for start in range(0, requests, BATCH):
            await asyncio.gather(*(request(n) for n in range(start, start + BATCH)))
            if start + BATCH == warm:
                gc.collect()
                after = rss_mb()
        gc.collect()
        return after, rss_mb()

    return asyncio.run(main())


def measure(mode: str, requests: int, work: Callable[[int], int], bind: bool) -> tuple[float, ...]:
    started = time.perf_counter()
    if mode == "threads":
        warm, end = serve_threads(work, requests, bind)
    else:
        warm, end = serve_tasks(work, requests)
    return time.perf_counter() - started, warm, end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 requests (smoke run)")
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--mode", choices=("threads", "tasks"), default="threads")
    parser.add_argument("--store", action="store_true", help="record into a SQLite store")
    args = parser.parse_args()
    requests = 100_000 if args.quick else args.requests
    print(
        f"steptrace soak: {requests:,} requests, {args.mode}, "
        f"{'recorded into SQLite' if args.store else 'no store'}; "
        f"revision {revision()}, load {load_average()}"
    )
    baseline, _, _ = measure(args.mode, requests, plain, bind=False)
    if args.store:
        from steptrace.store import SQLiteStore, record_runs

        with tempfile.TemporaryDirectory() as tmp:
            writer = record_runs(SQLiteStore(Path(tmp) / "runs.db"))
            try:
                with steptrace.run("service", retain=10_000) as run:
                    seconds, warm, end = measure(args.mode, requests, handle, bind=True)
                writer.flush(600)
            finally:
                writer.stop()
            kept = len(run.ended_steps)
            dropped = run.dropped["steps"]
    else:
        seconds, warm, end = measure(args.mode, requests, handle, bind=False)
        kept = dropped = -1
    growth = end - warm
    verdict = "PASS" if growth < GROWTH_LIMIT_MB else "FAIL"
    print(f"baseline (plain function)   {baseline:8.2f} s")
    print(f"@step + record_llm_usage    {seconds:8.2f} s   {seconds / baseline:6.1f}x baseline")
    print(f"rss after warm-up           {warm:8.1f} MB")
    print(f"rss at the end              {end:8.1f} MB")
    print(
        f"growth                      {growth:8.1f} MB   {verdict} (limit {GROWTH_LIMIT_MB:g} MB)"
    )
    if kept >= 0:
        print(
            f"steps kept in memory        {kept:8,}   dropped after the store read them {dropped:,}"
        )
    if verdict == "FAIL":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
