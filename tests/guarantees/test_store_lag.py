"""A killed process loses only about the writer's ``max_lag`` (1 s) of its
record, even from a run that never waits (issue 14).

A subprocess records a CPU-bound run into SQLite and reports, every 100
steps, how many steps it has ended and a ``time.monotonic()`` read *before*
the last of them ended (so that step's end, where the writer's bound is
checked, came after it). It is SIGKILLed once its reports span a few seconds
of its own time. The bound says: at every span end, everything the run made
up to ``max_lag`` seconds earlier is committed. So with ``t`` the last report
read, every step reported ended before ``t - max_lag`` must be in the store.
No wall-clock threshold of the test's own: the count is checked against the
child's reports, in the child's clock."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from steptrace.store import SQLiteStore, StoreWriter

_CHILD = textwrap.dedent(
    """
    import sys, time
    import steptrace
    from steptrace.store import record_runs

    record_runs(sys.argv[1])

    @steptrace.step(model="m")
    def work(i):
        steptrace.record_llm_usage("m", 10, 5, cost_usd=0.001)
        steptrace.emit_event(steptrace.ToolExecution(
            tool_name="t", tool_use_id=str(i), duration_ms=0, status="ok",
            classification="other", iteration=i))

    with steptrace.run("cpu-bound"):
        ended = 0
        while True:
            for _ in range(99):
                work(ended)
                ended += 1
            before = time.monotonic()
            work(ended)
            ended += 1
            print(ended, before, flush=True)
    """
)


def test_a_killed_cpu_bound_run_loses_at_most_the_lag_bound(tmp_path: Path) -> None:
    lag = 1.0
    defaults = StoreWriter.__init__.__kwdefaults__
    assert defaults is not None
    assert defaults["max_lag"] == lag  # the documented bound, which the child uses
    path = tmp_path / "runs.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    reports: list[tuple[int, float]] = []
    try:
        for line in child.stdout:
            ended, before = line.split()
            reports.append((int(ended), float(before)))
            if reports[-1][1] - reports[0][1] > 4 * lag:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert reports, "the child reported nothing"
    last = reports[-1][1]
    # Step n of report i ended before report i+1's clock read.
    due = max(
        (n for (n, _), (_, after) in itertools.pairwise(reports) if after <= last - lag),
        default=0,
    )
    assert due >= 100  # the child ran well past the bound: the check means something
    with SQLiteStore(path) as store:
        runs = store.list_runs()
        assert len(runs) == 1, "the run's start is not even stored"
        stored = store.get_run(runs[0].id)
    assert stored is not None
    assert len(stored.completed_steps) >= due
    # What is stored is whole: each stored step has its call and its event.
    assert len(stored.llm_calls) >= due
    assert len(stored.events) >= due
