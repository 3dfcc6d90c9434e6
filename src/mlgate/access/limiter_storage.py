"""The limiter's storage interface, its answers, and the token-bucket arithmetic they share.

Every backend (``limiter_memory``, ``limiter_mmap``, ``limiter_sql``, ``limiter_redis``) implements
:class:`LimiterStorage` with the same semantics, checked by one contract suite
(``tests/contract/test_limiter_contract.py``):

- **Token bucket** (API Gateway throttling): capacity ``burst``, refilled at ``rate``
  tokens per second, a new bucket starts full, tokens are fractional internally, and a
  take of ``cost`` succeeds iff the bucket holds at least ``cost`` tokens. A refused take
  changes nothing. Time comes from the caller (``now``, epoch seconds), never from the
  server that holds the state, so every process uses the same clock source. A ``now``
  earlier than the stored timestamp (skew between processes) mints no tokens: the
  bucket keeps its later timestamp and only spends.
- **Quota counter** (API Gateway quota): a fixed window ending at ``window_end``; a
  request is counted only when ``count + cost <= limit``, so refused requests do not
  use quota, and the counter starts again from zero once ``window_end`` has passed.
- **Refund** (charged = served): ``cost`` tokens go back into a bucket (never above
  ``burst``) and ``cost`` units back to a counter whose window is still the one that
  counted them (never below zero); a bucket or counter that no longer exists is left alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from mlgate.errors import InvalidInput

__all__ = [
    "TOKEN_EPSILON",
    "Decision",
    "InProcessStorage",
    "LimiterStorage",
    "QuotaDecision",
    "check_bucket_args",
    "check_quota_args",
    "take_tokens",
    "whole_tokens",
]

#: Tolerance on the token count. Refills of decimal time steps (0.1 s at 10 rps) land a
#: hair below a whole token in binary floating point; this keeps them from being refused.
#: It can mint at most 1e-9 token per take, i.e. one token per billion takes.
TOKEN_EPSILON = 1e-9


# Results, not values to hash or mutate; not frozen because a frozen dataclass's __init__ costs
# more, and one of each is made per metered request.
@dataclass(slots=True)
class Decision:
    """The outcome of one token-bucket take."""

    allowed: bool
    #: the bucket's capacity (burst): the ``X-RateLimit-Limit`` header
    limit: int
    #: whole tokens left after this take (floor)
    remaining: int
    #: seconds until ``cost`` tokens are available (0.0 when allowed)
    retry_after: float


@dataclass(slots=True)
class QuotaDecision:
    """The outcome of one quota count."""

    allowed: bool
    limit: int
    #: requests left in this window after this one
    remaining: int
    #: epoch seconds when the window ends and the count starts again
    resets_at: float


class LimiterStorage(Protocol):
    """Where token buckets and quota counters live (one process, the database, Redis).

    Keys are opaque strings built by the caller (``"bucket:<key id>:<scope>"``); a bucket
    and a counter may share a key without clashing. ``now`` defaults to ``time.time()``.
    """

    async def take(
        self, key: str, *, rate: float, burst: int, cost: int = 1, now: float | None = None
    ) -> Decision:
        """Take ``cost`` tokens from the bucket ``key`` if it holds that many."""
        ...

    async def count(
        self, key: str, *, limit: int, window_end: float, cost: int = 1, now: float | None = None
    ) -> QuotaDecision:
        """Count ``cost`` requests in the window ending at ``window_end`` if they fit in ``limit``.

        Pass the same ``now`` that :func:`mlgate.access.limiter.quota_window` was given.
        """
        ...

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
        """:meth:`take` on ``bucket_key``, then — only if it allowed — :meth:`count` on ``quota_key``,
        in one round trip (a request's whole metering); the answers are those of the two calls."""
        ...

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
        """Give back ``cost`` taken from ``bucket_key`` and counted on ``quota_key`` (either may
        be None) by a request that was not served: see the module's *Refund*."""
        ...

    async def reset(self, key: str) -> None:
        """Forget the bucket and the counter stored under ``key``."""
        ...

    async def close(self) -> None:
        """Release connections; the storage is not used afterwards."""
        ...


class InProcessStorage:
    """Base of the storages whose operations never wait on I/O (one process's memory, this
    machine's limiter file): each answers synchronously in ``*_sync`` methods, which the gate
    calls directly (no coroutine per request), and the :class:`LimiterStorage` coroutines run
    them."""

    __slots__ = ()

    def take_sync(
        self, key: str, *, rate: float, burst: int, cost: int = 1, now: float | None = None
    ) -> Decision:
        raise NotImplementedError

    def count_sync(
        self, key: str, *, limit: int, window_end: float, cost: int = 1, now: float | None = None
    ) -> QuotaDecision:
        raise NotImplementedError

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
        raise NotImplementedError

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
        raise NotImplementedError

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
        self.refund_sync(bucket_key, quota_key, rate=rate, burst=burst, window_end=window_end, cost=cost)

    async def take(
        self, key: str, *, rate: float, burst: int, cost: int = 1, now: float | None = None
    ) -> Decision:
        return self.take_sync(key, rate=rate, burst=burst, cost=cost, now=now)

    async def count(
        self, key: str, *, limit: int, window_end: float, cost: int = 1, now: float | None = None
    ) -> QuotaDecision:
        return self.count_sync(key, limit=limit, window_end=window_end, cost=cost, now=now)

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
        return self.take_then_count_sync(
            bucket_key,
            quota_key,
            rate=rate,
            burst=burst,
            limit=limit,
            window_end=window_end,
            cost=cost,
            now=now,
        )


def check_bucket_args(rate: float, burst: int, cost: int) -> None:
    """Refuse arguments no bucket can honour.

    A bad rate, burst or cost below 1 is a programming or plan error (:class:`ValueError`).
    A cost above the burst comes from the request (a batch of more inputs than the burst)
    and could never pass however long the client waits: :class:`InvalidInput` (400).
    """
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number of tokens per second, got {rate!r}")
    if burst < 1:
        raise ValueError(f"burst must be at least 1, got {burst!r}")
    if cost < 1:
        raise ValueError(f"cost must be at least 1, got {cost!r}")
    if cost > burst:
        raise InvalidInput(
            f"this request counts as {cost} calls, more than the plan's burst of {burst}: split it",
            details={"cost": cost, "burst": burst},
        )


def check_quota_args(limit: int, window_end: float, cost: int, now: float) -> None:
    """Refuse a negative limit, a cost below 1 or a window that has already ended."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit!r}")
    if cost < 1:
        raise ValueError(f"cost must be >= 1, got {cost!r}")
    if not window_end > now:
        raise ValueError(f"window_end {window_end!r} is not after now {now!r}: pass quota_window's now")


def take_tokens(
    tokens: float, stamp: float, *, now: float, rate: float, burst: int, cost: int
) -> tuple[bool, float, float, float]:
    """Refill a bucket from ``stamp`` to ``now`` and try to take ``cost``.

    Returns ``(allowed, tokens, stamp, retry_after)``. A refused take need not be
    stored: refilling later from the old state gives the same tokens. ``retry_after``
    is counted from the caller's ``now``, so a caller whose clock lags the stored stamp
    also waits out the lag. The Redis script mirrors this function line by line.
    """
    if now > stamp:
        tokens = min(float(burst), tokens + (now - stamp) * rate)
        stamp = now
    if tokens + TOKEN_EPSILON >= cost:
        return True, max(0.0, tokens - cost), stamp, 0.0
    return False, tokens, stamp, (cost - tokens) / rate + (stamp - now)


def whole_tokens(tokens: float) -> int:
    """The whole tokens in a bucket (the ``X-RateLimit-Remaining`` header)."""
    return math.floor(tokens + TOKEN_EPSILON)
