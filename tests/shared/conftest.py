"""Shared-budget tests run against both real pools: a Redis and a PostgreSQL
server on 127.0.0.1 (the session fixtures of tests/conftest.py). Each test
gets a fresh key, so tests never see each other's counters, and a flat price
of one microdollar a token, so costs are exact."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import steptrace
from steptrace._shared import SharedPool
from steptrace.testing import FakePrices


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
    return "test-" + uuid.uuid4().hex[:12]


@pytest.fixture
def flat_price() -> FakePrices:
    price = FakePrices()
    steptrace.configure(price_source=price)
    return price
