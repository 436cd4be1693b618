"""Every test starts in a fresh default run, with no hooks, in strict mode, and
may reach no address outside the loopback range; hypothesis has no deadline.
PostgreSQL and Redis are started once per test run, whatever the number of
xdist workers (see ``tests/_services.py``). Objects alive after collection are
frozen out of the garbage collector's walks, so the per-test collections of the
leak checks cost what the test made, not the whole heap (see ``tests/_garbage.py``).

Strict mode makes a failing hook or span processor raise, so a test cannot pass
while observability code is silently broken; tests of the lenient behaviour
switch it off themselves. The network guard fails any test that tried to
connect elsewhere, even when an SDK swallowed the refusal and retried.
"""

from __future__ import annotations

import gc
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import steptrace
from steptrace.testing import block_network

from ._garbage import collect_everything, freeze_survivors
from ._services import (
    SHARED_DIR_ENV,
    MissingService,
    fresh_database,
    shared_service,
    stop_shared_services,
)

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


@pytest.fixture(autouse=True, scope="module")
def collect_frozen_garbage() -> Iterator[None]:
    yield
    collect_everything()


@pytest.fixture
def collector() -> Iterator[steptrace.InMemorySpanCollector]:
    spans = steptrace.InMemorySpanCollector()
    steptrace.add_span_processor(spans)
    yield spans
    steptrace.remove_span_processor(spans)


def pytest_configure(config: pytest.Config) -> None:
    # The controller (or a run without workers) owns this run's shared servers;
    # xdist workers inherit the directory through the environment.
    if SHARED_DIR_ENV not in os.environ:
        directory = tempfile.mkdtemp(prefix="steptrace-services-")
        os.environ[SHARED_DIR_ENV] = directory
        config.stash[_owned_services] = Path(directory)


def pytest_collection_finish(session: pytest.Session) -> None:
    freeze_survivors()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # pytest's own last collection (at unconfigure) then walks everything.
    gc.unfreeze()


def pytest_unconfigure(config: pytest.Config) -> None:
    directory = config.stash.get(_owned_services, None)
    if directory is not None:
        stop_shared_services(directory)
        os.environ.pop(SHARED_DIR_ENV, None)


_owned_services = pytest.StashKey[Path]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The Phoenix tests share one Phoenix server (module scope, ~0.5 GB, slow to
    # start): under `--dist loadgroup` they all go to one worker.
    for item in items:
        if item.get_closest_marker("phoenix") is not None:
            item.add_marker(pytest.mark.xdist_group("phoenix"))


def _service(kind: str) -> str:
    try:
        return shared_service(kind, Path(os.environ[SHARED_DIR_ENV]))
    except MissingService as missing:
        if os.environ.get("STEPTRACE_REQUIRE_SERVICES") == "1":
            pytest.fail(str(missing))
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of this worker's own on the run's PostgreSQL server (127.0.0.1)."""
    with fresh_database(_service("postgres")) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The run's Redis server on 127.0.0.1 (tests keep apart by their keys)."""
    return _service("redis")
