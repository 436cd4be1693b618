"""The daemon thread pool's jobs: a synchronous wait never misses a job's end,
however the wait and the job's finishing interleave."""

from __future__ import annotations

import functools
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from steptrace.llm._threads import DaemonPool


@settings(max_examples=40, deadline=None)
@given(
    work=st.lists(st.sampled_from([0.0, 0.0, 1e-5, 1e-4, 1e-3]), min_size=1, max_size=12),
    pause=st.sampled_from([0.0, 1e-5, 1e-4]),
)
def test_a_synchronous_wait_sees_every_job_end(work: list[float], pause: float) -> None:
    """The event a wait blocks on is made by the waiter (an awaited job needs
    none): a job that ends while the waiter makes it must still wake it."""
    pool = DaemonPool("test-wait", max_workers=4, max_abandoned=4)
    jobs = [pool.submit(functools.partial(time.sleep, seconds)) for seconds in work]
    if pause:
        time.sleep(pause)
    started = time.monotonic()
    assert all(job.wait(5.0) for job in jobs)
    assert time.monotonic() - started < 5.0
    assert all(job.wait(0.0) for job in jobs)  # and stays seen


def test_a_wait_times_out_on_a_job_still_running() -> None:
    pool = DaemonPool("test-timeout", max_workers=1, max_abandoned=1)
    release = threading.Event()
    job = pool.submit(release.wait)
    assert not job.wait(0.05)
    release.set()
    assert job.wait(5.0)
