"""Usage-plan limits: a token bucket (rate + burst) and a calendar quota, on a pluggable storage.

Why our own bucket: ``limits`` 5.x offers fixed-window, moving-window and
sliding-window-counter strategies, none of which is a token bucket with a burst
capacity and a steady fractional refill. ``pyrate-limiter`` 4.x does ship a
``TokenBucket`` (GCRA) state algorithm, but only with in-memory, multiprocess and Redis
state stores (its SQLite/PostgreSQL buckets are sliding-window logs with one row per
request); it keeps one bucket object per key, counts time in whole milliseconds and
rounds the emission interval, and has no calendar quota (DAY/WEEK/MONTH windows with an
offset). Neither gives API Gateway's exact semantics over memory, SQLite/PostgreSQL and
Redis behind one interface, so the bucket here is a small one of our own: one
arithmetic function (:func:`~mlgate.access.limiter_storage.take_tokens`, mirrored by a
Redis Lua script) behind the :class:`LimiterStorage` protocol, with one contract suite
run against every backend.

Backends, chosen by ``MLGATE_LIMITER__URL``: ``local`` (the default: a memory-mapped file in
the data directory, shared exactly by every server process of this machine and kept across
restarts), ``memory://`` (one process, forgotten on restart), ``database`` (the registry DB,
shared by several machines; group-committed transactions), ``redis://host:port/db`` (one Lua
script per take). When Redis is down the default is to **fail closed**: keyed calls
get 503 (:class:`~mlgate.errors.LimiterUnavailable`). With ``redis_down="open"`` they are
answered from a per-process memory limiter instead (:class:`FailOpenStorage`), so each
process still enforces the plan and N processes admit at most N times the plan.

Example::

    storage = open_limiter_storage("redis://127.0.0.1:6379/0", redis_down="open")
    decision = await storage.take(f"bucket:{key_id}:*", rate=10, burst=10)
    now = time.time()
    _, ends = quota_window("MONTH", now=now)
    quota = await storage.count(f"quota:{key_id}:*", limit=1000, window_end=ends, now=now)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from mlgate.access.limiter_memory import MemoryLimiterStorage
from mlgate.access.limiter_mmap import MmapLimiterStorage
from mlgate.access.limiter_sql import SqlLimiterStorage
from mlgate.access.limiter_storage import Decision, LimiterStorage, QuotaDecision
from mlgate.errors import ConfigurationError, InvalidInput, LimiterUnavailable

__all__ = [
    "PERIODS",
    "WARN_EVERY_S",
    "Decision",
    "FailOpenStorage",
    "LimiterStorage",
    "MemoryLimiterStorage",
    "MmapLimiterStorage",
    "QuotaDecision",
    "SqlLimiterStorage",
    "open_limiter_storage",
    "quota_window",
]

logger = logging.getLogger(__name__)

#: Quota periods and the largest ``offset_days`` each accepts (a MONTH's reset day must
#: exist in every month, February included).
PERIODS: dict[str, int] = {"DAY": 0, "WEEK": 6, "MONTH": 27}
#: FailOpenStorage warns at most this often while the shared state is unreachable.
WARN_EVERY_S = 10.0


class FailOpenStorage:
    """Answer from a per-process fallback while ``inner`` raises :class:`LimiterUnavailable`.

    "Fail open, capped per process": the plan still holds within each process, so with N
    processes a key gets at most N times its plan until ``inner`` is back. The fallback's
    state starts empty (full buckets, zero counts); outages are logged as a warning at
    most once per :data:`WARN_EVERY_S` seconds.
    """

    def __init__(
        self,
        inner: LimiterStorage,
        fallback: MemoryLimiterStorage | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.fallback = MemoryLimiterStorage() if fallback is None else fallback
        self._clock = clock
        self._warned_at: float | None = None
        self._failures = 0

    async def take(
        self, key: str, *, rate: float, burst: int, cost: int = 1, now: float | None = None
    ) -> Decision:
        try:
            return await self.inner.take(key, rate=rate, burst=burst, cost=cost, now=now)
        except LimiterUnavailable as exc:
            self._warn(exc)
        return await self.fallback.take(key, rate=rate, burst=burst, cost=cost, now=now)

    async def count(
        self, key: str, *, limit: int, window_end: float, cost: int = 1, now: float | None = None
    ) -> QuotaDecision:
        try:
            return await self.inner.count(key, limit=limit, window_end=window_end, cost=cost, now=now)
        except LimiterUnavailable as exc:
            self._warn(exc)
        return await self.fallback.count(key, limit=limit, window_end=window_end, cost=cost, now=now)

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
        args: dict[str, Any] = {
            "rate": rate,
            "burst": burst,
            "limit": limit,
            "window_end": window_end,
            "cost": cost,
            "now": now,
        }
        both = getattr(self.inner, "take_then_count", None)
        try:
            if both is not None:
                result: tuple[Decision, QuotaDecision | None] = await both(bucket_key, quota_key, **args)
                return result
            decision = await self.inner.take(bucket_key, rate=rate, burst=burst, cost=cost, now=now)
            if not decision.allowed:
                return decision, None
            quota = await self.inner.count(quota_key, limit=limit, window_end=window_end, cost=cost, now=now)
            return decision, quota
        except LimiterUnavailable as exc:
            self._warn(exc)
        return await self.fallback.take_then_count(bucket_key, quota_key, **args)

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
        args: dict[str, Any] = {"rate": rate, "burst": burst, "window_end": window_end, "cost": cost}
        try:
            await self.inner.refund(bucket_key, quota_key, **args)
        except LimiterUnavailable as exc:
            self._warn(exc)
            await self.fallback.refund(bucket_key, quota_key, **args)

    async def reset(self, key: str) -> None:
        await self.fallback.reset(key)
        try:
            await self.inner.reset(key)
        except LimiterUnavailable as exc:
            self._warn(exc)

    async def close(self) -> None:
        try:
            await self.inner.close()
        finally:
            await self.fallback.close()

    def _warn(self, exc: LimiterUnavailable) -> None:
        self._failures += 1
        now = self._clock()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            logger.warning(
                "limiter state unavailable (%s); failing open with per-process limits "
                "(%d calls answered locally since the last warning)",
                exc.details.get("reason", exc.message),
                self._failures,
            )
            self._failures = 0


def open_limiter_storage(
    url: str, *, engine: Engine | None = None, redis_down: str = "closed", data_dir: Path | None = None
) -> LimiterStorage:
    """The storage named by ``url``: ``local`` (``local:///path``), ``memory://``, ``database`` or
    ``redis://host:port/db``.

    ``local`` is a memory-mapped state file shared by this machine's server processes:
    ``<data_dir>/limiter.state`` unless a path is given. ``database`` uses ``engine`` (the
    registry's). With ``redis_down="open"`` a Redis storage is wrapped in
    :class:`FailOpenStorage`; ``"closed"`` lets :class:`LimiterUnavailable` (503) through.
    """
    if redis_down not in ("closed", "open"):
        raise ConfigurationError(f"limiter redis_down must be 'closed' or 'open', not {redis_down!r}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else url.lower()
    if scheme == "memory":
        return MemoryLimiterStorage()
    if scheme == "local":
        path = url.split("://", 1)[1] if "://" in url else ""
        if not path:
            if data_dir is None:
                raise ConfigurationError("the 'local' limiter needs a data directory or local:///path/file")
            return MmapLimiterStorage(data_dir / "limiter.state")
        return MmapLimiterStorage(Path(path))
    if scheme == "database":
        if engine is None:
            raise ConfigurationError("the 'database' limiter needs the registry database engine")
        return SqlLimiterStorage(engine)
    if scheme in ("redis", "rediss", "unix"):
        from mlgate.access.limiter_redis import RedisLimiterStorage  # redis-py loads only when used

        redis = RedisLimiterStorage(url)
        return FailOpenStorage(redis) if redis_down == "open" else redis
    raise ConfigurationError(
        f"unknown limiter URL {url!r}: use local, local:///path, memory://, database or redis://host:port/db"
    )


def quota_window(period: str, *, offset_days: int = 0, now: float) -> tuple[float, float]:
    """The UTC quota window ``(start, end)`` in epoch seconds that contains ``now``.

    Calendar periods: DAY starts at midnight, WEEK on Monday 00:00, MONTH on the 1st at
    00:00; ``offset_days`` moves the reset that many days into the period (WEEK offset 2:
    Wednesday; MONTH offset 14: the 15th). An offset must be shorter than the period
    (DAY: 0, WEEK: 0-6, MONTH: 0-27), else :class:`InvalidInput`. Note that API Gateway
    counts WEEK offsets from Sunday; here, as in ISO 8601, weeks start on Monday.

    >>> quota_window("DAY", now=86_400 * 3 + 5)
    (259200.0, 345600.0)
    """
    name = period.upper()
    if name not in PERIODS:
        raise InvalidInput(f"unknown quota period {period!r}: use DAY, WEEK or MONTH")
    if not 0 <= offset_days <= PERIODS[name]:
        raise InvalidInput(
            f"quota offset for {name} must be between 0 and {PERIODS[name]} days, got {offset_days}"
        )
    moment = datetime.fromtimestamp(now, UTC)
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    shift = timedelta(days=offset_days)
    if name == "DAY":
        start = midnight
        end = start + timedelta(days=1)
    elif name == "WEEK":
        start = midnight - timedelta(days=midnight.weekday()) + shift
        if start > moment:
            start -= timedelta(days=7)
        end = start + timedelta(days=7)
    else:
        first = midnight.replace(day=1)
        start = first + shift
        if start > moment:
            first = _add_months(first, -1)
            start = first + shift
        end = _add_months(first, 1) + shift
    return start.timestamp(), end.timestamp()


def _add_months(first_of_month: datetime, months: int) -> datetime:
    index = first_of_month.year * 12 + first_of_month.month - 1 + months
    return first_of_month.replace(year=index // 12, month=index % 12 + 1)
