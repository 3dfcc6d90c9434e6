"""Limiter state in Redis, shared by every process and machine that points at it.

Each take and each count is ONE Lua script (and the gate's take-then-count of a request one
script too) (``EVALSHA``, falling back to ``EVAL`` after a
Redis restart forgot the script), so the read-refill-write is atomic on the server
without locks or retries. The time is an argument (the caller's ``now``), not Redis'
``TIME``: the memory and database backends take it the same way, so the three give the
same answers, and tests can drive the clock. Keys carry a ``PEXPIRE``: a bucket vanishes
a second after it would have refilled to full, a counter a minute after its window ends,
so idle keys cost nothing. Floats travel as ``%.17g`` strings, which round-trip exactly.

Redis unreachable (refused, timed out, loading, read-only replica) raises
:class:`mlgate.errors.LimiterUnavailable`: the documented default is to fail closed (503).
After a failure the storage answers that at once for ``down_for`` seconds (1 s) before
probing Redis again, so a dead Redis costs each request microseconds, not a timeout.
:class:`mlgate.access.limiter.FailOpenStorage` turns that into "fail open, capped per
process" when ``MLGATE_LIMITER__REDIS_DOWN=open``.

Example::

    storage = RedisLimiterStorage("redis://127.0.0.1:6379/0")
    decision = await storage.take("bucket:abcd1234:*", rate=10, burst=10)
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mlgate.access.limiter_storage import (
    TOKEN_EPSILON,
    Decision,
    QuotaDecision,
    check_bucket_args,
    check_quota_args,
    whole_tokens,
)
from mlgate.errors import ConfigurationError, LimiterUnavailable

__all__ = ["DEFAULT_PREFIX", "RedisLimiterStorage"]

#: Prefix of every key this storage writes (buckets under ``<prefix>b:``, counters under ``<prefix>q:``).
DEFAULT_PREFIX = "mlgate:limiter:"
# How long a counter outlives its window; its expiry is decided by the stored window end.
_COUNTER_GRACE_MS = 60_000

# take(bucket key, rate, burst, cost, now, epsilon) -> {allowed, tokens, retry_after}.
# Mirrors mlgate.access.limiter_storage.take_tokens.
_TAKE_FN = """
local function take(key, rate, burst, cost, now, eps)
  local state = redis.call('HMGET', key, 't', 's')
  local tokens = burst
  local stamp = now
  if state[1] then
    tokens = tonumber(state[1])
    stamp = tonumber(state[2])
  end
  if now > stamp then
    tokens = math.min(burst, tokens + (now - stamp) * rate)
    stamp = now
  end
  if tokens + eps >= cost then
    tokens = math.max(0, tokens - cost)
    redis.call('HSET', key, 't', string.format('%.17g', tokens), 's', string.format('%.17g', stamp))
    redis.call('PEXPIRE', key, math.ceil((burst - tokens) / rate * 1000) + 1000)
    return {1, string.format('%.17g', tokens), '0'}
  end
  return {0, string.format('%.17g', tokens), string.format('%.17g', (cost - tokens) / rate + (stamp - now))}
end
"""

# count(counter key, limit, window_end, cost, now, grace_ms) -> {allowed, used, window_end}.
_COUNT_FN = """
local function count(key, limit, window_end, cost, now, grace_ms)
  local state = redis.call('HMGET', key, 'c', 'e')
  local used = 0
  local ends = window_end
  if state[1] then
    local stored_end = tonumber(state[2])
    if stored_end > now and stored_end >= window_end then
      used = tonumber(state[1])
      ends = stored_end
    end
  end
  if used + cost <= limit then
    used = used + cost
    redis.call('HSET', key, 'c', string.format('%d', used), 'e', string.format('%.17g', ends))
    redis.call('PEXPIRE', key, math.ceil((ends - now) * 1000) + grace_ms)
    return {1, used, string.format('%.17g', ends)}
  end
  return {0, used, string.format('%.17g', ends)}
end
"""

# KEYS[1] bucket; ARGV rate, burst, cost, now, epsilon.
_TAKE = (
    _TAKE_FN
    + "return take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), "
    + "tonumber(ARGV[4]), tonumber(ARGV[5]))"
)
# KEYS[1] counter; ARGV limit, window_end, cost, now, grace_ms.
_COUNT = (
    _COUNT_FN
    + "return count(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), "
    + "tonumber(ARGV[4]), tonumber(ARGV[5]))"
)
# KEYS[1] bucket, KEYS[2] counter; ARGV rate, burst, cost, now, epsilon, limit, window_end, grace_ms:
# the take, then the count only if the take allowed it -> the take's 3 values (+ the count's 3).
_TAKE_THEN_COUNT = (
    _TAKE_FN
    + _COUNT_FN
    + """
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local d = take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), cost, now, tonumber(ARGV[5]))
if d[1] == 0 then
  return d
end
local q = count(KEYS[2], tonumber(ARGV[6]), tonumber(ARGV[7]), cost, now, tonumber(ARGV[8]))
return {d[1], d[2], d[3], q[1], q[2], q[3]}
"""
)

# KEYS[1] bucket, KEYS[2] counter; ARGV cost, has bucket, burst, has counter, window_end: a refund.
_REFUND = """
local cost = tonumber(ARGV[1])
if ARGV[2] == '1' then
  local t = redis.call('HGET', KEYS[1], 't')
  if t then
    local tokens = math.min(tonumber(ARGV[3]), tonumber(t) + cost)
    redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens))
  end
end
if ARGV[4] == '1' then
  local state = redis.call('HMGET', KEYS[2], 'c', 'e')
  if state[1] and tonumber(state[2]) == tonumber(ARGV[5]) then
    redis.call('HSET', KEYS[2], 'c', string.format('%d', math.max(0, tonumber(state[1]) - cost)))
  end
end
return {1}
"""


class _Script:
    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


_TAKE_SCRIPT = _Script(_TAKE)
_COUNT_SCRIPT = _Script(_COUNT)
_TAKE_THEN_COUNT_SCRIPT = _Script(_TAKE_THEN_COUNT)
_REFUND_SCRIPT = _Script(_REFUND)
# Errors that mean "the shared state is out of reach", as opposed to a bug in a script.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)


class RedisLimiterStorage:
    """Token buckets and quota counters in Redis, one Lua script per operation.

    ``socket_timeout`` bounds how long a request waits on a slow or dead Redis before
    the limiter answers :class:`~mlgate.errors.LimiterUnavailable`; a ``socket_timeout``
    query parameter in ``url`` overrides it. After a failure, calls fail at once for
    ``down_for`` seconds instead of each waiting out the timeout (a dead Redis must not
    turn every request into a slow one); the first call after that probes Redis again.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float = 0.5,
        down_for: float = 1.0,
        max_connections: int | None = None,
    ) -> None:
        try:
            self._client: Redis = Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                # One immediate retry: a pooled connection the server closed while idle.
                retry=Retry(NoBackoff(), 1),
                max_connections=max_connections,
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL for the limiter: {exc}") from exc
        self._buckets = prefix + "b:"
        self._counters = prefix + "q:"
        self._down_for = down_for
        self._down_until = 0.0  # time.monotonic() before which Redis is taken to be down

    async def take(
        self, key: str, *, rate: float, burst: int, cost: int = 1, now: float | None = None
    ) -> Decision:
        check_bucket_args(rate, burst, cost)
        t = time.time() if now is None else now
        args = (repr(float(rate)), burst, cost, repr(float(t)), repr(TOKEN_EPSILON))
        allowed, tokens, retry_after = await self._run(_TAKE_SCRIPT, (self._buckets + key,), args)
        return Decision(allowed == 1, burst, whole_tokens(float(tokens)), float(retry_after))

    async def count(
        self, key: str, *, limit: int, window_end: float, cost: int = 1, now: float | None = None
    ) -> QuotaDecision:
        t = time.time() if now is None else now
        check_quota_args(limit, window_end, cost, t)
        args = (limit, repr(float(window_end)), cost, repr(float(t)), _COUNTER_GRACE_MS)
        allowed, used, ends = await self._run(_COUNT_SCRIPT, (self._counters + key,), args)
        return QuotaDecision(allowed == 1, limit, limit - int(used), float(ends))

    async def take_then_count(
        self,
        bucket_key: str,
        quota_key: str,
        *,
        rate: float,
        burst: int,
        limit: int,
        window_end: float,
        cost: int = 1,
        now: float | None = None,
    ) -> tuple[Decision, QuotaDecision | None]:
        """:meth:`take`, then :meth:`count` only if the bucket allowed it: one script, one round trip."""
        check_bucket_args(rate, burst, cost)
        t = time.time() if now is None else now
        check_quota_args(limit, window_end, cost, t)
        args = (
            repr(float(rate)),
            burst,
            cost,
            repr(float(t)),
            repr(TOKEN_EPSILON),
            limit,
            repr(float(window_end)),
            _COUNTER_GRACE_MS,
        )
        reply = await self._run(
            _TAKE_THEN_COUNT_SCRIPT, (self._buckets + bucket_key, self._counters + quota_key), args
        )
        decision = Decision(reply[0] == 1, burst, whole_tokens(float(reply[1])), float(reply[2]))
        if len(reply) == 3:
            return decision, None
        return decision, QuotaDecision(reply[3] == 1, limit, limit - int(reply[4]), float(reply[5]))

    async def refund(
        self,
        bucket_key: str | None,
        quota_key: str | None,
        *,
        rate: float,
        burst: int,
        window_end: float,
        cost: int,
    ) -> None:
        keys = (self._buckets + (bucket_key or ""), self._counters + (quota_key or ""))
        args = (cost, int(bucket_key is not None), burst, int(quota_key is not None), repr(float(window_end)))
        await self._run(_REFUND_SCRIPT, keys, args)

    async def reset(self, key: str) -> None:
        self._check_up()
        try:
            await self._client.delete(self._buckets + key, self._counters + key)
        except _UNREACHABLE as exc:
            raise self._went_down(exc) from exc

    async def close(self) -> None:
        await self._client.aclose()

    async def _run(self, script: _Script, keys: tuple[str, ...], args: tuple[Any, ...]) -> list[Any]:
        self._check_up()
        try:
            try:
                reply = await self._client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                reply = await self._client.eval(script.source, len(keys), *keys, *args)
        except _UNREACHABLE as exc:
            raise self._went_down(exc) from exc
        assert isinstance(reply, list)
        return reply

    def _check_up(self) -> None:
        if self._down_until and time.monotonic() < self._down_until:
            raise LimiterUnavailable(
                "the limiter's Redis is unavailable",
                retry_after=max(0.0, self._down_until - time.monotonic()),
                details={"reason": "recently unreachable"},
            )

    def _went_down(self, exc: BaseException) -> LimiterUnavailable:
        self._down_until = time.monotonic() + self._down_for
        return LimiterUnavailable(
            "the limiter's Redis is unavailable",
            retry_after=self._down_for,
            details={"reason": type(exc).__name__},
        )
