"""``get_run`` of a big stored run against fetching the same rows raw.

Run ``python benchmarks/bench_get_run.py`` (``--quick`` for a smoke run,
``--profile`` to print where ``get_run`` spends its time). A run of 100,000
agent events (half LLM calls, half tool executions), 1,000 steps with their
spans and ledger rows and 50,000 LLM call log rows is written into a SQLite
file; then, alternating, ``get_run`` (the span tree, typed and validated
events, ledger, call log and recomputed summary) and the same queries
``get_run`` makes, fetched as raw tuples in one read transaction. The ratio
is ``get_run`` / raw fetch, both medians of the same run. Beside it, for what
a reader of everything pays (``steptrace export``), ``get_run`` then every
event and call log row read: ``get_run`` builds them when first read.

Target (issue 14): ``get_run`` at most 3x the raw fetch.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
for extra in (_ROOT / "src", _ROOT):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from _machine import load_average, revision  # noqa: E402
from bench_store import big_run  # noqa: E402
from steptrace.store import SQLiteStore  # noqa: E402

RATIO_MAX = 3.0


def raw_fetch(store: SQLiteStore, run_id: str) -> int:
    """The rows ``get_run`` reads, as tuples, in one read transaction."""
    conn = store._connection()
    fetched = 0
    with store._lock:
        conn.execute("BEGIN")
        try:
            for sql in (
                "SELECT * FROM runs WHERE id = ?",
                "SELECT * FROM spans WHERE run_id = ? ORDER BY start_ns, span_id",
                "SELECT seq, span_id, data FROM events WHERE run_id = ? ORDER BY seq",
                "SELECT seq, data FROM completed_steps WHERE run_id = ? ORDER BY seq",
                "SELECT * FROM llm_calls WHERE run_id = ? ORDER BY seq",
                "SELECT id FROM runs WHERE parent_run_id = ? ORDER BY started_at, id",
            ):
                fetched += len(conn.execute(sql, (run_id,)).fetchall())
        finally:
            conn.execute("COMMIT")
    return fetched


def read_all(store: SQLiteStore, run_id: str) -> int:
    """``get_run``, then every event and call log row read (as an export does)."""
    stored = store.get_run(run_id)
    assert stored is not None
    return len(list(stored.events)) + len(list(stored.llm_calls))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 events, 3 repeats")
    parser.add_argument("--profile", action="store_true", help="print get_run's profile")
    args = parser.parse_args()
    events = 20_000 if args.quick else 100_000
    repeats = 3 if args.quick else 7
    print(f"steptrace {revision()} · load {load_average()} · python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp, SQLiteStore(Path(tmp) / "big.db") as store:
        run_id = big_run(store, events, 1_000, call_log=True)
        stored = store.get_run(run_id)  # warm: the file is in the page cache
        assert stored is not None
        assert len(stored.events) == events
        raw: list[float] = []
        load: list[float] = []
        whole: list[float] = []
        for _ in range(repeats):
            started = time.process_time()
            raw_fetch(store, run_id)
            raw.append(time.process_time() - started)
            started = time.process_time()
            store.get_run(run_id)
            load.append(time.process_time() - started)
            started = time.process_time()
            read_all(store, run_id)
            whole.append(time.process_time() - started)
        raw_s, load_s = statistics.median(raw), statistics.median(load)
        ratio = load_s / raw_s
        print(
            f"get_run of a {events:,}-event run: {load_s * 1e3:.0f} ms, raw fetch "
            f"{raw_s * 1e3:.0f} ms: {ratio:.2f}x (target <= {RATIO_MAX:.0f}x)"
        )
        whole_s = statistics.median(whole)
        print(
            f"  then every event and call read: {whole_s * 1e3:.0f} ms: "
            f"{whole_s / raw_s:.2f}x the raw fetch"
        )
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(store.get_run, run_id)
            pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    print("target met" if ratio <= RATIO_MAX else "target missed: get_run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
