"""Framework runs leave no event loop or socket behind a test."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Iterator

import pytest

from .._garbage import collect_test_garbage


@pytest.fixture(autouse=True)
def close_the_thread_loop() -> Iterator[None]:
    """The frameworks' ``run_sync`` keep their thread's event loop open on
    purpose (the OpenAI Agents SDK for sessions holding loop-bound locks);
    close it, after finalizing what the run left, so nothing leaks past a test
    and a leak that remains warns in the test that made it. A loop that was
    the thread's before the test (a module's ``asyncio.Runner``) is not the
    test's to close."""
    before = _thread_loop()
    yield
    policy = asyncio.get_event_loop_policy()
    loop = _thread_loop()
    if loop is not None and loop is before:
        return
    gc.collect()  # finalize the run's async generators while their loop still runs
    if loop is not None and not loop.is_closed():
        loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    policy.set_event_loop(None)
    collect_test_garbage()


def _thread_loop() -> asyncio.AbstractEventLoop | None:
    """The thread's event loop, if one is set. Asking the policy for it would
    make one in the main thread when none was ever set, which nobody closes:
    CPython's policy keeps it where it can be read without that."""
    local = getattr(asyncio.get_event_loop_policy(), "_local", None)
    if local is not None and hasattr(local, "_loop"):
        loop: asyncio.AbstractEventLoop | None = local._loop
        return loop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:  # none set (asyncio.run leaves none behind)
            return None
