"""The pools' arithmetic against the real servers: reserve, settle, release,
expiry, and failing closed when the server is gone."""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steptrace._shared import PoolTotals, SharedPool
from steptrace.errors import SharedPoolUnavailable
from steptrace.shared import PostgresPool, RedisPool

LIMITS = {"max_tokens": 1000, "max_pico": 10**9, "ttl": 600.0, "retention": 3600.0}


def wait_for(condition: object, what: str, deadline_s: float = 30.0) -> None:
    """Poll until ``condition()`` holds (expiry runs on the server's clock)."""
    deadline = time.monotonic() + deadline_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_reserve_settle_and_release_add_up(pool: SharedPool, key: str) -> None:
    first, totals = pool.reserve(key, 300, 3 * 10**8, **LIMITS)  # type: ignore[arg-type]
    assert first is not None
    assert totals == PoolTotals(0, 0, 300, 3 * 10**8)
    second, totals = pool.reserve(key, 500, 10**8, **LIMITS)  # type: ignore[arg-type]
    assert second is not None
    assert totals == PoolTotals(0, 0, 800, 4 * 10**8)
    # Settling replaces the hold by the actual amount.
    assert pool.settle(key, first, 120, 10**8, retention=3600.0) == PoolTotals(
        120, 10**8, 500, 10**8
    )
    # A second settle of the same reservation only adds: the hold is gone.
    assert pool.settle(key, first, 1, 1, retention=3600.0) == PoolTotals(121, 10**8 + 1, 500, 10**8)
    pool.release(key, second)
    assert pool.totals(key) == PoolTotals(121, 10**8 + 1, 0, 0)
    # Usage without a reservation is simply added.
    assert pool.settle(key, None, 9, 9, retention=None) == PoolTotals(130, 10**8 + 10, 0, 0)


def test_a_reservation_that_does_not_fit_is_refused_and_changes_nothing(
    pool: SharedPool, key: str
) -> None:
    held, _ = pool.reserve(key, 900, 0, **LIMITS)  # type: ignore[arg-type]
    assert held is not None
    refused, totals = pool.reserve(key, 101, 0, **LIMITS)  # type: ignore[arg-type]
    assert refused is None
    assert totals == PoolTotals(0, 0, 900, 0)
    exact, _ = pool.reserve(key, 100, 0, **LIMITS)  # type: ignore[arg-type]
    assert exact is not None  # filling the limit exactly is allowed (only over is refused)
    pool.settle(key, held, 900, 0, retention=None)
    too_dear, totals = pool.reserve(  # the USD limit refuses too
        key,
        0,
        10**9 + 1,
        **LIMITS,  # type: ignore[arg-type]
    )
    assert too_dear is None
    assert totals.committed_tokens == 1000


def test_large_amounts_stay_exact(pool: SharedPool, key: str) -> None:
    # $8,000,000 in picodollars is beyond a double's exact integers.
    big = 8 * 10**18 + 1
    pool.settle(key, None, 1, big, retention=None)
    pool.settle(key, None, 1, 2, retention=None)
    assert pool.totals(key).pico == big + 2


def test_an_expired_reservation_frees_its_room(pool: SharedPool, key: str) -> None:
    limits = LIMITS | {"ttl": 0.3}
    held, _ = pool.reserve(key, 800, 0, **limits)  # type: ignore[arg-type]
    assert held is not None

    def refit() -> bool:
        fitted, _ = pool.reserve(key, 800, 0, **limits)  # type: ignore[arg-type]
        return fitted is not None

    wait_for(refit, "the first reservation to expire")
    # The late settle of the expired hold adds the usage and frees nothing twice.
    totals = pool.settle(key, held, 700, 0, retention=None)
    assert totals.tokens == 700
    assert totals.reserved_tokens in (0, 800)  # the second hold, unless it expired too


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_an_unreachable_pool_fails_closed_naming_it(kind: str) -> None:
    port = closed_port()
    pool: SharedPool
    if kind == "redis":
        pool = RedisPool(f"redis://:pw-secret@127.0.0.1:{port}/0", timeout=1.0)
    else:
        pool = PostgresPool(f"postgresql://u:pw-secret@127.0.0.1:{port}/db", timeout=1.0)
    with pytest.raises(SharedPoolUnavailable, match=f"127.0.0.1:{port}") as caught:
        pool.reserve("k", 1, 1, **LIMITS)  # type: ignore[arg-type]
    assert "pw-secret" not in str(caught.value)
    assert "***" in caught.value.url
    with pytest.raises(SharedPoolUnavailable):
        pool.settle("k", None, 1, 1, retention=None)


def test_a_pool_that_refuses_us_fails_closed_too(redis_url: str, postgres_url: str) -> None:
    # Databases that do not exist: the servers answer, with an error.
    redis_pool = RedisPool(redis_url.rsplit("/", 1)[0] + "/999")
    with pytest.raises(SharedPoolUnavailable, match="ResponseError"):
        redis_pool.totals("k")
    postgres_pool = PostgresPool(postgres_url.rsplit("/", 1)[0] + "/no_such_db")
    with pytest.raises(SharedPoolUnavailable, match="no_such_db"):
        postgres_pool.totals("k")


def test_redis_scripts_survive_a_flushed_script_cache(redis_url: str, key: str) -> None:
    import redis

    pool = RedisPool(redis_url)
    pool.settle(key, None, 5, 5, retention=None)
    with redis.Redis.from_url(redis_url) as client:
        client.script_flush()  # as after a server restart or failover
    assert pool.settle(key, None, 5, 5, retention=None) == PoolTotals(10, 10, 0, 0)
    pool.close()


def test_redis_counters_of_ending_windows_expire(redis_url: str, key: str) -> None:
    import redis

    pool = RedisPool(redis_url)
    pool.settle(key, None, 1, 1, retention=3600.0)
    pool.settle(key + "-forever", None, 1, 1, retention=None)
    with redis.Redis.from_url(redis_url) as client:
        assert 0 < client.ttl(f"steptrace:budget:{{{key}}}") <= 3600
        assert client.ttl(f"steptrace:budget:{{{key}-forever}}") == -1  # no expiry
    pool.close()


# One operation: ("reserve", tokens, pico) | ("settle", which hold or None, tokens, pico)
# | ("release", which hold).
operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(0, 400), st.integers(0, 4 * 10**8)),
        st.tuples(
            st.just("settle"),
            st.none() | st.integers(0, 9),
            st.integers(0, 400),
            st.integers(0, 4 * 10**8),
        ),
        st.tuples(st.just("release"), st.integers(0, 9)),
    ),
    max_size=12,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations)
def test_the_pool_matches_a_model_of_its_arithmetic(
    pool: SharedPool, ops: list[tuple[Any, ...]]
) -> None:
    key = "model-" + uuid.uuid4().hex
    max_tokens, max_pico = 1000, 10**9
    settled = [0, 0]
    holds: dict[str, tuple[int, int]] = {}
    made: list[str] = []
    for op in ops:
        if op[0] == "reserve":
            _, tokens, pico = op
            fits = (
                settled[0] + sum(t for t, _ in holds.values()) + tokens <= max_tokens
                and settled[1] + sum(p for _, p in holds.values()) + pico <= max_pico
            )
            reservation, totals = pool.reserve(
                key, tokens, pico, max_tokens=max_tokens, max_pico=max_pico, ttl=600, retention=None
            )
            assert (reservation is not None) == fits
            if reservation is not None:
                holds[reservation] = (tokens, pico)
                made.append(reservation)
        elif op[0] == "settle":
            _, which, tokens, pico = op
            reservation = made[which] if which is not None and which < len(made) else None
            if reservation is not None:
                holds.pop(reservation, None)
            totals = pool.settle(key, reservation, tokens, pico, retention=None)
            settled[0] += tokens
            settled[1] += pico
        else:
            if op[1] >= len(made):
                continue
            holds.pop(made[op[1]], None)
            pool.release(key, made[op[1]])
            totals = pool.totals(key)
        expected = PoolTotals(
            settled[0],
            settled[1],
            sum(t for t, _ in holds.values()),
            sum(p for _, p in holds.values()),
        )
        assert totals == expected
