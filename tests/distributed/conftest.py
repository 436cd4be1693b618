"""Fixtures of the distributed-engine tests: one PostgreSQL store database for
each module (every engine's workers and the test process record into it), a
shared-budget pool of either kind, exact flat prices, and the skip (or, in CI,
failure) when an engine is not installed."""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator

import pytest

import steptrace
from steptrace._shared import SharedPool
from steptrace.store import StoreWriter, record_runs
from steptrace.testing import FakePrices

from .._services import fresh_database


def require_engine(module: str, extra: str) -> None:
    """Skip when ``module`` is not installed (fail with STEPTRACE_REQUIRE_SERVICES=1)."""
    if importlib.util.find_spec(module) is not None:
        return
    reason = (
        f"{module} is not installed; install it with `pip install -e '.[{extra}]'` "
        "(the `dev` extra has it) to run these tests"
    )
    if os.environ.get("STEPTRACE_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def store_url(postgres_url: str) -> Iterator[str]:
    """An empty PostgreSQL database: the one store of this module's runs."""
    with fresh_database(postgres_url) as url:
        yield url


@pytest.fixture
def recording(store_url: str, flat_price: None) -> Iterator[StoreWriter]:
    """The test process (the run's opener) records into the store too."""
    writer = record_runs(store_url)
    yield writer
    writer.stop()


@pytest.fixture
def flat_price() -> None:
    steptrace.configure(price_source=FakePrices())


@pytest.fixture(params=["redis", "postgres"])
def pool(request: pytest.FixtureRequest) -> Iterator[SharedPool]:
    from steptrace.shared import PostgresPool, RedisPool

    made: SharedPool
    if request.param == "redis":
        made = RedisPool(request.getfixturevalue("redis_url"))
    else:
        made = PostgresPool(request.getfixturevalue("postgres_url"))
    yield made
    made.close()


@pytest.fixture
def key() -> str:
    return "fan-out-" + uuid.uuid4().hex[:12]
