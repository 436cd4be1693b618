"""The portal's addresses and search, through its API: a run named as the CLI
names it (``last``, a unique id prefix, a run name) opens; an event's position
in the stream is found from its seq (how an event link scrolls to it); search
within a run finds text in prompts, responses, tool arguments and results,
errors and events, says where each match is, and gives the same answer from
the SQL readers (SQLite and PostgreSQL) as from the ``RunStore`` protocol."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from steptrace.events import AgentEvent, summarize_events
from steptrace.store import (
    EventRow,
    LoadedReads,
    PostgresStore,
    RunRow,
    RunStore,
    SQLiteStore,
    WriteBatch,
    paged_reads,
)
from steptrace.store._paged_postgres import PostgresPagedReads
from steptrace.store._paged_sqlite import SQLitePagedReads

from .._services import fresh_database
from ..test_events import EVENTS
from .conftest import HOSTILE_RUN, IMG_PAYLOAD, SCRIPT_PAYLOAD, Demo, call, portal, synthetic_run
from .test_reads import copy_store

BIG_RUN = "20260104-000000-searchbig"


@pytest.fixture(scope="module")
def sqlite_store(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQLiteStore]:
    path = tmp_path_factory.mktemp("links") / "runs.db"
    shutil.copy(demo.path, path)
    opened = SQLiteStore(path)
    opened.write(synthetic_run(BIG_RUN, steps=6, calls_per_step=4, events=400))
    yield opened
    opened.close()


def _get(app: Any, target: str) -> tuple[int, Any]:
    response = call(app, "GET", target)
    return response.status, response.json()


def test_a_run_opens_by_last_by_a_unique_prefix_and_by_its_name(
    sqlite_store: SQLiteStore, demo: Demo
) -> None:
    newest = sqlite_store.list_runs(limit=1)[0].id
    with portal(sqlite_store) as app:
        for ref, expected in [
            ("last", newest),
            ("latest", newest),
            ("agent-demo", demo.run_id),
            (demo.run_id[:-3], demo.run_id),
            (HOSTILE_RUN, HOSTILE_RUN),
        ]:
            status, body = _get(app, "/api/runs/" + quote(ref))
            assert (status, body["run"]["id"]) == (200, expected), ref
        status, body = _get(app, "/api/runs/no-such-run")
        assert status == 404
        assert "not an id, an id prefix, `last` or a run name" in body["message"]
        status, body = _get(app, "/api/runs/2026")
        assert (status, body["error"]) == (409, "ambiguous_run")
        assert demo.run_id in body["message"]


def test_an_events_position_is_found_from_its_seq(sqlite_store: SQLiteStore, demo: Demo) -> None:
    with portal(sqlite_store) as app:
        every = sqlite_store.events(demo.run_id, limit=1000)
        for index in (0, 7, len(every) - 1):
            status, body = _get(app, f"/api/runs/{demo.run_id}/events/{every[index].seq}")
            assert status == 200
            assert body["offset"] == index
            assert body["event"]["data"] == every[index].data
        assert _get(app, f"/api/runs/{demo.run_id}/events/99999")[0] == 404
        assert _get(app, f"/api/runs/{demo.run_id}/events/-1")[0] == 400


def _hits(app: Any, run_id: str, q: str) -> list[dict[str, Any]]:
    status, body = _get(app, f"/api/runs/{run_id}/search?q={quote(q)}")
    assert status == 200, body
    hits: list[dict[str, Any]] = body["hits"]
    return hits


def test_search_finds_prompts_responses_tool_arguments_results_and_errors(
    sqlite_store: SQLiteStore, demo: Demo
) -> None:
    chats = {
        str(s.span_id)
        for s in sqlite_store.get_run(demo.run_id).spans  # type: ignore[union-attr]
        if s.kind == "llm_call"
    }
    with portal(sqlite_store) as app:
        status_md = _hits(app, demo.run_id, "status.MD")  # case does not matter
        kinds = {hit["kind"] for hit in status_md}
        assert {"prompt", "tool_arguments"} <= kinds
        written = next(h for h in status_md if h["path"] == "response.tool_calls[1].arguments.path")
        assert written["snippet"] == "STATUS.md"
        assert written["span_id"] in chats
        # A prompt line is reported at the first call whose prompt holds it.
        task = [h for h in status_md if h["kind"] == "prompt" and "status report" in h["snippet"]]
        assert len(task) == 1

        rejected = _hits(app, demo.run_id, "is not available in phase")
        assert {h["kind"] for h in rejected} >= {"tool_result", "error"}
        event = next(h for h in rejected if h["kind"] == "error")
        assert (event["path"], isinstance(event["seq"], int)) == ("reason", True)

        hostile = _hits(app, HOSTILE_RUN, "window.__pwned")
        assert {(h["kind"], h["path"]) for h in hostile} >= {
            ("error", "run.error"),
            ("response", "response.text"),
            ("tool_result", "request.messages[2].content"),
        }
        assert any(SCRIPT_PAYLOAD in h["snippet"] for h in hostile)
        assert any(IMG_PAYLOAD in h["snippet"] for h in hostile)
        assert _hits(app, demo.run_id, "zebra-that-is-nowhere") == []
        # LIKE's wildcards are plain characters here: `_` matches only itself.
        underscored = _hits(app, demo.run_id, "e_f")
        assert underscored
        assert all("e_f" in h["snippet"].lower() for h in underscored)


def test_search_refuses_an_empty_or_huge_query(sqlite_store: SQLiteStore, demo: Demo) -> None:
    with portal(sqlite_store) as app:
        huge = "search?q=" + "x" * 201
        for target in ("search", "search?q=", "search?q=%20%20", "search?q=a%00b", huge):
            status, body = _get(app, f"/api/runs/{demo.run_id}/{target}")
            assert (status, body["error"]) == (400, "bad_parameter"), target
        assert _get(app, "/api/runs/no-such-run/search?q=x")[0] == 404


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


NEEDLES = [
    "STATUS.md",
    "release",
    "write_file",
    "not available",
    "pwned",
    "<script>",
    'page": "',
    "100%",
    "a_b",
    "\\n",
    "é",
    "step-3",
    "x",
]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    needle=st.one_of(
        st.sampled_from(NEEDLES),
        st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=4),
    ),
    run=st.sampled_from(["demo", HOSTILE_RUN, BIG_RUN]),
    limit=st.integers(1, 60),
)
def test_sql_search_equals_the_protocol_scan(
    readers: tuple[LoadedReads, LoadedReads], demo: Demo, needle: str, run: str, limit: int
) -> None:
    run_id = demo.run_id if run == "demo" else run
    plain, sql = readers
    assert sql.search(run_id, needle, limit) == plain.search(run_id, needle, limit)


def test_event_positions_are_the_same_from_both_readers(
    readers: tuple[LoadedReads, LoadedReads], demo: Demo
) -> None:
    plain, sql = readers
    for run_id in (demo.run_id, BIG_RUN):
        for seq in (0, 3, 17, 399, 5000):
            assert sql.event_at(run_id, seq) == plain.event_at(run_id, seq)


_SUMMARY_RUNS = iter(range(10**9))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=st.lists(EVENTS, max_size=30))
def test_the_sql_agent_summary_equals_summarize_events(
    sqlite_store: SQLiteStore, events: list[AgentEvent]
) -> None:
    # Loops, the calls outside them and the roll-up: the same from SQL. (A NUL
    # in a name is left out: SQL text functions, and PostgreSQL's JSON, stop at it.)
    values = [
        item
        for e in events
        for value in e.to_dict().values()
        for item in (value if isinstance(value, list) else [value])
    ]
    assume(not any(isinstance(v, str) and "\x00" in v for v in values))
    # Sums stay within SQL's 64-bit integers (no run records 2**40 tokens in a call).
    assume(all(v < 2**40 for v in values if isinstance(v, int)))
    run_id = f"20260105-000000-summ{next(_SUMMARY_RUNS):04d}"
    sqlite_store.write(
        WriteBatch(
            runs=[RunRow(id=run_id, name="summary", status="completed", started_at=1.0)],
            events=[
                EventRow(run_id=run_id, seq=i, span_id=None, data=e.to_dict())
                for i, e in enumerate(events)
            ],
        )
    )
    sql = paged_reads(sqlite_store)
    try:
        assert sql.agent_summary(run_id) == summarize_events(events)
    finally:
        sql.close()
