"""What the writer records beyond spans and events: the LLM call log with its
step and persona, transcripts (redacted, or no content at all), heartbeats,
runs of dead processes marked ``interrupted`` (a real SIGKILL), and exports of
a stored run equal to those of the live one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import steptrace
from steptrace import llm
from steptrace.export import jsonl_records, otlp_json
from steptrace.llm._config import reset_configuration
from steptrace.store import SQLiteStore, StoreWriter, WriteBatch, record_runs
from steptrace.store._protocol import RunRow
from steptrace.testing import ScriptedProvider

SECRET = "sk-proj-abcdefghijklmnopqrstuvwx"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "runs.db") as opened:
        yield opened


@pytest.fixture
def scripted() -> Iterator[ScriptedProvider]:
    provider = ScriptedProvider(lambda request: f"answer to {request.messages[-1].content}")
    reset_configuration()
    llm.configure(provider=provider, default_model="m-small")
    yield provider
    reset_configuration()


@steptrace.step(model="m-small")
def ask(question: str) -> str:
    return llm.llm_call(question).text


@steptrace.persona("researcher", budget={"max_tokens": 100_000})
def research() -> list[str]:
    steptrace.record_llm_usage("m-large", 100, 10, cost_usd=0.5)
    return [ask("what is up?"), ask(f"my key is {SECRET}")]


def _record(store: SQLiteStore, *, capture_content: bool = True) -> steptrace.Run:
    writer = record_runs(store, capture_content=capture_content)
    try:
        with steptrace.run("recorded") as run:
            research()
            steptrace.record_llm_usage("m-small", 1, 1, cost_usd=0.001)
    finally:
        steptrace.remove_span_processor(writer)
        writer.close()
    assert writer.failures == 0
    return run


def test_the_llm_call_log_names_step_persona_and_time(
    store: SQLiteStore, scripted: ScriptedProvider
) -> None:
    before = time.time()
    run = _record(store)
    stored = store.get_run(run.id)
    assert stored is not None
    assert stored.llm_trace == run.llm_trace
    places = [(c.model, c.step, c.persona) for c in stored.llm_calls]
    assert places == [
        ("m-large", None, "researcher"),
        ("m-small", "ask", "researcher"),
        ("m-small", "ask", "researcher"),
        ("m-small", None, None),
    ]
    assert [c.seq for c in stored.llm_calls] == [0, 1, 2, 3]
    assert all(before <= c.at <= time.time() for c in stored.llm_calls)
    by_persona = {a.key: a for a in store.aggregate("persona", run_id=run.id)}
    assert by_persona["researcher"].llm_calls == 3
    assert by_persona[None].cost_usd == pytest.approx(0.001)
    by_model = store.aggregate("model")
    assert [a.key for a in by_model] == ["m-large", "m-small"]  # most expensive first
    assert by_model[1].llm_calls == 3
    day = time.strftime("%Y-%m-%d", time.gmtime(stored.llm_calls[0].at))
    assert [a.key for a in store.aggregate("day")] == [day]
    assert store.aggregate("step", since=time.time() + 60) == []


def test_transcripts_are_stored_redacted(store: SQLiteStore, scripted: ScriptedProvider) -> None:
    run = _record(store)
    transcripts = store.transcripts(run.id)
    assert len(transcripts) == 2
    chat_spans = [s for s in run.spans if s.kind == steptrace.SpanKind.LLM_CALL]
    assert [t.span_id for t in transcripts] == sorted(s.span_id for s in chat_spans)
    first, second = (t for t in sorted(transcripts, key=lambda t: t.span_id))
    assert first.request is not None
    assert first.request["messages"][-1]["content"] == "what is up?"
    assert first.response is not None
    assert first.response["text"] == "answer to what is up?"
    text = json.dumps([second.request, second.response])
    assert SECRET not in text
    assert "[REDACTED]" in text
    assert store.transcripts(run.id, [first.span_id]) == [first]
    assert store.transcripts(run.id, []) == []


def test_no_content_stores_no_text(store: SQLiteStore, scripted: ScriptedProvider) -> None:
    run = _record(store, capture_content=False)
    transcripts = store.transcripts(run.id)
    assert len(transcripts) == 2
    assert all(t.request is None and t.response is None for t in transcripts)
    raw = (Path(store.path)).read_bytes() + Path(f"{store.path}-wal").read_bytes()
    assert b"what is up?" not in raw


def test_capture_content_follows_the_environment(
    store: SQLiteStore, scripted: ScriptedProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPTRACE_CAPTURE_CONTENT", "false")
    writer = record_runs(store)
    try:
        assert writer.capture_content is False
    finally:
        steptrace.remove_span_processor(writer)
        writer.close()


def test_heartbeats_refresh_running_runs(store: SQLiteStore) -> None:
    writer = StoreWriter(store, heartbeat_interval=0.05)
    steptrace.add_span_processor(writer)
    try:
        with steptrace.run("slow") as run:
            assert writer.flush(5)
            first = store.list_runs()[0].heartbeat_at
            assert first is not None
            deadline = time.monotonic() + 10
            while store.list_runs()[0].heartbeat_at == first:
                assert time.monotonic() < deadline, "no heartbeat within 10 s"
                time.sleep(0.02)
        row = store.list_runs()[0]
        assert (row.id, row.status, row.pid) == (run.id, "completed", os.getpid())
    finally:
        steptrace.remove_span_processor(writer)
        writer.close()


def test_stale_and_dead_runs_are_marked_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    now = time.time()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = os.uname().nodename
    rows = [
        RunRow(id="dead", name="x", status="running", started_at=now, pid=dead.pid, host=host),
        RunRow(id="alive", name="x", status="running", started_at=now, pid=os.getpid(), host=host),
        RunRow(
            id="stale",
            name="x",
            status="running",
            started_at=now - 500,
            pid=1,
            host="elsewhere",
            heartbeat_at=now - 120,
        ),
        RunRow(
            id="fresh",
            name="x",
            status="running",
            started_at=now,
            pid=1,
            host="elsewhere",
            heartbeat_at=now,
        ),
        RunRow(id="done", name="x", status="completed", started_at=now, pid=dead.pid, host=host),
    ]
    with SQLiteStore(path) as store:
        store.write(WriteBatch(runs=rows))
    with SQLiteStore(path) as store:
        statuses = {r.id: r.status for r in store.list_runs()}
        assert statuses == {
            "dead": "interrupted",
            "alive": "running",
            "stale": "interrupted",
            "fresh": "running",
            "done": "completed",
        }
        stale = store.list_runs(status="interrupted", started_before=now - 1)[0]
        assert stale.ended_at == now - 120  # its last sign of life


_VICTIM = textwrap.dedent(
    """
    import sys, time
    import steptrace
    from steptrace.store import record_runs

    writer = record_runs(sys.argv[1])

    @steptrace.step(model="m")
    def work(i):
        steptrace.record_llm_usage("m", 10, 5, cost_usd=0.001)

    with steptrace.run("doomed"):
        for i in range(50):
            work(i)
        writer.flush(5)
        print("flushed", flush=True)
        while True:
            work(0)
            time.sleep(0.001)
    """
)


def test_a_killed_process_leaves_a_consistent_interrupted_run(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    victim = subprocess.Popen(
        [sys.executable, "-c", _VICTIM, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert victim.stdout is not None
    assert victim.stdout.readline().strip() == "flushed"
    time.sleep(0.3)  # let it write more batches mid-run
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    victim.stdout.close()
    with SQLiteStore(path) as store:
        (row,) = store.list_runs()
        assert row.status == "interrupted"
        stored = store.get_run(row.id)
        assert stored is not None
        assert len(stored.completed_steps) >= 50
        # Everything flushed is whole: every ledger row has its step span and
        # its trace entry, numbered without gaps.
        spans = {s.span_id for s in stored.spans}
        assert all(step.span_id in spans for step in stored.completed_steps)
        assert [c.seq for c in stored.llm_calls] == list(range(len(stored.llm_calls)))
        assert len(stored.llm_calls) >= len(stored.completed_steps) - 1
        assert stored.summary["steps"]["completed"] == len(stored.completed_steps)


def test_a_stored_run_exports_as_the_live_one(
    store: SQLiteStore, scripted: ScriptedProvider
) -> None:
    run = _record(store)
    stored = store.get_run(run.id)
    assert stored is not None
    live = list(jsonl_records(run))
    kept = list(jsonl_records(stored))
    live[0].pop("duration_ms")
    kept[0].pop("duration_ms")
    assert kept == live
    live_otlp = otlp_json(run)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    kept_otlp = otlp_json(stored)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert kept_otlp == live_otlp
