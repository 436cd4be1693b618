"""The SQLite run store and its background writer, against real files."""

from __future__ import annotations

import contextlib
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import steptrace
from steptrace import LlmCall, PhaseChange
from steptrace.store import SQLiteStore, StoreWriter, WriteBatch, migrate
from steptrace.store._schema import MIGRATIONS, current_version


@steptrace.step(model="m-small", budget={"max_tokens": 50}, error_boundary="continue")
def capped() -> str:
    steptrace.record_llm_usage("m-small", 40, 20, cost_usd=0.002)
    return "never"


@steptrace.step(model="m-large")
def plain() -> str:
    steptrace.record_llm_usage("m-large", 7, 3, cost_usd=0.01)
    steptrace.emit_event(
        LlmCall(
            call_id="c1",
            model="m-large",
            input_tokens=7,
            output_tokens=3,
            cache_tokens=0,
            duration_ms=4,
            iteration=1,
        )
    )
    return "ok"


@steptrace.persona("analyst")
def analyst() -> None:
    plain()
    with steptrace.span("lookup"):
        steptrace.emit_event(PhaseChange(from_phase="plan", to_phase="act", iteration=1))
    capped()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "runs.db") as opened:
        yield opened


@pytest.fixture
def writer(store: SQLiteStore) -> Iterator[StoreWriter]:
    active = StoreWriter(store)
    steptrace.add_span_processor(active)
    yield active
    steptrace.remove_span_processor(active)
    active.close()


def _tables(path: Path) -> set[str]:
    # closing(): a connection's own `with` ends a transaction but leaves it open.
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")
        return {name for (name,) in rows}


def test_migrations_create_the_schema_once(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "runs.db"
    SQLiteStore(path).close()
    assert {"runs", "spans", "events", "completed_steps", "schema_version"} <= _tables(path)
    assert {"runs_by_start", "events_by_run_type"} <= _tables(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert current_version(conn) == len(MIGRATIONS)
        assert migrate(conn) == len(MIGRATIONS)  # idempotent
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (len(MIGRATIONS),)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()
    SQLiteStore(path).close()  # reopening migrates nothing and keeps the tables


def test_a_run_reads_back_as_recorded(store: SQLiteStore, writer: StoreWriter) -> None:
    with steptrace.run("nightly", budget={"max_usd": 1.0}, metadata={"team": "a"}) as run:
        analyst()
        plain()
    # The run's end flushed: no explicit flush needed.
    stored = store.get_run(run.id)
    assert stored is not None
    assert stored.status == "completed"
    assert stored.name == "nightly"
    assert stored.run.metadata == {"team": "a"}
    assert stored.events == run.events
    assert stored.event_span_ids == run.event_span_ids
    assert stored.completed_steps == run.completed_steps
    assert [s.status for s in stored.completed_steps] == ["completed", "skipped", "completed"]
    expected = run.summary()
    got = stored.summary
    assert got.pop("duration_ms") == pytest.approx(expected.pop("duration_ms"), abs=0.01)
    assert got == expected
    assert {s.span_id: (s.parent_id, s.name, s.kind, s.status) for s in stored.spans} == {
        s.span_id: (s.parent_id, s.name, s.kind.value, s.status) for s in run.spans
    }
    assert [s.metadata for s in stored.spans] == [s.to_dict()["metadata"] for s in run.spans]
    (root,) = stored.children(None)
    assert root.kind == "run"
    assert [c.name for c in stored.children(root.span_id)] == [
        "analyst",
        "plain",
    ]
    assert writer.failures == 0
    assert writer.dropped == 0


def test_a_failed_run_and_a_running_one(store: SQLiteStore, writer: StoreWriter) -> None:
    failed = steptrace.run("broken")

    def crash() -> None:
        with failed:
            plain()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        crash()
    live = steptrace.run("live").__enter__()
    try:
        plain()
        assert writer.flush(5)
        stored = store.get_run(live.id)
        assert stored is not None
        assert stored.status == "running"
        assert len(stored.completed_steps) == 1
        assert stored.summary["duration_ms"] is None
    finally:
        live.__exit__(None, None, None)
    broken = store.get_run(failed.id)
    assert broken is not None
    assert broken.status == "failed"
    assert broken.run.error == "RuntimeError: boom"
    assert store.get_run("nope") is None


def test_list_runs_filters_and_pages(store: SQLiteStore, writer: StoreWriter) -> None:
    ids = []
    for i in range(5):
        with steptrace.run("even" if i % 2 == 0 else "odd") as run:
            plain()
        ids.append(run.id)
        time.sleep(0.002)  # distinct start times
    newest_first = ids[::-1]
    assert [r.id for r in store.list_runs()] == newest_first
    assert [r.id for r in store.list_runs(limit=2, offset=1)] == newest_first[1:3]
    assert [r.id for r in store.list_runs(name="odd")] == [ids[3], ids[1]]
    assert store.list_runs(status="failed") == []
    assert len(store.list_runs(name="even", status="completed")) == 3
    first = store.list_runs(limit=1)[0]
    assert (first.llm_calls, first.input_tokens, first.cost_usd) == (1, 7, 0.01)


class BlockingStore(SQLiteStore):
    """A store whose writes wait until released."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.release = threading.Event()

    def write(self, batch: WriteBatch) -> None:
        self.release.wait(10)
        super().write(batch)


def test_the_run_thread_only_enqueues(tmp_path: Path) -> None:
    store = BlockingStore(tmp_path / "runs.db")
    writer = StoreWriter(store, run_end_timeout=0)
    steptrace.add_span_processor(writer)
    try:
        with steptrace.run("fast") as run:
            for _ in range(20):
                analyst()
        # Every write is still held back (a write waits up to 10 s for release):
        # the run finished without waiting for one, or this would hold its row.
        assert not store.release.is_set()
        assert store.list_runs() == []
        store.release.set()
        assert writer.flush(5)
        stored = store.get_run(run.id)
        assert stored is not None
        assert len(stored.completed_steps) == 40
    finally:
        steptrace.remove_span_processor(writer)
        store.release.set()
        writer.close()
        store.close()


class BrokenStore(SQLiteStore):
    def write(self, batch: WriteBatch) -> None:
        raise sqlite3.OperationalError("disk I/O error")


def test_a_broken_store_does_not_break_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BrokenStore(tmp_path / "runs.db")
    writer = StoreWriter(store)
    steptrace.add_span_processor(writer)
    try:
        with steptrace.run("unlucky") as run:
            analyst()
        with steptrace.run("again"):
            plain()
        assert run.status == "completed"
        assert len(run.completed_steps) == 2
        assert writer.flush(5) is True  # nothing new to flush
        assert writer.failures >= 2
        assert writer.written == 0
        warnings = [r for r in caplog.records if r.name == "steptrace.store"]
        assert len([r for r in warnings if r.levelname == "WARNING"]) == 1
    finally:
        steptrace.remove_span_processor(writer)
        writer.close()
        store.close()


def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    store = BlockingStore(tmp_path / "runs.db")
    writer = StoreWriter(store, queue_size=5, run_end_timeout=0)
    steptrace.add_span_processor(writer)
    try:
        with steptrace.run("flood"):
            for _ in range(10):
                plain()
        assert writer.dropped > 0
    finally:
        steptrace.remove_span_processor(writer)
        store.release.set()
        writer.close()
        store.close()


def _child_run(path: str, name: str) -> str:
    steptrace.configure(strict=True)
    store = SQLiteStore(path)
    writer = StoreWriter(store)
    steptrace.add_span_processor(writer)
    try:
        with steptrace.run(name) as run:
            for _ in range(20):
                analyst()
    finally:
        steptrace.remove_span_processor(writer)
        writer.close()
        store.close()
    return run.id


def test_two_processes_write_to_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        ids = pool.starmap(_child_run, [(path, "worker-a"), (path, "worker-b")])
    with SQLiteStore(path) as store:
        assert {r.name for r in store.list_runs()} == {"worker-a", "worker-b"}
        for run_id in ids:
            stored = store.get_run(run_id)
            assert stored is not None
            assert stored.status == "completed"
            assert len(stored.completed_steps) == 40
            assert len(stored.events) == 40


def test_a_first_version_database_is_migrated_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (1, 0)")
        conn.execute(
            "INSERT INTO runs (id, name, status, started_at, ended_at, metadata, "
            "input_tokens, output_tokens, cost_usd, llm_calls) "
            "VALUES ('old', 'legacy', 'completed', 10.0, 12.5, '{\"team\":\"a\"}', 7, 3, 0.01, 1)"
        )
        conn.execute(
            "INSERT INTO spans (run_id, span_id, parent_id, name, kind, start_ns, end_ns, "
            "status, error, metadata) "
            "VALUES ('old', 1, NULL, 'legacy', 'run', 1, 2, 'ok', NULL, '{}')"
        )
        conn.execute(
            "INSERT INTO events (run_id, seq, span_id, type, data) VALUES ('old', 0, 1, "
            '\'phase_change\', \'{"type":"phase_change","from_phase":"a",'
            '"to_phase":"b","iteration":1}\')'
        )
    finally:
        conn.close()
    with SQLiteStore(path) as store:
        stored = store.get_run("old")
        assert stored is not None
        assert (stored.status, stored.run.metadata, stored.run.llm_calls) == (
            "completed",
            {"team": "a"},
            1,
        )
        assert stored.events == [PhaseChange(from_phase="a", to_phase="b", iteration=1)]
        assert stored.spans[0].context == {}  # the column migration 2 added, defaulted
        assert stored.llm_calls == []
        assert store.transcripts("old") == []
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert current_version(conn) == len(MIGRATIONS)
    finally:
        conn.close()


def test_opening_waits_for_another_process_holding_a_new_file(tmp_path: Path) -> None:
    # Switching a file to WAL needs it to itself, and while another connection
    # holds a write transaction on it SQLite refuses at once, without its busy
    # timeout (two processes opening a new file together): opening must wait.
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    outcome: list[object] = []

    def open_store() -> None:
        try:
            SQLiteStore(path).close()
            outcome.append("opened")
        except Exception as exc:
            outcome.append(exc)

    opener = threading.Thread(target=open_store)
    opener.start()
    opener.join(0.3)
    waited = opener.is_alive()
    holder.execute("COMMIT")
    holder.close()
    opener.join(10)
    assert outcome == ["opened"]
    assert waited  # it was still waiting for the lock, not failed


def test_a_store_that_fails_to_open_closes_its_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file claiming every migration while its runs table lacks columns: the
    # connection opens and migrates nothing, then reading the runs fails. The
    # store was never handed out, so it must close what it opened (Python 3.13
    # warns about a connection left to the garbage collector).
    path = tmp_path / "odd.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
        conn.executemany(
            "INSERT INTO schema_version VALUES (?, 0)",
            [(v,) for v in range(1, len(MIGRATIONS) + 1)],
        )
        conn.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, status TEXT)")
    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def tracking(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = connect(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", tracking)
    with pytest.raises(sqlite3.OperationalError):
        SQLiteStore(path)
    (conn,) = opened
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        conn.execute("SELECT 1")
