"""Every test starts in a fresh default run, with no hooks, in strict mode, and
may reach no address outside the loopback range; hypothesis has no deadline.

Strict mode makes a failing hook or span processor raise, so a test cannot pass
while observability code is silently broken; tests of the lenient behaviour
switch it off themselves. The network guard fails any test that tried to
connect elsewhere, even when an SDK swallowed the refusal and retried.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

import steptrace
from steptrace.testing import block_network

from ._services import MissingService, local_postgres, local_redis

# Timing is for benchmarks/: on a loaded 2-core machine (parallel workers, other
# jobs) a per-example deadline or a slow-generation check only adds flakes.
settings.register_profile("steptrace", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("steptrace")


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[None]:
    with block_network() as attempts:
        yield
    assert attempts == [], f"test tried to reach the network: {attempts}"


@pytest.fixture(autouse=True)
def fresh_steptrace() -> Iterator[None]:
    steptrace.reset()
    steptrace.configure(strict=True, price_source=None)
    yield
    steptrace.reset()
    steptrace.configure(strict=False, price_source=None)


@pytest.fixture
def collector() -> Iterator[steptrace.InMemorySpanCollector]:
    spans = steptrace.InMemorySpanCollector()
    steptrace.add_span_processor(spans)
    yield spans
    steptrace.remove_span_processor(spans)


def _service(start: Callable[[], contextlib.AbstractContextManager[str]]) -> Iterator[str]:
    try:
        manager = start()
        url = manager.__enter__()
    except MissingService as missing:
        if os.environ.get("STEPTRACE_REQUIRE_SERVICES") == "1":
            pytest.fail(str(missing))
        pytest.skip(str(missing))
    try:
        yield url
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server on 127.0.0.1 for this test session."""
    yield from _service(local_postgres)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server on 127.0.0.1 for this test session."""
    yield from _service(local_redis)
