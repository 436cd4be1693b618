"""What only the PostgreSQL store promises, against a real server on 127.0.0.1.

Migrations from an empty database and from schema version 1, openers racing
to migrate one database, worker processes recording into one database through
``StoreWriter``, errors that name the URL without its password, the pool
surviving failed batches, server-side disconnects and forks, and psycopg
loaded only when a PostgreSQL store is opened. What every backend promises is
in ``test_store_contract.py``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import steptrace
from steptrace import PhaseChange
from steptrace.store import (
    BatchRejected,
    EventRow,
    LlmCallRow,
    PostgresStore,
    RunRow,
    StoreWriter,
    WriteBatch,
    open_store,
    record_runs,
)
from steptrace.store._postgres import migrate, redact_url
from steptrace.store._schema import MIGRATIONS

from .._services import database_url, fresh_database

LATEST = len(MIGRATIONS)


@pytest.fixture
def db_url(postgres_url: str) -> Iterator[str]:
    with fresh_database(postgres_url) as url:
        yield url


def _versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    return [version for (version,) in rows]


def _sessions(url: str) -> set[int]:
    """Backend pids of the other sessions connected to ``url``'s database."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return {pid for (pid,) in rows}


def _phase(number: int = 1) -> dict[str, Any]:
    return PhaseChange(from_phase="a", to_phase="b", iteration=number).to_dict()


# -- migrations ---------------------------------------------------------------------


def test_migrations_create_the_schema_once(db_url: str) -> None:
    PostgresStore(db_url).close()
    with psycopg.connect(db_url) as conn:
        tables = {
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
        indexes = {
            name
            for (name,) in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
            )
        }
        span_columns: dict[str, str] = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'spans'"
            ).fetchall()
        )
    assert {
        "runs",
        "spans",
        "events",
        "completed_steps",
        "llm_calls",
        "transcripts",
        "schema_version",
    } <= tables
    assert {"runs_by_start", "runs_by_status_start", "events_by_run_type"} <= indexes
    assert span_columns["span_id"] == "bigint"
    assert span_columns["metadata"] == "text"  # JSON as text, as in SQLite
    assert _versions(db_url) == list(range(1, LATEST + 1))
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert migrate(conn) == LATEST  # idempotent
    PostgresStore(db_url).close()  # reopening migrates nothing
    assert _versions(db_url) == list(range(1, LATEST + 1))


def _a_live_run() -> steptrace.Run:
    """A finished run (not stored) whose event and ledger rows a v1 database
    would have held."""

    @steptrace.step(model="m-small")
    def plan() -> str:
        steptrace.record_llm_usage("m-small", 3, 2, cost_usd=0.01)
        steptrace.emit_event(PhaseChange(from_phase="plan", to_phase="act", iteration=1))
        return "ok"

    with steptrace.run("from v1") as run:
        plan()
    return run


def test_a_version_1_database_is_migrated_keeping_its_runs(db_url: str) -> None:
    live = _a_live_run()
    (root,) = [s for s in live.spans if s.parent_id is None]
    now = time.time()
    with psycopg.connect(db_url, autocommit=True) as conn:
        # What steptrace's first schema made: migration 1 only, version 1 recorded.
        conn.execute(
            "CREATE TABLE schema_version ("
            "version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (1, %s)", (now - 86_400,))
        conn.execute(
            "INSERT INTO runs (id, name, status, started_at, ended_at, metadata, budget, "
            "input_tokens, output_tokens, cost_usd, llm_calls) "
            "VALUES (%s, %s, 'completed', %s, %s, '{\"team\": \"a\"}', NULL, 3, 2, 0.01, 1)",
            (live.id, live.name, live.started_at, live.ended_at),
        )
        conn.execute(
            "INSERT INTO spans (run_id, span_id, parent_id, name, kind, start_ns, end_ns, "
            "status, error, metadata) VALUES (%s, %s, NULL, %s, 'run', 1, 2, 'ok', NULL, '{}')",
            (live.id, root.span_id, live.name),
        )
        conn.execute(
            "INSERT INTO events (run_id, seq, span_id, type, data) VALUES (%s, 0, %s, %s, %s)",
            (
                live.id,
                live.event_span_ids[0],
                live.events[0].type,
                json.dumps(live.events[0].to_dict()),
            ),
        )
        conn.execute(
            "INSERT INTO completed_steps (run_id, seq, data) VALUES (%s, 0, %s)",
            (live.id, json.dumps(live.completed_steps[0].to_dict())),
        )
        # A v1 run left running two hours ago: no pid, host or heartbeat to go by.
        conn.execute(
            "INSERT INTO runs (id, name, status, started_at) VALUES ('old', 'old', 'running', %s)",
            (now - 7200,),
        )
    with PostgresStore(db_url) as store:
        assert _versions(db_url) == list(range(1, LATEST + 1))
        stored = store.get_run(live.id)
        assert stored is not None
        assert (stored.name, stored.status, stored.run.metadata) == (
            "from v1",
            "completed",
            {"team": "a"},
        )
        assert (stored.run.pid, stored.run.host, stored.run.heartbeat_at) == (None, None, None)
        assert stored.events == live.events
        assert stored.event_span_ids == live.event_span_ids
        assert stored.completed_steps == live.completed_steps
        assert [(s.name, s.kind, s.context) for s in stored.spans] == [("from v1", "run", {})]
        assert stored.llm_calls == []  # v1 kept no call log
        old = store.get_run("old")
        assert old is not None
        assert old.status == "interrupted"
        assert old.run.ended_at == pytest.approx(now - 7200)
        # The new tables take rows.
        store.write(
            WriteBatch(
                llm_calls=[
                    LlmCallRow(
                        run_id=live.id,
                        seq=0,
                        span_id=root.span_id,
                        step="plan",
                        persona=None,
                        model="m-small",
                        input_tokens=3,
                        output_tokens=2,
                        cache_tokens=0,
                        cost_usd=0.01,
                        duration_ms=1,
                        at=now,
                    )
                ]
            )
        )
        assert [a.key for a in store.aggregate("step", run_id=live.id)] == ["plan"]


def test_openers_racing_on_an_empty_database_migrate_it_once(db_url: str) -> None:
    openers = 6
    start = threading.Barrier(openers)
    errors: list[BaseException] = []
    stores: list[PostgresStore] = []

    def open_one() -> None:
        try:
            start.wait(10)
            stores.append(PostgresStore(db_url, pool_size=1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(openers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        assert len(stores) == openers
        assert _versions(db_url) == list(range(1, LATEST + 1))
        stores[0].write(
            WriteBatch(runs=[RunRow(id="r", name="r", status="completed", started_at=1)])
        )
        assert all(store.run_ids() == ["r"] for store in stores)
    finally:
        for store in stores:
            store.close()


# -- many processes, one database ---------------------------------------------------


@steptrace.step(model="m-small")
def _work(number: int) -> None:
    steptrace.record_llm_usage("m-small", 10, 5, cost_usd=0.001)
    steptrace.emit_event(PhaseChange(from_phase="a", to_phase="b", iteration=number))


@steptrace.persona("worker")
def _shift() -> None:
    for number in range(20):
        _work(number)


def _record_in_child(url: str, name: str) -> tuple[str, int, int]:
    steptrace.configure(strict=True)
    writer = record_runs(url)  # open_store picks PostgresStore for the URL
    try:
        with steptrace.run(name) as run:
            _shift()
    finally:
        writer.stop()
    return run.id, writer.failures, writer.dropped


def test_worker_processes_record_into_one_database(db_url: str) -> None:
    names = [f"worker-{n}" for n in range(3)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(len(names)) as pool:
        results = pool.starmap(_record_in_child, [(db_url, name) for name in names])
    assert [(failures, dropped) for _, failures, dropped in results] == [(0, 0)] * len(names)
    with PostgresStore(db_url) as store:
        assert sorted(run.name for run in store.list_runs()) == names
        for run_id, _, _ in results:
            stored = store.get_run(run_id)
            assert stored is not None
            assert stored.status == "completed"
            assert len(stored.completed_steps) == 20
            assert len(stored.events) == 20
            assert len(stored.llm_calls) == 20
            assert len(stored.spans) == 22  # run, persona, 20 steps
        (worker,) = store.aggregate("persona")
        assert (worker.key, worker.llm_calls, worker.input_tokens) == ("worker", 60, 600)
        assert worker.cost_usd == pytest.approx(0.06)


# -- errors ---------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_server_names_the_url_not_the_password() -> None:
    port = _closed_port()
    url = f"postgresql://postgres:hunter2@127.0.0.1:{port}/postgres"
    with pytest.raises(ConnectionError) as raised:
        PostgresStore(url, connect_timeout=2)
    message = str(raised.value)
    assert f"postgresql://postgres:***@127.0.0.1:{port}/postgres" in message
    assert "hunter2" not in message
    assert "Connection refused" in message
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        open_store(url)


def test_an_unknown_database_is_named(postgres_url: str) -> None:
    url = database_url(postgres_url, "no_such_database") + "?password=hunter2"
    with pytest.raises(ConnectionError) as raised:
        PostgresStore(url)
    message = str(raised.value)
    assert "no_such_database?password=***" in message
    assert 'database "no_such_database" does not exist' in message
    assert "hunter2" not in message


def test_a_malformed_url_is_named() -> None:
    with pytest.raises(ValueError, match=r"bad database URL postgresql://u:\*\*\*@127\.0\.0\.1"):
        PostgresStore("postgresql://u:hunter2@127.0.0.1:5432/db?no_such_option=1")


def test_redact_url_hides_every_password() -> None:
    assert redact_url("postgresql://u:p@h:5/d") == "postgresql://u:***@h:5/d"
    assert redact_url("postgres://u@h/d?password=p&sslmode=require") == (
        "postgres://u@h/d?password=***&sslmode=require"
    )
    assert redact_url("postgresql://h/d") == "postgresql://h/d"
    kept = "postgresql://u:p@h/d?options=-csearch_path%3Dst&PASSWORD=p&application_name=a%20b"
    assert redact_url(kept) == (
        "postgresql://u:***@h/d?options=-csearch_path%3Dst&password=***&application_name=a%20b"
    )
    assert redact_url("postgresql://u:p:q@h1,h2/d") == "postgresql://u:***@h1,h2/d"


def test_pool_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="pool_size must be at least 1, got 0"):
        PostgresStore("postgresql://u@127.0.0.1:1/db", pool_size=0)


def test_without_psycopg_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # ``import psycopg`` raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'steptrace\[postgres\]'"):
        PostgresStore("postgresql://u@127.0.0.1:1/db")


def test_importing_the_store_does_not_import_psycopg() -> None:
    code = (
        "import sys, steptrace.store as store\n"
        "assert 'psycopg' not in sys.modules\n"
        "assert store.PostgresStore.__name__ == 'PostgresStore'\n"
        "assert 'psycopg' not in sys.modules\n"
        "assert 'PostgresStore' in store.__all__\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- the pool -------------------------------------------------------------------------


def test_a_failed_batch_leaves_data_and_connection_intact(db_url: str) -> None:
    with PostgresStore(db_url, pool_size=1) as store:
        kept = RunRow(id="kept", name="k", status="running", started_at=1.0)
        store.write(
            WriteBatch(
                runs=[kept], events=[EventRow(run_id="kept", seq=0, span_id=None, data=_phase())]
            )
        )
        broken = WriteBatch(
            runs=[RunRow(id="kept", name="k", status="completed", started_at=1.0)],
            events=[
                EventRow(run_id="kept", seq=n, span_id=None, data=_phase(n)) for n in range(1, 9)
            ],
            # The last statement of the batch fails: a row without its model.
            llm_calls=[
                LlmCallRow(
                    run_id="kept",
                    seq=0,
                    span_id=None,
                    step=None,
                    persona=None,
                    model=None,  # type: ignore[arg-type]
                    input_tokens=1,
                    output_tokens=1,
                    cache_tokens=0,
                    cost_usd=None,
                    duration_ms=1,
                    at=1.0,
                )
            ],
        )
        sessions = _sessions(db_url)
        with pytest.raises(BatchRejected) as refused:
            store.write(broken)
        assert isinstance(refused.value.__cause__, psycopg.errors.NotNullViolation)
        assert store.list_runs() == [kept]
        assert store.event_counts("kept") == {"phase_change": 1}
        # The one pooled connection was rolled back and reused, not replaced.
        assert _sessions(db_url) == sessions
        store.write(WriteBatch(heartbeats=[("kept", 2.0)]))
        assert store.list_runs()[0].heartbeat_at == 2.0


def test_connections_the_server_closed_are_replaced(postgres_url: str, db_url: str) -> None:
    with PostgresStore(db_url, pool_size=2) as store:
        store.write(WriteBatch(runs=[RunRow(id="a", name="a", status="completed", started_at=1.0)]))
        before = _sessions(db_url)
        assert before
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            for pid in before:
                admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))  # waits
        # The next write lands on a stale pooled connection: retried on a new one.
        store.write(WriteBatch(runs=[RunRow(id="b", name="b", status="completed", started_at=2.0)]))
        assert store.run_ids() == ["b", "a"]
        assert not (_sessions(db_url) & before)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_opens_its_own_connections(db_url: str) -> None:
    with PostgresStore(db_url, pool_size=1) as store:
        store.write(
            WriteBatch(runs=[RunRow(id="parent", name="p", status="completed", started_at=1.0)])
        )
        (parent_session,) = _sessions(db_url)

        def child() -> None:
            store.write(
                WriteBatch(runs=[RunRow(id="child", name="c", status="completed", started_at=2.0)])
            )
            assert store.run_ids() == ["child", "parent"]

        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        process.join(30)
        if process.is_alive():  # stuck on a connection it shares with the parent
            process.kill()
            process.join()
        assert process.exitcode == 0
        # The parent's session survived the child, which did not touch it.
        assert store.run_ids() == ["child", "parent"]
        assert parent_session in _sessions(db_url)


def test_open_store_and_the_environment_select_postgres(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = open_store(db_url)
    assert isinstance(opened, PostgresStore)
    opened.close()
    short = "postgres://" + db_url.removeprefix("postgresql://")
    monkeypatch.setenv("STEPTRACE_STORE", short)
    store = open_store()
    try:
        assert isinstance(store, PostgresStore)
        assert repr(store) == f"PostgresStore({short!r})"
        writer = StoreWriter(store)
        steptrace.add_span_processor(writer)
        try:
            with steptrace.run("via env") as run:
                _work(0)
        finally:
            steptrace.remove_span_processor(writer)
            writer.close()
        assert store.run_ids() == [run.id]
    finally:
        store.close()


def test_runs_go_on_while_the_database_refuses_connections(
    postgres_url: str, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = db_url.rsplit("/", 1)[1]
    store = PostgresStore(db_url)
    writer = StoreWriter(store)
    steptrace.add_span_processor(writer)
    try:
        with steptrace.run("before") as before:
            _shift()
        assert writer.flush(10)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            # Waits (up to 10 s) until each session has ended.
            admin.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )
        with steptrace.run("during") as during:
            _shift()
        assert during.status == "completed"
        assert len(during.completed_steps) == 20
        # Every record of the run handled (and failed) before connections return.
        writer.flush(10)
        assert writer.failures >= 1
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        with steptrace.run("after") as after:
            _shift()
        assert writer.flush(10)
    finally:
        steptrace.remove_span_processor(writer)
        writer.close()
    warnings = [
        r for r in caplog.records if r.name == "steptrace.store" and r.levelname == "WARNING"
    ]
    assert len(warnings) == 1
    assert warnings[0].exc_info is not None
    reason = str(warnings[0].exc_info[1])
    assert f"cannot connect to {db_url}" in reason
    assert "is not currently accepting connections" in reason
    try:
        stored = {run_id: store.get_run(run_id) for run_id in (before.id, after.id)}
        assert all(s is not None and len(s.completed_steps) == 20 for s in stored.values())
        assert store.get_run(during.id) is None
    finally:
        store.close()


def test_the_tables_go_where_the_search_path_says(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA fleet")
    with PostgresStore(db_url + "?options=-csearch_path%3Dfleet") as store:
        store.write(WriteBatch(runs=[RunRow(id="r", name="r", status="completed", started_at=1.0)]))
        assert store.run_ids() == ["r"]
    with psycopg.connect(db_url) as conn:
        schemas = {
            schema
            for (schema,) in conn.execute(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = 'runs'"
            )
        }
    assert schemas == {"fleet"}
