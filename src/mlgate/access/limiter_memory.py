"""Limiter state in this process's memory: exact for one server process, and the fail-open fallback.

It sits on the hot path of every keyed request, so a take is a dict lookup and a few
float operations under a :class:`threading.Lock` (held for microseconds, never across an
``await``: the coroutine methods never yield). Buckets that have refilled to full and
counters whose window has ended are dropped by an amortized sweep, because a missing
bucket is a full one and a missing counter is a zero one.

Example::

    storage = MemoryLimiterStorage()
    decision = await storage.take("bucket:abcd1234:*", rate=10, burst=10)
"""

from __future__ import annotations

import threading
import time

from mlgate.access.limiter_storage import (
    Decision,
    InProcessStorage,
    QuotaDecision,
    check_bucket_args,
    check_quota_args,
    take_tokens,
    whole_tokens,
)

__all__ = ["MemoryLimiterStorage"]

# Sweep no more often than every this many operations (and at most once per len(state)).
_SWEEP_MIN_OPS = 1024


class MemoryLimiterStorage(InProcessStorage):
    """Token buckets and quota counters in a dict, safe to share between threads."""

    __slots__ = ("_buckets", "_counters", "_lock", "_ops", "_sweep_at")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # key -> [tokens, stamp, full_at]: mutated in place, so a take allocates no state
        self._buckets: dict[str, list[float]] = {}
        # key -> [count, window_end]
        self._counters: dict[str, list[float]] = {}
        self._ops = 0
        self._sweep_at = _SWEEP_MIN_OPS

    async def reset(self, key: str) -> None:
        with self._lock:
            self._buckets.pop(key, None)
            self._counters.pop(key, None)

    async def close(self) -> None:
        with self._lock:
            self._buckets.clear()
            self._counters.clear()

    def take_sync(
        self, key: str, *, rate: float, burst: int, cost: int = 1, now: float | None = None
    ) -> Decision:
        """:meth:`take` for synchronous callers (threads)."""
        check_bucket_args(rate, burst, cost)
        t = time.time() if now is None else now
        with self._lock:
            entry = self._buckets.get(key)
            if entry is None:
                entry = self._buckets[key] = [float(burst), t, t]
            allowed, tokens, stamp, retry_after = take_tokens(
                entry[0], entry[1], now=t, rate=rate, burst=burst, cost=cost
            )
            if allowed:
                entry[0] = tokens
                entry[1] = stamp
                entry[2] = stamp + (burst - tokens) / rate
            self._tick(t)
        return Decision(allowed, burst, whole_tokens(tokens), retry_after)

    def count_sync(
        self, key: str, *, limit: int, window_end: float, cost: int = 1, now: float | None = None
    ) -> QuotaDecision:
        """:meth:`count` for synchronous callers (threads)."""
        t = time.time() if now is None else now
        check_quota_args(limit, window_end, cost, t)
        with self._lock:
            entry = self._counters.get(key)
            if entry is None or entry[1] <= t or entry[1] < window_end:
                used, ends = 0, window_end  # no counter, or its window is over
            else:
                used, ends = int(entry[0]), entry[1]
            allowed = used + cost <= limit
            if allowed:
                used += cost
                if entry is None:
                    self._counters[key] = [used, ends]
                else:
                    entry[0] = used
                    entry[1] = ends
            self._tick(t)
        return QuotaDecision(allowed, limit, limit - used, ends)

    def take_then_count_sync(
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
        """:meth:`take`, then :meth:`count` only if the bucket allowed it (the gate's metering)."""
        t = time.time() if now is None else now
        decision = self.take_sync(bucket_key, rate=rate, burst=burst, cost=cost, now=t)
        if not decision.allowed:
            return decision, None
        return decision, self.count_sync(quota_key, limit=limit, window_end=window_end, cost=cost, now=t)

    def refund_sync(
        self,
        bucket_key: str | None,
        quota_key: str | None,
        *,
        rate: float,
        burst: int,
        window_end: float,
        cost: int,
    ) -> None:
        """:meth:`refund` for synchronous callers."""
        with self._lock:
            entry = self._buckets.get(bucket_key) if bucket_key is not None else None
            if entry is not None:
                entry[0] = min(float(burst), entry[0] + cost)
                entry[2] = entry[1] + (burst - entry[0]) / rate
            counter = self._counters.get(quota_key) if quota_key is not None else None
            if counter is not None and counter[1] == window_end:
                counter[0] = max(0, int(counter[0]) - cost)

    def __len__(self) -> int:
        """How many buckets and counters are held (for tests and metrics)."""
        return len(self._buckets) + len(self._counters)

    def _tick(self, now: float) -> None:
        # Called with the lock held. Sweeping costs O(n) once per max(n, 1024) operations,
        # so O(1) amortized per take.
        self._ops += 1
        if self._ops < self._sweep_at:
            return
        for key in [k for k, e in self._buckets.items() if e[2] <= now]:
            del self._buckets[key]
        for key in [k for k, e in self._counters.items() if e[1] <= now]:
            del self._counters[key]
        self._ops = 0
        self._sweep_at = max(_SWEEP_MIN_OPS, len(self._buckets) + len(self._counters))
