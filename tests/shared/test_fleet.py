"""Many processes against one shared budget, on the real servers: eight
spawned workers hammering a limit never overspend it by more than the
documented bound, the pool's total is exactly the sum of the workers' own
ledgers, and a killed worker's reservation expires."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest

from steptrace import SharedBudget
from steptrace._shared import SharedPool

from . import _workers

WORKERS = 8
WORST_CALL = 200  # the pre-flight's worst case: 100 prompt + 100 output tokens


def run_fleet(budget: SharedBudget, preflight: bool) -> list[dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    with context.Pool(WORKERS) as workers:
        results = workers.starmap(
            _workers.hammer,
            [(budget.to_carrier(), preflight, seed) for seed in range(WORKERS)],
        )
    return results


def test_eight_workers_with_preflight_never_overspend(pool: SharedPool, key: str) -> None:
    limit = 20_000
    budget = SharedBudget(key, max_tokens=limit, max_usd=1.0, window="total", pool=pool)
    results = run_fleet(budget, preflight=True)
    totals = budget.totals()
    # Every call reserved its worst case first: the limit holds exactly.
    assert totals.tokens <= limit
    assert totals.reserved_tokens == 0
    assert totals.tokens == sum(r["tokens"] for r in results)
    assert totals.pico == sum(r["pico"] for r in results)
    assert sum(r["calls"] for r in results) > 100
    # Each worker stopped at a refusal, when the pool was nearly full.
    assert all(r["error"]["preflight"] and r["error"]["scope"] == "shared" for r in results)
    assert totals.tokens > limit - WORKERS * WORST_CALL


def test_eight_workers_without_preflight_overspend_by_at_most_one_call_each(
    pool: SharedPool, key: str
) -> None:
    limit = 20_000
    budget = SharedBudget(key, max_tokens=limit, window="total", pool=pool)
    results = run_fleet(budget, preflight=False)
    totals = budget.totals()
    # The documented bound: each worker may cross with its one call in flight.
    assert limit < totals.tokens <= limit + sum(r["largest"] for r in results)
    assert totals.tokens == sum(r["tokens"] for r in results)
    assert totals.pico == sum(r["pico"] for r in results)
    assert all("preflight" not in r["error"] and r["error"]["scope"] == "shared" for r in results)


def test_a_killed_workers_reservation_expires(pool: SharedPool, key: str) -> None:
    budget = SharedBudget(key, max_tokens=1000, window="total", pool=pool, reservation_ttl=3.0)
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    doomed = context.Process(target=_workers.reserve_and_hang, args=(budget.to_carrier(), ready))
    doomed.start()
    try:
        pid = ready.get(timeout=60)
        _workers.kill(pid)
        doomed.join(30)
        assert doomed.exitcode == -9  # killed: it never settled or released
        held = budget.totals()
        assert (held.tokens, held.reserved_tokens) == (0, 800)
    finally:
        if doomed.is_alive():
            doomed.kill()
        ready.close()
    # The hold outlives its owner only until its TTL, on the pool's clock.
    deadline = time.monotonic() + 60
    while budget.totals().reserved_tokens:
        if time.monotonic() > deadline:
            pytest.fail("the killed worker's reservation never expired")
        time.sleep(0.1)
    reservation, _ = pool.reserve(
        budget.pool_key("-"), 1000, 0, max_tokens=1000, max_pico=None, ttl=60, retention=None
    )
    assert reservation is not None  # the whole limit is free again
