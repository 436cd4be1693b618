"""A stored run equals the live run at any pace and thread count (issue 10
case 5): step ends interleaved with the writer's reads at generated points,
and real threads racing the writer, lose no ledger row; late usage reaches the
store as an amended row."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steptrace
from steptrace.store import SQLiteStore, StoreWriter, record_runs


class RacingList(list[Any]):
    """An ended-steps list where a step ends *while* a reader asks its length:
    ``moves`` says, for each ``len()``, whether the next waiting frame is
    appended first (what another thread ending a step at that instant does);
    once ``moves`` runs out, every ``len()`` lets one step end."""

    def __init__(self, waiting: list[Any], moves: Iterator[bool]) -> None:
        super().__init__()
        self.waiting = waiting
        self.moves: Iterator[bool] = moves

    def __len__(self) -> int:
        move: bool = next(self.moves, True)
        if self.waiting and move:
            self.append(self.waiting.pop(0))
        return super().__len__()


@steptrace.step
def work(n: int) -> None:
    steptrace.record_llm_usage("m", n, 1, cost_usd=0.0)


def _work_1500() -> None:
    for n in range(1500):
        work(n)


def _stored_rows(path: Path, run_id: str) -> list[steptrace.CompletedStep]:
    with SQLiteStore(path) as store:
        stored = store.get_run(run_id)
    assert stored is not None
    return stored.completed_steps


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.integers(1, 40), moves=st.lists(st.booleans(), min_size=1, max_size=200))
def test_steps_ending_between_the_writers_reads_are_all_stored(
    tmp_path_factory: pytest.TempPathFactory, steps: int, moves: list[bool]
) -> None:
    steptrace.reset()
    path = tmp_path_factory.mktemp("race") / "runs.db"
    writer = record_runs(SQLiteStore(path))
    try:
        with steptrace.run("race") as run:
            for n in range(steps):
                work(n)
            waiting = list(run.ended_steps)
            run.ended_steps = RacingList(waiting, iter(moves))
            while waiting:
                with steptrace.span("tick"):  # each span end makes the writer read the run
                    pass
                assert writer.flush(5)
        assert writer.flush(5)
        live = run.completed_steps
    finally:
        writer.stop()
    assert _stored_rows(path, run.id) == live
    assert len(live) == steps


def test_threads_racing_the_writer_lose_no_ledger_row(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    writer = StoreWriter(SQLiteStore(path), interval=0.0005, max_batch=7)
    steptrace.add_span_processor(writer)
    try:
        with steptrace.run("threads") as run:
            threads = [threading.Thread(target=steptrace.bind(_work_1500)) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert writer.flush(30)
    finally:
        writer.stop()
    stored = _stored_rows(path, run.id)
    assert len(stored) == 6000
    assert sorted(r.span_id or 0 for r in stored) == sorted(
        r.span_id or 0 for r in run.completed_steps
    )


def test_late_usage_reaches_the_store(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    writer = record_runs(SQLiteStore(path))
    go = threading.Event()
    finished = threading.Event()

    @steptrace.step
    def background() -> None:
        def late() -> None:
            go.wait(5)
            try:
                steptrace.record_llm_usage("m", 10, 10, cost_usd=2.0)
            except steptrace.BudgetExhausted:
                pass  # recorded, then over the finished run's limit
            finally:
                finished.set()

        threading.Thread(target=steptrace.bind(late)).start()

    try:
        with steptrace.run("late", budget={"max_usd": 1}) as run:
            background()
        go.set()
        assert finished.wait(5)
        assert writer.flush(5)
    finally:
        writer.stop()
    with SQLiteStore(path) as store:
        stored = store.get_run(run.id)
    assert stored is not None
    assert stored.status == "over_budget"
    assert stored.completed_steps[0].cost_usd == 2.0
    assert len(stored.llm_trace) == 1
