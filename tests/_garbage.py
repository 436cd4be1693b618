"""Collecting a test's garbage without walking the whole heap each time.

Tests that must not leak (an unclosed SDK client or event loop warns only when
the garbage collector finalizes it) run a collection at teardown, so that the
warning fails the test that leaked. A full collection walks every object alive,
and with openai, anthropic, pydantic and litellm imported that is over a
million: about half a second of CPU per test, 400 s of a 1,500-test run on two
cores. So the objects alive once the tests are collected, and those that
survive each test's collection, are frozen (``gc.freeze``): a collection then
walks only what the current test made. A frozen object freed by reference
counting is still finalized at once; only one left in a reference cycle after
being frozen waits, until ``collect_everything`` (at the end of each module
whose tests froze objects, and of the session) unfreezes and walks them all.
"""

from __future__ import annotations

import gc

__all__ = ["collect_everything", "collect_test_garbage", "freeze_survivors"]

_frozen_by_tests = False


def freeze_survivors() -> None:
    """Freeze every object alive now (they are not this test's garbage)."""
    gc.freeze()


def collect_test_garbage() -> None:
    """Collect what the current test left in cycles, then freeze what remains."""
    global _frozen_by_tests
    gc.collect()
    gc.freeze()
    _frozen_by_tests = True


def collect_everything() -> None:
    """Unfreeze and collect the whole heap if a test froze objects since the
    last time (a cycle they joined later is finalized here), then freeze again."""
    global _frozen_by_tests
    if not _frozen_by_tests:
        return
    _frozen_by_tests = False
    gc.unfreeze()
    gc.collect()
    gc.freeze()
