"""When to try a call again, and how long to wait first — shared by both clients.

A call is retried only when retrying cannot run it twice or make things worse:

* **429 throttled** and **503 overloaded / limiter unavailable / not ready**: the server did not
  run the request, so any call (a POST predict too) is retried after the server's hint —
  ``Retry-After-Ms`` first (precise), else ``Retry-After`` — plus up to 10 % of it as jitter, so
  clients refused together do not come back together;
* **never 429 quota exceeded** ("Limit Exceeded"): waiting seconds will not bring a quota back;
  :class:`~mlgate.client.QuotaExceeded` is raised at once with the reset time;
* **a connection that could not be made** (connect error, connect or pool timeout): nothing
  was sent, so any call is retried, with exponential backoff and full jitter;
* **an answer lost on the way** (read timeout, dropped connection) and **502/503/504** without
  a hint: only idempotent calls (GET, PUT, DELETE), unless ``retry_unsafe`` is set — a POST
  predict or a workflow start may have run.

Every retry is also paid from the client's :class:`RetryBudget`, so a client never multiplies
the load of a server in trouble: retries stay under ``ratio`` of its requests plus
``per_second`` (Finagle's retry budget; gRPC's retry throttling is the same idea).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from mlgate.client._errors import (
    LimiterUnavailable,
    MlgateError,
    NotReady,
    Overloaded,
    PredictionTimeout,
    QuotaExceeded,
    ServiceUnavailable,
    StoreError,
    Throttled,
)

__all__ = ["Attempts", "RetryBudget", "RetryPolicy"]

#: Connection failures where the request was certainly not sent: safe to retry any call.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: Failures after the request may have reached the server: only idempotent calls are retried.
_MAYBE_RAN = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
#: Answers that say "not run, come back later".
_NOT_RUN = (Throttled, Overloaded, LimiterUnavailable, NotReady)


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries.

    ``max_attempts`` counts the first try (1 = never retry). Without a hint the n-th retry waits
    a uniformly random time in ``[0, min(cap, base * 2**(n-1))]`` (full jitter); with one it waits
    the hint plus up to ``hint_jitter`` of it. A hint longer than ``max_hint`` is not waited
    for (the error is raised), nor a wait that would end more than ``max_elapsed`` seconds after
    the call started. ``retry_unsafe`` also retries non-idempotent calls whose answer was lost
    (a read timeout on a POST: the model may have run). ``random`` is the jitter's source
    (``random.random``; inject one for deterministic tests).
    """

    max_attempts: int = 8
    base: float = 0.1
    cap: float = 5.0
    hint_jitter: float = 0.1
    max_hint: float = 60.0
    max_elapsed: float | None = 120.0
    retry_unsafe: bool = False
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base <= 0 or self.cap <= 0 or self.hint_jitter < 0 or self.max_hint < 0:
            raise ValueError("base and cap must be positive, hint_jitter and max_hint not negative")

    def backoff(self, retry: int) -> float:
        """The wait before the ``retry``-th retry (1-based) when the server gave no hint."""
        return self.random() * min(self.cap, self.base * 2.0 ** min(retry - 1, 62))

    def after_hint(self, hint: float) -> float:
        """The wait for a server's hint: never less than it, at most ``hint_jitter`` more."""
        return hint * (1.0 + self.hint_jitter * self.random())


#: A policy that never retries.
NO_RETRY = RetryPolicy(max_attempts=1)


class RetryBudget:
    """A token bucket of retries, one per client (shared by its threads or tasks).

    It starts with ``capacity`` retries, earns ``ratio`` of a retry per request sent and
    ``per_second`` retries per second, up to ``capacity``; each retry spends one. So retries
    stay under ``ratio`` x requests + ``per_second`` x seconds (+ ``capacity`` at once): a client
    sequentially paced by 429 hints (one retry per refill) never runs out, a thousand threads
    hammering a dead server do after ``capacity`` retries.
    """

    def __init__(
        self,
        ratio: float = 0.2,
        per_second: float = 10.0,
        capacity: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ratio < 0 or per_second < 0 or capacity < 1:
            raise ValueError("ratio and per_second must not be negative, capacity at least 1")
        self.ratio = ratio
        self.per_second = per_second
        self.capacity = float(capacity)
        self._clock = clock
        self._balance = float(capacity)
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        if now > self._stamp:
            self._balance = min(self.capacity, self._balance + (now - self._stamp) * self.per_second)
        self._stamp = now

    def deposit(self) -> None:
        """A request was sent (first attempts only)."""
        with self._lock:
            self._refill()
            self._balance = min(self.capacity, self._balance + self.ratio)

    def withdraw(self) -> bool:
        """Pay for one retry; False when the budget is spent (the error is raised instead)."""
        with self._lock:
            self._refill()
            if self._balance < 1.0:
                return False
            self._balance -= 1.0
            return True

    @property
    def balance(self) -> float:
        with self._lock:
            self._refill()
            return self._balance


class Attempts:
    """One call's retry state: ask it, after each failure, how long to wait (None: give up)."""

    def __init__(
        self,
        policy: RetryPolicy,
        budget: RetryBudget | None,
        *,
        idempotent: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.budget = budget
        self.idempotent = idempotent
        self._clock = clock
        self.started = clock()
        self.attempt = 1  # the attempt being made
        if budget is not None:
            budget.deposit()

    def after_error(self, error: MlgateError) -> float | None:
        """The wait before retrying a call answered with ``error``, or None to raise it."""
        if isinstance(error, QuotaExceeded):
            return None  # a quota does not come back in seconds: raise it at once
        hint: float | None = getattr(error, "retry_after", None)
        if isinstance(error, _NOT_RUN):
            return self._next(hint)
        unsafe_ok = self.idempotent or self.policy.retry_unsafe
        if unsafe_ok and isinstance(error, ServiceUnavailable | StoreError | PredictionTimeout):
            return self._next(hint)  # 502/503/504 on a call that may safely run twice
        return None

    def after_exception(self, exc: httpx.TransportError) -> float | None:
        """The wait before retrying a call that got no answer, or None to raise."""
        if isinstance(exc, _NOT_SENT):
            return self._next(None)
        if isinstance(exc, _MAYBE_RAN) and (self.idempotent or self.policy.retry_unsafe):
            return self._next(None)
        return None

    def _next(self, hint: float | None) -> float | None:
        policy = self.policy
        if self.attempt >= policy.max_attempts:
            return None
        if hint is not None and hint > policy.max_hint:
            return None
        delay = policy.after_hint(hint) if hint is not None else policy.backoff(self.attempt)
        if policy.max_elapsed is not None and self._clock() - self.started + delay > policy.max_elapsed:
            return None
        if self.budget is not None and not self.budget.withdraw():
            return None
        self.attempt += 1
        return delay
