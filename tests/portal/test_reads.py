"""``LoadedReads`` (the ``RunStore`` protocol) and the SQL paged reads
(``SQLitePagedReads``, ``PostgresPagedReads``) give the same answer to every question the
portal asks, over one real store of each backend (the PostgreSQL one a copy of
the SQLite one):
the demo agent run, the hostile run and a run big enough (more than
``INLINE_SPAN_LIMIT`` spans) that its structure is not shipped whole.
Paging is checked on generated offsets, limits and type filters; a running
run's ``live`` endpoint follows it as it goes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import steptrace
from steptrace.portal._api import EVENT_TYPES
from steptrace.store import (
    SORT_KEYS,
    LoadedReads,
    PostgresStore,
    RunFilters,
    RunRow,
    RunStore,
    SQLiteStore,
    StepRow,
    StoreWriter,
    WriteBatch,
    paged_reads,
)
from steptrace.store._paged import INLINE_SPAN_LIMIT
from steptrace.store._paged_postgres import PostgresPagedReads
from steptrace.store._paged_sqlite import SQLitePagedReads

from .._services import fresh_database
from .conftest import HOSTILE_RUN, Demo, call, portal, synthetic_run

BIG_RUN = "20260102-000000-bigrun00"
RUNNING = "20260103-000000-running0"
FAMILY = [
    RunRow(
        id="fam",
        name="family",
        status="completed",
        started_at=1e9,
        ended_at=1e9 + 9,
        input_tokens=30,
        output_tokens=3,
        cost_usd=2.0,
        llm_calls=3,
    ),
    RunRow(
        id="fam.c",
        name="agent-demo",
        status="completed",
        started_at=1e9 + 1,
        ended_at=1e9 + 2,
        input_tokens=20,
        output_tokens=2,
        cost_usd=1.5,
        llm_calls=2,
        parent_run_id="fam",
        parent_span_id=5,
    ),
    RunRow(
        id="fam.r",
        name="family",
        status="completed",
        started_at=1e9 + 10,
        ended_at=1e9 + 19,
        input_tokens=30,
        output_tokens=3,
        cost_usd=2.0,
        llm_calls=3,
        metadata={"replay_of": "fam"},
    ),
]
"""A run with a child, and a replay of it."""


@pytest.fixture(scope="module")
def sqlite_store(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQLiteStore]:
    path = tmp_path_factory.mktemp("reads") / "runs.db"
    shutil.copy(demo.path, path)
    opened = SQLiteStore(path)
    opened.write(synthetic_run(BIG_RUN, steps=40, calls_per_step=15, events=3000))
    # Still running: no duration, which sorts last both ways.
    opened.write(synthetic_run(RUNNING, steps=2, calls_per_step=1, events=5, status="running"))
    opened.write(WriteBatch(runs=FAMILY))
    yield opened
    opened.close()


def copy_store(source: SQLiteStore, target: RunStore) -> None:
    """Every row of ``source`` written into ``target``."""
    for row in source.list_runs(limit=10_000):
        stored = source.get_run(row.id)
        assert stored is not None
        steps = [
            StepRow(run_id=row.id, seq=seq, data=json.loads(data))
            for seq, data in source._read(
                "SELECT seq, data FROM completed_steps WHERE run_id = ? ORDER BY seq", (row.id,)
            )
        ]
        target.write(
            WriteBatch(
                runs=[row],
                spans=stored.spans,
                events=source.events(row.id, limit=1_000_000),
                steps=steps,
                llm_calls=list(stored.llm_calls),
                transcripts=source.transcripts(row.id),
            )
        )


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, sqlite_store: SQLiteStore) -> Iterator[RunStore]:
    if request.param == "sqlite":
        yield sqlite_store
        return
    server = request.getfixturevalue("postgres_url")
    with fresh_database(server) as url, PostgresStore(url) as opened:
        copy_store(sqlite_store, opened)
        yield opened


@pytest.fixture(scope="module")
def readers(store: RunStore) -> Iterator[tuple[LoadedReads, LoadedReads]]:
    sql = paged_reads(store)
    assert isinstance(sql, SQLitePagedReads | PostgresPagedReads)
    yield LoadedReads(store), sql
    sql.close()


@pytest.fixture(scope="module")
def run_ids(demo: Demo) -> list[str]:
    return [demo.run_id, HOSTILE_RUN, BIG_RUN]


def same(readers: tuple[LoadedReads, LoadedReads], method: str, *args: Any, **kw: Any) -> Any:
    plain, sql = readers
    expected = getattr(plain, method)(*args, **kw)
    assert getattr(sql, method)(*args, **kw) == expected, method
    return expected


def test_the_big_run_is_not_inline(readers: Any) -> None:
    structure = same(readers, "structure", BIG_RUN)
    assert structure.span_count > INLINE_SPAN_LIMIT
    assert not structure.complete
    kinds = {s.kind for s in structure.spans}
    # Only structural spans, plus the one tool span a step sits under.
    assert kinds == {"run", "persona", "step", "tool"}
    assert sum(s.kind == "tool" for s in structure.spans) == 1
    assert structure.leaf_counts[structure.spans[2].span_id] == 30


def test_runs_facets_totals_aggregates(readers: Any, run_ids: list[str]) -> None:
    assert same(readers, "facets")["personas"] == ["attacker", "bystander", "maintainer", "worker"]
    assert same(readers, "personas", run_ids)[HOSTILE_RUN] == ["attacker", "bystander"]
    assert same(readers, "personas", []) == {}
    for filters in (
        RunFilters(),
        RunFilters(status="failed"),
        RunFilters(persona="worker"),
        RunFilters(name="agent-demo"),
        RunFilters(persona="nobody"),
    ):
        same(readers, "totals", filters)
    for by in ("model", "persona", "step", "day"):
        same(readers, "aggregate", by)


def test_child_runs_and_replays_spend_once(readers: Any) -> None:
    children = same(readers, "child_runs", "fam")
    assert [c.id for c in children] == ["fam.c"]
    assert same(readers, "child_runs", "fam.c") == []
    # The family's spend is the parent's alone: the child is in it, the replay
    # spent nothing; a child is counted when its parent does not match.
    family = same(readers, "totals", RunFilters(name="family"))
    assert (family.runs, family.input_tokens, family.cost_usd, family.llm_calls) == (2, 30, 2.0, 3)
    child = same(readers, "totals", RunFilters(name="agent-demo"))
    assert child.runs == 2
    assert child.input_tokens == 20 + readers[0].header(_demo_id(readers)).input_tokens
    everything = same(readers, "totals", RunFilters())
    every = readers[0].store.list_runs(limit=1000)
    assert everything.cost_usd == pytest.approx(
        sum(r.cost_usd for r in every if r.parent_run_id is None and r.replay_of is None)
    )


def _demo_id(readers: Any) -> str:
    (row,) = [r for r in readers[0].store.list_runs(name="agent-demo") if r.id != "fam.c"]
    return str(row.id)


@pytest.mark.parametrize("run", ["demo", HOSTILE_RUN, BIG_RUN, RUNNING, "missing"])
def test_one_run_questions(readers: Any, demo: Demo, run: str) -> None:
    run_id = demo.run_id if run == "demo" else run
    header = same(readers, "header", run_id)
    same(readers, "live_header", run_id)
    same(readers, "structure", run_id)
    same(readers, "span_count", run_id)
    same(readers, "ledger", run_id)
    same(readers, "event_counts", run_id)
    same(readers, "agent_summary", run_id)
    assert (header is None) == (run == "missing")
    structure = readers[0].structure(run_id)
    spans = [] if structure is None else structure.spans[:5]
    for span_id in (0, *(s.span_id for s in spans)):
        same(readers, "span", run_id, span_id)
        same(readers, "children", run_id, span_id, 0, 1000)
        same(readers, "children", run_id, span_id, 0, 1000, leaves_only=True)
        same(readers, "transcript", run_id, span_id)


@settings(max_examples=40, deadline=None)
@given(
    run=st.sampled_from(["demo", BIG_RUN]),
    types=st.none() | st.lists(st.sampled_from(EVENT_TYPES), max_size=3, unique=True),
    offset=st.integers(0, 3100),
    limit=st.integers(1, 300),
)
def test_event_pages(
    readers: Any, demo: Demo, run: str, types: list[str] | None, offset: int, limit: int
) -> None:
    run_id = demo.run_id if run == "demo" else run
    page = same(readers, "events_page", run_id, types, offset, limit)
    after = -1 if not page else page[0].seq - 1
    assert same(readers, "events_after", run_id, types, after, limit) == page or not page


@settings(max_examples=30, deadline=None)
@given(
    offset=st.integers(0, 40),
    limit=st.integers(1, 40),
    leaves=st.booleans(),
    step=st.integers(0, 39),
)
def test_children_and_llm_call_pages(
    readers: Any, offset: int, limit: int, leaves: bool, step: int
) -> None:
    structure = readers[0].structure(BIG_RUN)
    steps = [s for s in structure.spans if s.kind == "step"]
    total = same(
        readers, "children", BIG_RUN, steps[step].span_id, offset, limit, leaves_only=leaves
    )[1]
    assert total == 30
    assert same(readers, "llm_spans", BIG_RUN, offset * 10, limit)[1] == 600


@settings(max_examples=40, deadline=None)
@given(
    sort=st.sampled_from(SORT_KEYS),
    descending=st.booleans(),
    offset=st.integers(0, 5),
    limit=st.integers(1, 5),
    status=st.sampled_from([None, "completed", "failed", "running"]),
)
def test_runs_pages(
    readers: Any, sort: Any, descending: bool, offset: int, limit: int, status: str | None
) -> None:
    same(readers, "runs_page", RunFilters(status=status), sort, descending, limit, offset)


def test_ties_keep_newest_first(tmp_path: Path) -> None:
    # Equal sort values (three runs of one name): both readers break ties newest first.
    store = SQLiteStore(tmp_path / "ties.db")
    try:
        for i in range(3):
            batch = synthetic_run(f"tie-{i}", steps=1, calls_per_step=1, events=2)
            store.write(batch)
        plain, sql = LoadedReads(store), SQLitePagedReads(store)
        try:
            for sort in SORT_KEYS:
                for descending in (True, False):
                    args = (RunFilters(), sort, descending, 10, 0)
                    assert sql.runs_page(*args) == plain.runs_page(*args), (sort, descending)
        finally:
            sql.close()
    finally:
        store.close()


def test_a_running_runs_live_answer_follows_it(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "live.db")
    writer = StoreWriter(store)
    steptrace.add_span_processor(writer)
    try:
        with portal(store) as app:

            @steptrace.step(budget={"max_tokens": 1000})
            def work(n: int) -> None:
                steptrace.record_llm_usage("m-live", 10 * n, n, cost_usd=0.001)

            with steptrace.run("live-run") as run:
                work(1)
                assert writer.flush()
                first = call(app, "GET", f"/api/runs/{run.id}/live").json()
                work(2)
                work(3)
                assert writer.flush()
                second = call(app, "GET", f"/api/runs/{run.id}/live").json()
                screen = call(app, "GET", f"/api/runs/{run.id}").json()
            assert writer.flush()
            ended = call(app, "GET", f"/api/runs/{run.id}/live").json()
    finally:
        steptrace.remove_span_processor(writer)
        writer.close()
        store.close()
    assert (first["run"]["status"], first["run"]["ended_at"]) == ("running", None)
    assert (first["run"]["llm_calls"], first["run"]["input_tokens"], first["span_count"]) == (
        1,
        10,
        1,
    )
    assert (second["run"]["llm_calls"], second["run"]["input_tokens"]) == (3, 60)
    assert second["span_count"] == 3
    assert [s["name"] for s in screen["spans"]] == ["work", "work", "work"]
    assert ended["run"]["status"] == "completed"
    assert ended["run"]["ended_at"] is not None
    assert ended["span_count"] == 4
