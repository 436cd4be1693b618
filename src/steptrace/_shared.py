"""Shared budgets: limits whose consumption lives in a pool every process draws from.

A ``SharedBudget`` is a key, token and USD limits, a window and a pool. It sits
wherever a ``Budget`` does (``run()``, ``@persona``, ``@step``: ``budget=`` takes
a ``SharedBudget``, or a list of one local budget and any number of shared
ones; ``split_budget`` does that parsing), but what it has consumed is kept in
a ``SharedPool`` (Redis or PostgreSQL, ``steptrace.shared``), so all the
workers of a fleet are held to one limit. The window picks the pool counter:
one per run id (``run``), per UTC day (``day``), per UTC month (``month``) or
one forever (``total``).

Amounts travel as integers: tokens, and USD in picodollars (1e-12 USD, the
core's own unit), so a pool's total equals the sum of the workers' ledgers
exactly. The ``SharedPool`` protocol is the extension point; pools are rebuilt
from ``(kind, url)`` in other processes (``steptrace.extract``) through a
registry filled by ``steptrace.shared`` (imported on first need). This module
is standard library only; how reservations ride on the accounting is in
``_reservations``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from ._context import get_frame
from .budget import Budget, _check_max_tokens, _check_max_usd, pico_to_usd, usd_to_pico

__all__ = [
    "DEFAULT_RESERVATION_TTL",
    "BudgetSpec",
    "PoolTotals",
    "SharedBudget",
    "SharedPool",
    "pool_from_url",
    "register_pool_kind",
    "split_budget",
]

Window = Literal["run", "day", "month", "total"]

WINDOWS: tuple[Window, ...] = ("run", "day", "month", "total")

DEFAULT_RESERVATION_TTL = 600.0
"""Seconds a pre-flight reservation is held when its call never reports back
(a crashed or killed worker): long enough for a slow streamed call with
retries, short enough that a dead worker's hold is gone within minutes."""

MAX_SHARED_USD = 9_000_000.0
"""Pools count picodollars in signed 64-bit integers: about $9.2M per window."""

_KEY = r"[A-Za-z0-9_.:/@+\-]{1,200}"  # compiled on first use (re caches it)

# How long a pool may keep an idle window's counters (seconds; None: forever).
# Only pools that expire keys (Redis) use it; a day's counter outlives its day
# so it can still be read the next morning.
WINDOW_RETENTION: dict[str, float | None] = {
    "run": 30 * 86400.0,
    "day": 3 * 86400.0,
    "month": 62 * 86400.0,
    "total": None,
}


class PoolTotals(NamedTuple):
    """One pool counter: settled usage, and what live reservations hold."""

    tokens: int = 0
    pico: int = 0
    reserved_tokens: int = 0
    reserved_pico: int = 0

    @property
    def cost_usd(self) -> float:
        return pico_to_usd(self.pico)

    @property
    def committed_tokens(self) -> int:
        """Settled plus reserved tokens: what a new reservation must fit beside."""
        return self.tokens + self.reserved_tokens

    @property
    def committed_pico(self) -> int:
        return self.pico + self.reserved_pico


@runtime_checkable
class SharedPool(Protocol):
    """Where shared budgets keep their consumption. Every method is atomic on the
    pool's side, so any number of processes and machines may call it at once.

    ``kind`` and ``url`` let another process rebuild the pool
    (``pool_from_url``); ``url`` may hold credentials and is never shown
    unmasked. A pool that cannot be reached raises ``SharedPoolUnavailable``.
    Amounts are integers (tokens, picodollars); ``key`` is the counter (a
    budget's key and window, built by ``SharedBudget.pool_key``).
    """

    kind: str
    url: str

    def reserve(
        self,
        key: str,
        tokens: int,
        pico: int,
        *,
        max_tokens: int | None,
        max_pico: int | None,
        ttl: float,
        retention: float | None,
    ) -> tuple[str | None, PoolTotals]:
        """Drop expired reservations; then, when settled + reserved + this amount
        stays within both limits, hold the amount for ``ttl`` seconds under a new
        reservation id. Returns ``(id or None when refused, totals after)``."""
        ...

    def settle(
        self,
        key: str,
        reservation: str | None,
        tokens: int,
        pico: int,
        *,
        retention: float | None,
    ) -> PoolTotals:
        """Drop the reservation (if still held) and add the actual usage; with
        ``reservation=None`` just add it. Returns the totals after."""
        ...

    def release(self, key: str, reservation: str) -> None:
        """Drop a reservation without adding anything (its call never happened)."""
        ...

    def totals(self, key: str) -> PoolTotals:
        """The counter now (expired reservations not counted)."""
        ...

    def close(self) -> None: ...


# -- rebuilding pools in other processes ------------------------------------------

_pool_kinds: dict[str, Callable[[str], SharedPool]] = {}
_pools: dict[tuple[str, str], SharedPool] = {}
_pools_lock = threading.Lock()
_BUILTIN_POOLS = "steptrace.shared"  # registers "redis" and "postgres" on import


def register_pool_kind(kind: str, from_url: Callable[[str], SharedPool]) -> None:
    """Teach ``extract`` to rebuild pools of ``kind`` from their URL."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"register_pool_kind: kind must be a non-empty string, got {kind!r}")
    if not callable(from_url):
        raise TypeError(f"register_pool_kind: from_url must be callable, got {from_url!r}")
    _pool_kinds[kind] = from_url


def pool_from_url(kind: str, url: str) -> SharedPool:
    """The pool of ``kind`` at ``url``, one per process (reused by every extract)."""
    with _pools_lock:
        pool = _pools.get((kind, url))
        if pool is not None:
            return pool
        factory = _pool_kinds.get(kind)
        if factory is None and kind in ("redis", "postgres"):
            # The built-in backends live in an optional subpackage: load it by
            # name only when a carrier names one of them.
            import importlib

            importlib.import_module(_BUILTIN_POOLS)
            factory = _pool_kinds.get(kind)
        if factory is None:
            known = sorted({*_pool_kinds, "redis", "postgres"})
            raise ValueError(
                f"no shared pool kind {kind!r} (known: {known}); register one with "
                "steptrace.shared.register_pool_kind"
            )
        if not _pools:
            import atexit

            atexit.register(close_pools)
        pool = _pools[(kind, url)] = factory(url)
        return pool


def close_pools() -> None:
    """Close the pools ``pool_from_url`` opened (at interpreter exit)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        try:
            pool.close()
        except Exception:  # closing at exit must not raise
            pass


def masked_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    from urllib.parse import urlsplit, urlunsplit  # deferred: keeps ``import steptrace`` fast

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


# -- the budget ---------------------------------------------------------------------


class SharedBudget:
    """A limit held in a pool shared by processes and machines.

    ``key`` names the pool counter (letters, digits and ``_.:/@+-``, up to 200);
    ``max_tokens``/``max_usd`` as in ``Budget`` (``None`` is off; with both off
    the pool only meters); ``window`` is ``run`` (one counter per run id, shared
    with the run's workers through ``inject``/``extract``), ``day`` or
    ``month`` (UTC) or ``total``. ``pool`` is a ``SharedPool`` (``RedisPool``,
    ``PostgresPool`` from ``steptrace.shared``). ``reservation_ttl``: seconds a
    pre-flight reservation outlives a worker that never reported back.
    """

    __slots__ = (
        "key",
        "max_pico",
        "max_tokens",
        "max_usd",
        "pool",
        "reservation_ttl",
        "window",
    )

    def __init__(
        self,
        key: str,
        *,
        max_usd: float | None = None,
        max_tokens: int | None = None,
        window: Window = "run",
        pool: SharedPool,
        reservation_ttl: float = DEFAULT_RESERVATION_TTL,
    ) -> None:
        if not isinstance(key, str) or not re.fullmatch(_KEY, key):
            raise ValueError(
                "SharedBudget: key must be 1-200 characters of letters, digits and _.:/@+-, "
                f"got {key!r}"
            )
        owner = f"SharedBudget `{key}`"
        self.key = key
        self.max_tokens = _check_max_tokens(max_tokens, owner)
        self.max_usd = _check_max_usd(max_usd, owner)
        if self.max_usd is not None and self.max_usd > MAX_SHARED_USD:
            raise ValueError(
                f"{owner}: max_usd must be at most {MAX_SHARED_USD:.0f} (pools count "
                f"picodollars in 64-bit integers), got {self.max_usd}"
            )
        self.max_pico = None if self.max_usd is None else usd_to_pico(self.max_usd)
        if window not in WINDOWS:
            raise ValueError(f"{owner}: window must be one of {list(WINDOWS)}, got {window!r}")
        self.window: Window = window
        if not isinstance(pool, SharedPool):
            raise TypeError(
                f"{owner}: pool must be a SharedPool (steptrace.shared.RedisPool or "
                f"PostgresPool), got {pool!r}"
            )
        self.pool = pool
        if (
            isinstance(reservation_ttl, bool)
            or not isinstance(reservation_ttl, int | float)
            or not reservation_ttl > 0
            or reservation_ttl == float("inf")
        ):
            raise ValueError(
                f"{owner}: reservation_ttl must be a finite number of seconds > 0, "
                f"got {reservation_ttl!r}"
            )
        self.reservation_ttl = float(reservation_ttl)

    @property
    def has_limit(self) -> bool:
        return self.max_tokens is not None or self.max_pico is not None

    @property
    def budget(self) -> Budget:
        """The limits as a plain ``Budget``."""
        return Budget(self.max_tokens, self.max_usd)

    def window_key(self, run_id: str, now: float | None = None) -> str:
        """The window part of the pool counter for a run at a time (UTC)."""
        window = self.window
        if window == "run":
            return f"run:{run_id}"
        if window == "total":
            return "total"
        when = time.gmtime(time.time() if now is None else now)
        if window == "day":
            return time.strftime("day:%Y-%m-%d", when)
        return time.strftime("month:%Y-%m", when)

    def pool_key(self, run_id: str, now: float | None = None) -> str:
        """The pool counter this budget draws from for ``run_id`` at ``now``."""
        return f"{self.key}|{self.window_key(run_id, now)}"

    @property
    def retention(self) -> float | None:
        return WINDOW_RETENTION[self.window]

    def totals(self, run_id: str | None = None, now: float | None = None) -> PoolTotals:
        """What the pool holds for this budget now (``run_id`` is needed for the
        ``run`` window; default: the current run)."""
        if run_id is None:
            frame = get_frame()
            if frame is None:
                raise ValueError(f"shared budget `{self.key}`: totals() outside a run needs run_id")
            run_id = frame.run.id
        return self.pool.totals(self.pool_key(run_id, now))

    def describe(self) -> dict[str, Any]:
        """The budget for records and summaries: no pool URL (it may hold a password)."""
        return {
            "key": self.key,
            "max_tokens": self.max_tokens,
            "max_usd": self.max_usd,
            "window": self.window,
            "pool": self.pool.kind,
        }

    def to_carrier(self) -> dict[str, Any]:
        """What another process needs to rebuild this budget (JSON-ready)."""
        return {
            "key": self.key,
            "max_tokens": self.max_tokens,
            "max_usd": self.max_usd,
            "window": self.window,
            "reservation_ttl": self.reservation_ttl,
            "pool": {"kind": self.pool.kind, "url": self.pool.url},
        }

    @classmethod
    def from_carrier(cls, data: object, where: str) -> SharedBudget:
        """Rebuild a budget from ``to_carrier()``; ``where`` names it in errors."""
        if not isinstance(data, Mapping):
            raise TypeError(f"{where} must be an object, got {data!r}")
        for name in ("key", "window", "pool"):
            if name not in data:
                raise ValueError(f"{where}: missing field {name!r}")
        pool = data["pool"]
        if (
            not isinstance(pool, Mapping)
            or not isinstance(pool.get("kind"), str)
            or not isinstance(pool.get("url"), str)
        ):
            raise ValueError(f"{where}.pool must be {{'kind': str, 'url': str}}, got {pool!r}")
        try:
            return cls(
                data["key"],
                max_tokens=data.get("max_tokens"),
                max_usd=data.get("max_usd"),
                window=data["window"],
                pool=pool_from_url(pool["kind"], pool["url"]),
                reservation_ttl=data.get("reservation_ttl", DEFAULT_RESERVATION_TTL),
            )
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from None

    def _values(self) -> tuple[Any, ...]:
        return (
            self.key,
            self.max_tokens,
            self.max_usd,
            self.window,
            self.pool.kind,
            self.pool.url,
            self.reservation_ttl,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SharedBudget):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (
            f"SharedBudget({self.key!r}, max_usd={self.max_usd!r}, "
            f"max_tokens={self.max_tokens!r}, window={self.window!r}, "
            f"pool={self.pool.kind}:{masked_url(self.pool.url)})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (e.g. to a process pool) as its carrier form; the pool is
        # rebuilt from its URL on the other side.
        return (_rebuild, (self.to_carrier(),))


BudgetSpec = Budget | Mapping[str, Any] | SharedBudget | list[Any] | tuple[Any, ...] | None
"""What ``budget=`` accepts: a local budget, a shared one, or a list of one
local budget and shared ones (see ``split_budget``)."""


def _rebuild(data: dict[str, Any]) -> SharedBudget:
    return SharedBudget.from_carrier(data, "SharedBudget")


def split_budget(value: object, owner: str) -> tuple[Budget | None, tuple[SharedBudget, ...]]:
    """Parse a ``budget=`` argument: a ``Budget``, a dict, a ``SharedBudget``, or
    a list/tuple of at most one local budget and any shared ones (distinct
    keys). Returns ``(local budget or None, shared budgets)``; errors name
    ``owner``."""
    if value is None:
        return None, ()
    if isinstance(value, SharedBudget):
        return None, (value,)
    if isinstance(value, list | tuple):
        local: Budget | None = None
        shared: list[SharedBudget] = []
        for index, item in enumerate(value):
            if isinstance(item, SharedBudget):
                if any(s.key == item.key and s.window == item.window for s in shared):
                    raise ValueError(f"{owner}: shared budget `{item.key}` given twice")
                shared.append(item)
            elif isinstance(item, Budget | Mapping):
                if local is not None:
                    raise ValueError(
                        f"{owner}: budget[{index}] is a second local budget; give at most one "
                        "Budget (or dict) plus any SharedBudgets"
                    )
                local = Budget.coerce(item, owner)
            else:
                raise TypeError(
                    f"{owner}: budget must be a Budget or a dict with max_tokens/max_usd, a "
                    f"SharedBudget, or a list of those; budget[{index}] is {type(item).__name__}"
                )
        return local, tuple(shared)
    if isinstance(value, Budget | Mapping):
        return Budget.coerce(value, owner), ()
    raise TypeError(
        f"{owner}: budget must be a Budget or a dict with max_tokens/max_usd, a SharedBudget, "
        f"or a list of those, got {type(value).__name__}"
    )
