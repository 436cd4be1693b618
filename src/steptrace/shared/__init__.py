"""Pools for shared budgets: ``RedisPool`` (extra ``steptrace[redis]``) and
``PostgresPool`` (extra ``steptrace[postgres]``).

A ``steptrace.SharedBudget`` keeps what it has consumed in one of these, so
every worker of a fleet draws from one limit::

    from steptrace import SharedBudget, persona
    from steptrace.shared import RedisPool

    team = SharedBudget("support-team", max_usd=50, window="day",
                        pool=RedisPool("redis://cache:6379/0"))

    @persona(budget=team)
    def support_agent(ticket): ...

Each backend imports its client library only when first used, and raises
``ImportError`` with the install hint when it is missing. Importing this
package registers both kinds with ``steptrace.extract`` (which imports it by
itself when a carrier names them); ``register_pool_kind`` adds your own
``SharedPool`` implementation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._shared import (
    DEFAULT_RESERVATION_TTL,
    PoolTotals,
    SharedPool,
    register_pool_kind,
)
from ..errors import SharedPoolUnavailable

if TYPE_CHECKING:
    from ._postgres import PostgresPool
    from ._redis import RedisPool

__all__ = [
    "DEFAULT_RESERVATION_TTL",
    "PoolTotals",
    "PostgresPool",
    "RedisPool",
    "SharedPool",
    "SharedPoolUnavailable",
    "register_pool_kind",
]


def __getattr__(name: str) -> Any:
    if name == "RedisPool":
        from ._redis import RedisPool

        return RedisPool
    if name == "PostgresPool":
        from ._postgres import PostgresPool

        return PostgresPool
    raise AttributeError(f"module 'steptrace.shared' has no attribute {name!r}")


def _redis_pool(url: str) -> SharedPool:
    from ._redis import RedisPool

    return RedisPool(url)


def _postgres_pool(url: str) -> SharedPool:
    from ._postgres import PostgresPool

    return PostgresPool(url)


register_pool_kind("redis", _redis_pool)
register_pool_kind("postgres", _postgres_pool)
