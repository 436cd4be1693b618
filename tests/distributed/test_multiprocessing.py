"""The standard library's ``multiprocessing``, the path the README says works
like the engines: with ``spawn`` and a pool initializer that starts recording,
one run fans out to worker processes, stored whole in the PostgreSQL store
within one shared budget. With ``fork`` (Linux's default before Python 3.14)
the children of a recording process store their part too: the writer reopens
the store in each child."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import pytest

import steptrace
from steptrace._shared import SharedPool
from steptrace.store import StoreWriter, open_store

from . import _work
from ._fanout import check_one_faithful_run, fan_out_run


def test_spawned_workers_continue_one_run_in_one_store_within_one_shared_budget(
    pool: SharedPool,
    key: str,
    recording: StoreWriter,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STEPTRACE_STORE", store_url)  # the children's environment
    context = multiprocessing.get_context("spawn")

    def dispatch(carrier: dict[str, Any], docs: list[str]) -> list[dict[str, Any]]:
        ready = context.Barrier(2)
        with context.Pool(2, _work.setup_worker_with, (ready,)) as workers:
            return workers.starmap(_work.summarize_part, [(carrier, doc) for doc in docs])

    run, budget, results = fan_out_run(dispatch, pool, key)
    check_one_faithful_run(store_url, run, budget, results, os.getpid())


def test_forked_workers_of_a_recording_process_store_their_part(
    recording: StoreWriter, store_url: str
) -> None:
    context = multiprocessing.get_context("fork")
    with steptrace.run("forked") as run:
        carrier = steptrace.inject()
        with context.Pool(2) as workers:
            results = workers.starmap(_work.summarize_part, [(carrier, "a"), (carrier, "b")])
    assert [r["summary"] for r in results] == [_work.REPLY] * 2
    store = open_store(store_url)
    try:
        stored = store.get_run(run.id)
    finally:
        store.close()
    assert stored is not None
    parts = stored.children(run.root.span_id)
    assert sorted(p.span_id for p in parts) == sorted(r["root_span_id"] for r in results)
    for part in parts:
        assert [s.name for s in stored.children(part.span_id)] == ["summarize"]
