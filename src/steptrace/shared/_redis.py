"""``RedisPool``: shared budget counters in Redis, changed only by Lua scripts.

Each pool counter ``K`` is three Redis keys sharing the hash tag ``{K}`` (so a
cluster keeps them on one node and a script may touch all three):

- ``<prefix>{K}``: a hash of integers ``t``/``p`` (settled tokens and
  picodollars) and ``rt``/``rp`` (what live reservations hold);
- ``<prefix>{K}:r``: reservation id -> ``"<tokens> <picodollars>"``;
- ``<prefix>{K}:e``: a sorted set of reservation ids scored by their expiry
  in milliseconds of the Redis server's clock (``TIME``), so the clocks of
  the workers do not matter.

Every script first drops the expired reservations, so a killed worker's hold
is gone at the first touch after its TTL. Counts change through ``HINCRBY``
with the amounts passed as strings: exact 64-bit integers; only the limit
comparison runs on Lua numbers (exact up to 2**53 picodollars, about $9,000;
above that a comparison may be off by a few picodollars). Keys of windows that
end are given an expiry (``retention``), refreshed on every write.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from typing import Any

from .._redact import register_url
from .._shared import PoolTotals, masked_url
from ..errors import SharedPoolUnavailable

try:
    import redis
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "steptrace.shared.RedisPool needs the redis client: pip install 'steptrace[redis]'"
    ) from exc

__all__ = ["RedisPool"]

_PURGE = """
local function sub(field, amount)
  if amount ~= '0' then redis.call('HINCRBY', KEYS[1], field, '-' .. amount) end
end
local function drop(id)
  local held = redis.call('HGET', KEYS[2], id)
  if held then
    local t, p = string.match(held, '^(%d+) (%d+)$')
    sub('rt', t)
    sub('rp', p)
    redis.call('HDEL', KEYS[2], id)
  end
  redis.call('ZREM', KEYS[3], id)
  return held
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do drop(id) end
local function totals(status)
  local h = redis.call('HMGET', KEYS[1], 't', 'p', 'rt', 'rp')
  return {status, h[1] or '0', h[2] or '0', h[3] or '0', h[4] or '0'}
end
local function keep(retention)
  if retention ~= '' then
    for i = 1, 3 do redis.call('EXPIRE', KEYS[i], retention) end
  end
end
"""

# ARGV: id, tokens, pico, max_tokens ('' off), max_pico ('' off), ttl_ms, retention_s ('' none)
_RESERVE = (
    _PURGE
    + """
local h = redis.call('HMGET', KEYS[1], 't', 'p', 'rt', 'rp')
local used_t = tonumber(h[1] or '0') + tonumber(h[3] or '0')
local used_p = tonumber(h[2] or '0') + tonumber(h[4] or '0')
if ARGV[4] ~= '' and used_t + tonumber(ARGV[2]) > tonumber(ARGV[4]) then return totals(0) end
if ARGV[5] ~= '' and used_p + tonumber(ARGV[3]) > tonumber(ARGV[5]) then return totals(0) end
redis.call('HINCRBY', KEYS[1], 'rt', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'rp', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[1])
keep(ARGV[7])
return totals(1)
"""
)

# ARGV: id ('' none), tokens, pico, retention_s ('' none)
_SETTLE = (
    _PURGE
    + """
local held = 0
if ARGV[1] ~= '' and drop(ARGV[1]) then held = 1 end
redis.call('HINCRBY', KEYS[1], 't', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'p', ARGV[3])
keep(ARGV[4])
return totals(held)
"""
)

# ARGV: id
_RELEASE = (
    _PURGE
    + """
drop(ARGV[1])
return totals(1)
"""
)

_TOTALS = _PURGE + "\nreturn totals(1)\n"

_SHA = {
    source: hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
    for source in (_RESERVE, _SETTLE, _RELEASE, _TOTALS)
}
"""Each script's SHA1: the name Redis caches it under (EVALSHA)."""


def _text(value: int | None) -> str:
    return "" if value is None else str(int(value))


class RedisPool:
    """Shared budget counters in Redis (``redis://``, ``rediss://`` or
    ``unix://`` URL). Safe to share between threads; a forked child opens its
    own connections (redis-py's pool notices the new process).

    ``prefix`` starts every key; ``timeout`` (seconds) bounds connecting and
    each command, after which the call fails closed with
    ``SharedPoolUnavailable``.
    """

    kind = "redis"

    def __init__(
        self, url: str, *, prefix: str = "steptrace:budget:", timeout: float = 5.0
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "RedisPool: url must be a redis://, rediss:// or unix:// URL, "
                f"got {masked_url(str(url))!r}"
            )
        self.url = url
        register_url(url)  # its password is redacted wherever it shows up
        self.prefix = prefix
        self.timeout = timeout
        self._lock = threading.Lock()
        self._client: Any = None
        self._pid = os.getpid()

    @classmethod
    def from_url(cls, url: str) -> RedisPool:
        return cls(url)

    def __repr__(self) -> str:
        return f"RedisPool({masked_url(self.url)!r})"

    def _client_here(self) -> Any:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = redis.Redis.from_url(
                    self.url,
                    socket_connect_timeout=self.timeout,
                    socket_timeout=self.timeout,
                    decode_responses=True,
                )
                self._pid = os.getpid()
            return self._client

    def _run(self, source: str, key: str, args: list[str]) -> tuple[bool, PoolTotals]:
        base = f"{self.prefix}{{{key}}}"
        keys = (base, base + ":r", base + ":e")
        try:
            client = self._client_here()
            # EVALSHA directly (redis-py's Script wrapper costs more than the
            # script); a server that lost its script cache is given it again.
            try:
                reply = client.evalsha(_SHA[source], 3, *keys, *args)
            except redis.exceptions.NoScriptError:
                client.script_load(source)
                reply = client.evalsha(_SHA[source], 3, *keys, *args)
        except redis.RedisError as exc:  # any failure: the limit cannot be checked
            raise SharedPoolUnavailable(
                masked_url(self.url), key, f"{type(exc).__name__}: {exc}"
            ) from exc
        status, tokens, pico, reserved_tokens, reserved_pico = reply
        return int(status) == 1, PoolTotals(
            int(tokens), int(pico), int(reserved_tokens), int(reserved_pico)
        )

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
        reservation = uuid.uuid4().hex
        args = [
            reservation,
            str(tokens),
            str(pico),
            _text(max_tokens),
            _text(max_pico),
            str(max(1, round(ttl * 1000))),
            "" if retention is None else str(max(1, round(retention))),
        ]
        held, totals = self._run(_RESERVE, key, args)
        return (reservation if held else None), totals

    def settle(
        self,
        key: str,
        reservation: str | None,
        tokens: int,
        pico: int,
        *,
        retention: float | None,
    ) -> PoolTotals:
        args = [
            reservation or "",
            str(tokens),
            str(pico),
            "" if retention is None else str(max(1, round(retention))),
        ]
        return self._run(_SETTLE, key, args)[1]

    def release(self, key: str, reservation: str) -> None:
        self._run(_RELEASE, key, [reservation])

    def totals(self, key: str) -> PoolTotals:
        return self._run(_TOTALS, key, [])[1]

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
