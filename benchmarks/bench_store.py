"""Run store benchmark: ingest rates, the cost to the run's thread, loading a big run.

Run ``python benchmarks/bench_store.py`` (``--quick`` for a smoke run;
``--no-postgres`` to skip PostgreSQL). Rows:

- ingest: agent events written through ``store.write`` in batches of 500 (the
  writer's batch size), events per second, into SQLite (a WAL file in a temp
  dir) and into PostgreSQL (a throwaway local server, started as the tests
  start it; skipped when it is not installed). Baseline in the same run:
  ``json.dumps`` of the same events, the least any store must do per event.
- run thread: a loop of steps, each recording one LLM call and emitting two
  agent events, timed on the run's thread with no store, then with a
  ``StoreWriter`` attached (the final flush is timed apart); slowdown = with /
  without - 1. Three settings: the writer's callbacks alone (its thread
  sleeps until the final flush, so only what the run's thread does for the
  store is measured); CPU-bound steps with the writer writing meanwhile (both threads
  share one GIL: this is the writer's whole CPU cost, not the run thread's
  work); and steps that each wait 1 ms as a real step waits for its model
  (the writer works while the run waits).
- writer CPU per record kept: a CPU-bound run of 50,000 such steps recorded
  into SQLite until flushed, minus the same run unrecorded, CPU time of the
  process per record written, in units of ``json.dumps`` of one event (timed
  between the repeats); the recorded run's wall time against the unrecorded;
  the final flush (the writer's backlog at the run's end, bounded by
  ``max_lag``); and the floor under the figure: SQLite's inserts and the C
  JSON encoder alone for the same rows.
- load: ``get_run`` of a stored run of 100,000 events (with 1,000 steps and
  their spans and ledger rows): the span tree, typed events, ledger and the
  recomputed summary, against the time to fetch the same rows as raw tuples.

Targets (issue 5): at least 100,000 events/s into SQLite in batches, the run's
thread slowed by under 5% (checked on the callbacks-only and waiting rows; the
CPU-bound row is printed to show the writer's whole cost), loading a
100,000-event run in under 1 s. Issue 14: the writer's CPU per record kept at
most 1x ``json.dumps`` of an event; the final flush about 1 s at most.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
for extra in (_ROOT / "src", _ROOT):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import steptrace  # noqa: E402
from _machine import load_average, revision  # noqa: E402
from steptrace import LlmCall, ToolExecution  # noqa: E402
from steptrace.store import (  # noqa: E402
    EventRow,
    LlmCallRow,
    RunRow,
    RunStore,
    SpanRow,
    SQLiteStore,
    StepRow,
    StoreWriter,
    WriteBatch,
)

INGEST_MIN_PER_S = 100_000
SLOWDOWN_MAX = 0.05
LOAD_MAX_S = 1.0
BATCH = 500


def _event(i: int) -> dict[str, Any]:
    if i % 2:
        return ToolExecution(
            tool_name="search",
            tool_use_id=f"c{i}",
            duration_ms=3,
            status="ok",
            classification="read_only",
            iteration=i // 10,
        ).to_dict()
    return LlmCall(
        call_id=f"r{i}",
        model="gpt-4o-mini",
        input_tokens=1200,
        output_tokens=80,
        cache_tokens=0,
        duration_ms=450,
        iteration=i // 10,
    ).to_dict()


def _batches(run_id: str, events: int) -> list[WriteBatch]:
    return [
        WriteBatch(
            events=[
                EventRow(run_id=run_id, seq=i, span_id=1, data=_event(i))
                for i in range(start, min(events, start + BATCH))
            ]
        )
        for start in range(0, events, BATCH)
    ]


def ingest_rate(store: RunStore, events: int) -> float:
    """Events per second written in batches of ``BATCH``."""
    batches = _batches("ingest-" + str(time.time_ns()), events)
    started = time.perf_counter()
    for batch in batches:
        store.write(batch)
    return events / (time.perf_counter() - started)


def dumps_rate(events: int) -> float:
    """``json.dumps`` of one event, per second (the unit of the store's figures)."""
    data = [_event(i) for i in range(events)]
    started = time.perf_counter()
    for item in data:
        json.dumps(item, separators=(",", ":"))
    return events / (time.perf_counter() - started)


@steptrace.step(model="gpt-4o-mini")
def _work(i: int) -> None:
    steptrace.record_llm_usage("gpt-4o-mini", 1200, 80, cost_usd=0.0002)
    steptrace.emit_event(
        LlmCall(
            call_id=f"r{i}",
            model="gpt-4o-mini",
            input_tokens=1200,
            output_tokens=80,
            cache_tokens=0,
            duration_ms=450,
            iteration=i,
        )
    )
    steptrace.emit_event(
        ToolExecution(
            tool_name="search",
            tool_use_id=f"c{i}",
            duration_ms=3,
            status="ok",
            classification="read_only",
            iteration=i,
        )
    )


def _run_loop(steps: int, pause: float) -> float:
    # As timeit does: no garbage collection while timing, so the figure is the
    # work itself, not when the collector happened to run over a growing heap.
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        with steptrace.run("bench"):
            for i in range(steps):
                _work(i)
                if pause:
                    time.sleep(pause)
        return time.perf_counter() - started
    finally:
        gc.enable()


class _HeldStore(SQLiteStore):
    """A store whose writes wait until released: only the callbacks run."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.release = threading.Event()

    def write(self, batch: WriteBatch) -> None:
        self.release.wait()
        super().write(batch)


def run_thread_cost(
    store: SQLiteStore, steps: int, repeats: int, pause: float
) -> tuple[float, float, float, int]:
    """(seconds without store, seconds with, flush seconds, records written),
    medians over alternating repeats."""
    without: list[float] = []
    with_store: list[float] = []
    flushes: list[float] = []
    written = 0
    _run_loop(min(steps, 1000), pause)  # warm up
    for _ in range(repeats):
        without.append(_run_loop(steps, pause))
        # Held back: the writer thread does not even wake until the flush.
        interval = 3600.0 if isinstance(store, _HeldStore) else 0.1
        # Held back, the writer must not make the run wait: no lag bound there.
        writer = StoreWriter(
            store,
            run_end_timeout=0,
            queue_size=10_000_000,
            interval=interval,
            max_lag=None if isinstance(store, _HeldStore) else 1.0,
        )
        steptrace.add_span_processor(writer)
        try:
            with_store.append(_run_loop(steps, pause))
        finally:
            steptrace.remove_span_processor(writer)
        if isinstance(store, _HeldStore):
            store.release.set()
        started = time.perf_counter()
        writer.close(120)
        flushes.append(time.perf_counter() - started)
        if isinstance(store, _HeldStore):
            store.release.clear()
        written = writer.written
        assert writer.failures == 0
        assert writer.dropped == 0
    return (
        statistics.median(without),
        statistics.median(with_store),
        statistics.median(flushes),
        written,
    )


def _cpu_loop(steps: int) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of ``_run_loop``."""
    cpu, wall = time.process_time(), time.perf_counter()
    _run_loop(steps, 0.0)
    return time.process_time() - cpu, time.perf_counter() - wall


def writer_cost(tmp: Path, steps: int, repeats: int) -> dict[str, float]:
    """The writer's CPU per record kept: a CPU-bound run recorded into SQLite
    until flushed, minus the same run unrecorded (alternating repeats,
    medians). CPU time of the whole process: in one interpreter the writer's
    work lands on the run whichever thread does it. Also the floor under it:
    the time SQLite and the C JSON encoder alone take for the same rows."""
    plain_cpu: list[float] = []
    plain_wall: list[float] = []
    kept_cpu: list[float] = []
    kept_wall: list[float] = []
    flushes: list[float] = []
    dumps_s: list[float] = []
    written = 0
    _run_loop(min(steps, 1000), 0.0)  # warm up
    path = tmp / "kept.db"
    for repeat in range(repeats):
        dumps_s.append(1 / dumps_rate(20_000))  # the unit, timed between the runs
        cpu, wall = _cpu_loop(steps)
        plain_cpu.append(cpu)
        plain_wall.append(wall)
        store = SQLiteStore(path.with_name(f"kept-{repeat}.db"))
        writer = StoreWriter(store, run_end_timeout=0)
        steptrace.add_span_processor(writer)
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            _run_loop(steps, 0.0)
        finally:
            steptrace.remove_span_processor(writer)
        flushed = time.perf_counter()
        writer.close(600)
        flushes.append(time.perf_counter() - flushed)
        kept_cpu.append(time.process_time() - cpu)
        kept_wall.append(time.perf_counter() - wall)
        written = writer.written
        assert writer.failures == 0
        assert writer.dropped == 0
        store.close()
    sql_s, json_s, rows = _floor(path.with_name(f"kept-{repeats - 1}.db"), tmp / "floor.db")
    return {
        "written": written,
        "per_record": (statistics.median(kept_cpu) - statistics.median(plain_cpu)) / written,
        "ratio": statistics.median(kept_wall) / statistics.median(plain_wall),
        "flush": statistics.median(flushes),
        "floor_sql": sql_s / rows,
        "floor_json": json_s / rows,
        "dumps": statistics.median(dumps_s),
    }


def _floor(source: Path, target: Path) -> tuple[float, float, int]:
    """(CPU seconds to insert every row of ``source`` again, in the writer's
    batch size, into a fresh store; CPU seconds to encode their JSON fields
    with the C encoder, the fastest there is; rows)."""
    import sqlite3

    from steptrace.store._queries import TABLES, UPSERTS

    # The C encoder called as directly as Python allows (what _encode does).
    encoder: Any = json.encoder
    chunks = encoder.c_make_encoder(
        None, str, encoder.c_encode_basestring_ascii, None, ":", ",", False, False, True
    )

    read = sqlite3.connect(source)
    tables = {}
    json_columns: dict[str, list[int]] = {}
    for name, table in TABLES.items():
        if name != "runs":
            columns = table.columns
            tables[name] = read.execute(f"SELECT {', '.join(columns)} FROM {name}").fetchall()
            json_columns[name] = [i for i, column in enumerate(columns) if column in table.json]
    read.close()
    values = [
        json.loads(row[i])
        for table, at in json_columns.items()
        for row in tables[table]
        for i in at
    ]
    started = time.process_time()
    for value in values:
        "".join(chunks(value, 0))
    json_s = time.process_time() - started
    rows = sum(len(r) for r in tables.values())
    with SQLiteStore(target) as store:
        conn = store._connection()
        started = time.process_time()
        for name, table_rows in tables.items():
            for at in range(0, len(table_rows), 2_000):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(UPSERTS[name], table_rows[at : at + 2_000])
                conn.execute("COMMIT")
        sql_s = time.process_time() - started
    return sql_s, json_s, rows


def big_run(store: RunStore, events: int, steps: int, *, call_log: bool = False) -> str:
    """A stored run of ``events`` events (half LLM calls, half tool
    executions) spread over ``steps`` steps with their spans and ledger rows,
    and with ``call_log`` an LLM call log row for each LLM call; its id."""
    run_id = "big-" + str(time.time_ns())
    now = time.time()
    store.write(
        WriteBatch(
            runs=[
                RunRow(
                    id=run_id,
                    name="big",
                    status="completed",
                    started_at=now - 60,
                    ended_at=now,
                    llm_calls=events // 2,
                )
            ],
            spans=[
                SpanRow(
                    run_id=run_id,
                    span_id=1,
                    parent_id=None,
                    name="big",
                    kind="run",
                    start_ns=0,
                    end_ns=10**9,
                    status="ok",
                    error=None,
                )
            ]
            + [
                SpanRow(
                    run_id=run_id,
                    span_id=2 + i,
                    parent_id=1,
                    name="work",
                    kind="step",
                    start_ns=i,
                    end_ns=i + 1,
                    status="ok",
                    error=None,
                    metadata={"model": "gpt-4o-mini", "status": "completed"},
                )
                for i in range(steps)
            ],
            steps=[
                StepRow(
                    run_id=run_id,
                    seq=i,
                    data={
                        "name": "work",
                        "function": "work",
                        "model": "gpt-4o-mini",
                        "input_tokens": 1200,
                        "output_tokens": 80,
                        "cost_usd": 0.0002,
                        "llm_calls": 1,
                        "status": "completed",
                        "error": None,
                        "span_id": 2 + i,
                        "parent_span_id": 1,
                    },
                )
                for i in range(steps)
            ],
        )
    )
    for batch in _batches(run_id, events):
        rows = [
            EventRow(run_id=run_id, seq=row.seq, span_id=2 + row.seq % steps, data=row.data)
            for row in batch.events
        ]
        calls = [_call_row(run_id, row.seq, steps, now) for row in rows if row.seq % 2 == 0]
        store.write(WriteBatch(events=rows, llm_calls=calls if call_log else []))
    return run_id


def _call_row(run_id: str, seq: int, steps: int, at: float) -> LlmCallRow:
    """The call log row of the LLM call that is event ``seq``."""
    return LlmCallRow(
        run_id=run_id,
        seq=seq // 2,
        span_id=2 + seq % steps,
        step="work",
        persona=None,
        model="gpt-4o-mini",
        input_tokens=1200,
        output_tokens=80,
        cache_tokens=0,
        cost_usd=0.0002,
        duration_ms=450,
        at=at,
    )


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@contextlib.contextmanager
def _postgres(enabled: bool) -> Iterator[str | None]:
    if not enabled:
        yield None
        return
    from tests._services import MissingService, local_postgres

    try:
        with local_postgres() as url:
            yield url
    except MissingService as missing:
        print(f"  (PostgreSQL skipped: {missing})")
        yield None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repeat")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL rows")
    args = parser.parse_args()
    events = 20_000 if args.quick else 100_000
    # Long enough for the writer (waking every 0.1 s) to work during the loop.
    steps = 20_000 if args.quick else 100_000
    repeats = 1 if args.quick else 3
    print(f"steptrace {revision()} · load {load_average()} · python {sys.version.split()[0]}")
    failures: list[str] = []

    with tempfile.TemporaryDirectory() as tmp:
        base = dumps_rate(events)
        print(f"baseline json.dumps of one event      {base:>12,.0f} events/s")
        with SQLiteStore(Path(tmp) / "ingest.db") as sqlite_store:
            rate = ingest_rate(sqlite_store, events)
        print(
            f"ingest into SQLite (batches of {BATCH})  {rate:>12,.0f} events/s  "
            f"({rate / base:.2f}x json.dumps; target >= {INGEST_MIN_PER_S:,})"
        )
        if rate < INGEST_MIN_PER_S:
            failures.append("SQLite ingest")
        with _postgres(not args.no_postgres) as url:
            if url is not None:
                from steptrace.store import open_store

                pg = open_store(url)
                try:
                    pg_rate = ingest_rate(pg, events)
                finally:
                    pg.close()
                print(
                    f"ingest into PostgreSQL                {pg_rate:>12,.0f} events/s  "
                    f"({pg_rate / base:.2f}x json.dumps)"
                )

        settings = [
            ("callbacks only (writes held back)", _HeldStore(Path(tmp) / "held.db"), steps, 0.0),
            ("CPU-bound, writer writing (one GIL)", SQLiteStore(Path(tmp) / "cpu.db"), steps, 0.0),
            ("steps waiting 1 ms for a model", SQLiteStore(Path(tmp) / "io.db"), steps // 20, 1e-3),
        ]
        print(f"run thread, steps of 1 LLM call + 2 events, {repeats} repeat(s), medians:")
        for label, store, count, pause in settings:
            try:
                plain, recorded, flush, written = run_thread_cost(store, count, repeats, pause)
            finally:
                store.close()
            slowdown = recorded / plain - 1
            print(
                f"  {label:<38} {count:>7,} steps: {plain * 1e3:8.1f} ms without, "
                f"{recorded * 1e3:8.1f} ms with store ({slowdown:+6.1%}); "
                f"final flush {flush * 1e3:.0f} ms, {written:,} records"
            )
            if slowdown >= SLOWDOWN_MAX and "CPU-bound" not in label:
                failures.append(f"run thread slowdown ({label})")

        cost = writer_cost(Path(tmp), steps // 2, repeats)
        dumps_s = cost["dumps"]
        print(
            f"writer CPU per record kept, CPU-bound run of {steps // 2:,} steps into SQLite "
            f"({cost['written']:,.0f} records): {cost['per_record'] * 1e6:.2f} us "
            f"= {cost['per_record'] / dumps_s:.2f}x json.dumps of an event "
            f"(target <= 1x); recorded run {cost['ratio']:.2f}x the unrecorded; "
            f"final flush {cost['flush'] * 1e3:.0f} ms (bound: about 1 s)"
        )
        print(
            f"  floor for the same rows: SQLite inserts {cost['floor_sql'] * 1e6:.2f} us "
            f"+ C JSON encoding {cost['floor_json'] * 1e6:.2f} us a record "
            f"= {(cost['floor_sql'] + cost['floor_json']) / dumps_s:.2f}x json.dumps"
        )
        if cost["per_record"] > dumps_s and not args.quick:
            failures.append("writer CPU per record")
        if cost["flush"] > 1.5 and not args.quick:
            failures.append("writer backlog")

        with SQLiteStore(Path(tmp) / "big.db") as big_store:
            run_id = big_run(big_store, events, 1_000)

            def raw() -> None:
                with big_store._lock:
                    conn = big_store._connection()
                    conn.execute("SELECT span_id, data FROM events WHERE run_id = ?", (run_id,))
                    conn.execute(
                        "SELECT span_id, data FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
                    ).fetchall()

            def load() -> None:
                stored = big_store.get_run(run_id)
                assert stored is not None
                assert len(stored.events) == events

            raw_s = _median_time(raw, repeats)
            load_s = _median_time(load, repeats)
        print(
            f"load a run of {events:,} events: get_run {load_s * 1e3:.0f} ms "
            f"({load_s / raw_s:.1f}x fetching the raw rows, {raw_s * 1e3:.0f} ms; "
            f"target < {LOAD_MAX_S:.0f} s)"
        )
        if load_s >= LOAD_MAX_S and not args.quick:
            failures.append("load")

    print("targets missed: " + ", ".join(failures) if failures else "all targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
