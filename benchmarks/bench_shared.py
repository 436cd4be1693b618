"""Shared budget benchmark: what a model call pays for a shared budget.

Run ``python benchmarks/bench_shared.py`` (``--quick`` for a smoke run). It
starts a throwaway Redis and PostgreSQL on 127.0.0.1 (``tests/_services.py``),
then times, per pool, one pre-flight plus one record (``check_budget`` +
``record_llm_usage``, what every ``llm_call`` does: one reservation and one
settle, two round trips) against the same pair with only a local budget, and
the rate eight processes reach together on one counter. Figures are medians
of the repeats, in microseconds per call and calls per second.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
for extra in (_ROOT / "src", _ROOT):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import steptrace  # noqa: E402
from _machine import load_average, revision  # noqa: E402
from steptrace import SharedBudget  # noqa: E402


class FlatPrice:
    def cost_usd(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float:
        return (input_tokens + output_tokens) * 1e-6


def _calls(budget: Any, count: int) -> float:
    """Seconds per pre-flight + record pair inside a run with ``budget``."""
    with steptrace.run("bench", budget=budget):
        started = time.perf_counter()
        for _ in range(count):
            steptrace.check_budget("m", 100, 100)
            steptrace.record_llm_usage("m", 50, 50)
        return (time.perf_counter() - started) / count


def _worker(carrier: dict[str, Any], count: int) -> float:
    steptrace.configure(price_source=FlatPrice())
    budget = SharedBudget.from_carrier(carrier, "bench")
    return _calls(budget, count)


def _fleet(budget: SharedBudget, workers: int, count: int) -> float:
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        pool.starmap(_worker, [(budget.to_carrier(), 5)] * workers)  # warm up imports
        started = time.perf_counter()
        pool.starmap(_worker, [(budget.to_carrier(), count)] * workers)
        elapsed = time.perf_counter() - started
    return workers * count / elapsed


@contextlib.contextmanager
def _servers() -> Iterator[dict[str, str]]:
    from tests._services import MissingService, local_postgres, local_redis

    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for name, start in (("redis", local_redis), ("postgres", local_postgres)):
            try:
                urls[name] = stack.enter_context(start())
            except MissingService as missing:
                print(f"  ({name} skipped: {missing})")
        yield urls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, one repeat")
    args = parser.parse_args()
    count = 300 if args.quick else 2000
    repeats = 1 if args.quick else 5
    print(f"steptrace {revision()} · load {load_average()} · python {sys.version.split()[0]}")
    steptrace.configure(price_source=FlatPrice())
    local = statistics.median(_calls({"max_tokens": 10**12}, count) for _ in range(repeats))
    print(f"{'local budget only':<40} {local * 1e6:8.1f} µs per call (check + record)")
    from steptrace.shared import PostgresPool, RedisPool

    with _servers() as urls:
        for name, url in urls.items():
            pool = RedisPool(url) if name == "redis" else PostgresPool(url)
            budget = SharedBudget(
                "bench-" + uuid.uuid4().hex[:8], max_tokens=10**12, window="total", pool=pool
            )
            one = statistics.median(_calls(budget, count) for _ in range(repeats))
            rate = _fleet(budget, 8, count)
            print(
                f"{'shared budget, ' + name:<40} {one * 1e6:8.1f} µs per call "
                f"(+{(one - local) * 1e6:.1f}); 8 processes: {rate:,.0f} calls/s"
            )
            pool.close()
    print(f"load after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
