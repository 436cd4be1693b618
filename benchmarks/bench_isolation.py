"""What one bad value costs the store writer: a refused batch written again run by run.

Run ``python benchmarks/bench_isolation.py`` (``--no-postgres`` to skip
PostgreSQL). A batch of ten runs with 200 LLM call rows each (the writer's
batch size, 2,000 rows and the ten run headers) is written through
``write_isolated`` twice into a fresh store: clean (the baseline, one
transaction), then with one row holding an integer past 64 bits. The second
is written run by run and, within the run at fault, in halves: the row is
refused, every other row lands. Printed: both times, their ratio, and the
transactions the refused batch took.

Target: a refused batch costs at most 4x a clean one (it is rare: a value
the numbers' validation let through, or metadata JSON cannot encode).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
for extra in (_ROOT / "src", _ROOT):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from _machine import load_average, revision  # noqa: E402
from steptrace.store import (  # noqa: E402
    LlmCallRow,
    RunRow,
    RunStore,
    SQLiteStore,
    WriteBatch,
    open_store,
)
from steptrace.store._isolation import write_isolated  # noqa: E402

RUNS = 10
CALLS = 200
RATIO_MAX = 4.0


class _Counting:
    """A store that counts its ``write`` calls (one a transaction)."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.writes = 0

    def write(self, batch: WriteBatch) -> None:
        self.writes += 1
        self.store.write(batch)


def _batch(tag: str, *, poisoned: bool) -> WriteBatch:
    bad = (3, CALLS // 2 + 17)
    return WriteBatch(
        runs=[
            RunRow(id=f"{tag}{r}", name="bench", status="running", started_at=1.0)
            for r in range(RUNS)
        ],
        llm_calls=[
            LlmCallRow(
                run_id=f"{tag}{r}",
                seq=seq,
                span_id=None,
                step=None,
                persona=None,
                model="m",
                input_tokens=2**63 if poisoned and (r, seq) == bad else seq,
                output_tokens=1,
                cache_tokens=0,
                cost_usd=0.001,
                duration_ms=1,
                at=1.0,
            )
            for r in range(RUNS)
            for seq in range(CALLS)
        ],
    )


def measure(store: RunStore, label: str) -> bool:
    counting = _Counting(store)
    write_isolated(store, _batch("warm", poisoned=False))  # the file, the connection, the plans
    started = time.perf_counter()
    assert write_isolated(counting, _batch("clean", poisoned=False)) == []  # type: ignore[arg-type]
    clean = time.perf_counter() - started
    counting.writes = 0
    started = time.perf_counter()
    refused = write_isolated(counting, _batch("bad", poisoned=True))  # type: ignore[arg-type]
    isolated = time.perf_counter() - started
    assert len(refused) == 1
    ratio = isolated / clean
    print(
        f"{label:<10} clean batch {clean * 1000:7.1f} ms   one bad row {isolated * 1000:7.1f} ms "
        f"({ratio:.2f}x, {counting.writes} transactions; target <= {RATIO_MAX:.0f}x)"
    )
    return ratio <= RATIO_MAX


@contextlib.contextmanager
def _postgres(enabled: bool) -> Iterator[str | None]:
    if not enabled:
        yield None
        return
    from tests._services import MissingService, fresh_database, local_postgres

    try:
        with local_postgres() as url, fresh_database(url) as database:
            yield database
    except MissingService as missing:
        print(f"  (PostgreSQL skipped: {missing})")
        yield None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args()
    print(f"steptrace {revision()} · load {load_average()} · python {sys.version.split()[0]}")
    ok = True
    with tempfile.TemporaryDirectory() as tmp, SQLiteStore(Path(tmp) / "runs.db") as store:
        ok &= measure(store, "SQLite")
    with _postgres(not args.no_postgres) as url:
        if url is not None:
            pg = open_store(url)
            try:
                ok &= measure(pg, "PostgreSQL")
            finally:
                pg.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
