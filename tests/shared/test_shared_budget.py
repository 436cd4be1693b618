"""SharedBudget without a server: validation, windows, parsing ``budget=``,
the carrier form, and URL masking."""

from __future__ import annotations

import calendar
import json
import pickle
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import steptrace
from steptrace import Budget, SharedBudget
from steptrace._shared import masked_url, split_budget
from steptrace.shared import PostgresPool, RedisPool

# Building a pool does not connect: these are never used to reach a server.
REDIS = RedisPool("redis://127.0.0.1:1/0")
POSTGRES = PostgresPool("postgresql://app:s3cret@127.0.0.1:1/db")


def test_window_keys() -> None:
    noon = calendar.timegm((2026, 11, 22, 12, 0, 0))
    assert SharedBudget("k", max_usd=1, window="run", pool=REDIS).pool_key("r1", noon) == (
        "k|run:r1"
    )
    assert SharedBudget("k", max_usd=1, window="day", pool=REDIS).pool_key("r1", noon) == (
        "k|day:2026-11-22"
    )
    assert SharedBudget("k", max_usd=1, window="month", pool=REDIS).pool_key("r1", noon) == (
        "k|month:2026-11"
    )
    assert SharedBudget("k", max_usd=1, window="total", pool=REDIS).pool_key("r1", noon) == (
        "k|total"
    )


@given(st.integers(min_value=0, max_value=4_000_000_000), st.text(min_size=1, max_size=20))
def test_windows_follow_the_utc_calendar(now: int, run_id: str) -> None:
    utc = time.gmtime(now)
    day = SharedBudget("k", max_tokens=1, window="day", pool=REDIS)
    month = SharedBudget("k", max_tokens=1, window="month", pool=REDIS)
    total = SharedBudget("k", max_tokens=1, window="total", pool=REDIS)
    per_run = SharedBudget("k", max_tokens=1, window="run", pool=REDIS)
    assert (
        day.window_key(run_id, now) == f"day:{utc.tm_year:04d}-{utc.tm_mon:02d}-{utc.tm_mday:02d}"
    )
    assert month.window_key(run_id, now) == f"month:{utc.tm_year:04d}-{utc.tm_mon:02d}"
    # The last second of a UTC day and the first of the next are different windows.
    midnight = now - now % 86400
    assert day.window_key(run_id, midnight) != day.window_key(run_id, midnight - 1)
    assert total.window_key(run_id, now) == total.window_key("other", now + 10**6)
    assert per_run.window_key(run_id, now) == f"run:{run_id}"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"key": ""}, ValueError, "key must be"),
        ({"key": "has space"}, ValueError, "key must be"),
        ({"max_tokens": 0}, ValueError, "SharedBudget `k`: budget.max_tokens"),
        ({"max_usd": -1}, ValueError, "SharedBudget `k`: budget.max_usd"),
        ({"max_usd": 1e7}, ValueError, "between 0 and 9,000,000"),
        ({"window": "week"}, ValueError, "window must be one of"),
        ({"pool": "redis://x"}, TypeError, "pool must be a SharedPool"),
        ({"reservation_ttl": 0}, ValueError, "reservation_ttl"),
        ({"reservation_ttl": float("inf")}, ValueError, "reservation_ttl"),
    ],
)
def test_bad_shared_budgets_are_refused(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    arguments: dict[str, object] = {"key": "k", "max_usd": 1.0, "pool": REDIS} | kwargs
    with pytest.raises(error, match=match):
        SharedBudget(**arguments)  # type: ignore[arg-type]


def test_budget_argument_takes_local_shared_or_both() -> None:
    shared = SharedBudget("team", max_usd=5, pool=REDIS)
    other = SharedBudget("org", max_tokens=10**6, window="month", pool=POSTGRES)
    assert split_budget(None, "x") == (None, ())
    assert split_budget(shared, "x") == (None, (shared,))
    assert split_budget({"max_tokens": 5}, "x") == (Budget(max_tokens=5), ())
    assert split_budget([Budget(max_usd=1), shared, other], "x") == (
        Budget(max_usd=1),
        (shared, other),
    )
    with pytest.raises(ValueError, match="run `r`: budget\\[1\\] is a second local budget"):
        split_budget([Budget(max_usd=1), {"max_tokens": 3}], "run `r`")
    with pytest.raises(ValueError, match="shared budget `team` given twice"):
        split_budget([shared, shared], "x")
    with pytest.raises(TypeError, match="budget\\[0\\] is int"):
        split_budget([3], "x")


def test_decorators_and_runs_keep_shared_budgets_apart_from_local_ones() -> None:
    shared = SharedBudget("team", max_usd=5, pool=REDIS)

    @steptrace.step(budget=[{"max_tokens": 100}, shared])
    def plan() -> None: ...

    @steptrace.persona(budget=shared)
    def agent() -> None: ...

    definition = steptrace.step_definition_for(plan)
    assert definition is not None
    assert (definition.max_tokens, definition.shared) == (100, (shared,))
    with steptrace.run("r", budget=shared) as run:
        assert run.budget is None
        assert run.shared_budgets == (shared,)
        assert [b.describe() for b in run.shared_budgets] == [
            {"key": "team", "max_tokens": None, "max_usd": 5.0, "window": "run", "pool": "redis"}
        ]


def test_carrier_form_round_trips_through_json_and_pickle() -> None:
    budget = SharedBudget("org", max_tokens=500, window="month", pool=POSTGRES, reservation_ttl=30)
    data = json.loads(json.dumps(budget.to_carrier()))
    assert data["pool"] == {"kind": "postgres", "url": POSTGRES.url}
    rebuilt = SharedBudget.from_carrier(data, "here")
    assert rebuilt == budget
    assert pickle.loads(pickle.dumps(budget)) == budget
    with pytest.raises(ValueError, match="here: missing field 'window'"):
        SharedBudget.from_carrier({"key": "k", "pool": data["pool"]}, "here")
    with pytest.raises(ValueError, match="no shared pool kind 'memcached'"):
        SharedBudget.from_carrier(data | {"pool": {"kind": "memcached", "url": "x"}}, "here")


def test_passwords_never_appear_in_messages() -> None:
    assert masked_url("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert masked_url("redis://:hunter22@cache/0") == "redis://:***@cache/0"
    assert masked_url("redis://cache:6379/0") == "redis://cache:6379/0"
    assert "s3cret" not in repr(POSTGRES)
    assert "s3cret" not in repr(SharedBudget("k", max_usd=1, pool=POSTGRES))
