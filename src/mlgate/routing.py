"""Per process: routed aliases' callers dealt their versions, and each split measured for its
rollout guard.

:class:`Router` (one per dataplane) builds a routed alias's :class:`Route`, deals each caller its
version (:meth:`Router.version_for`) and feeds the split's :class:`GuardWindow`, handing a
canary's first breach to ``on_breach`` (:mod:`mlgate.lifecycle.canary` rolls it back).

:class:`GuardWindow` counts, per version of one split (``(model, alias, split_since)``), the
single predictions answered and failed (an answer ≥ 500: the model failed, timed out or could
not load — a client's bad input is not the version's fault) and keeps the last
:data:`LATENCY_WINDOW` latencies. Once a canary and the stable have each answered
``guard.min_requests`` here, every :data:`JUDGE_EVERY` canary answers it is judged: rolled back
when ``error_rate(canary) - error_rate(stable) > max_error_rate_delta``, or when its p95 exceeds
the stable's by more than ``max_p95_ratio`` of it *and* by ``min_p95_delta_s``. The first breach
of a canary is reported once (the dataplane hands it to :mod:`mlgate.lifecycle.canary`).

Each process judges what it served itself: with N workers, each needs its own minimum of
requests, and the first to see a breach rolls the canary back for all (a database write).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlgate.policies import AliasPolicy, Policies, bucket_version, identity_hash
from mlgate.telemetry.metrics import Metrics

__all__ = ["JUDGE_EVERY", "LATENCY_WINDOW", "Breach", "GuardWindow", "Route", "Router", "VersionCounts"]

log = logging.getLogger("mlgate.dataplane")

#: Latencies kept per version for the p95.
LATENCY_WINDOW = 1000
#: A canary is judged every this many of its answers (after the minimum).
JUDGE_EVERY = 10


@dataclass(slots=True)
class VersionCounts:
    requests: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def p95(self) -> float:
        return float(np.percentile(np.fromiter(self.latencies, float), 95)) if self.latencies else 0.0

    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Breach:
    """A canary judged worse than the stable: which, why, and the figures."""

    policy: AliasPolicy
    version: int
    reason: str
    detail: dict[str, Any]


class GuardWindow:
    """One split's counts in this process (see the module)."""

    def __init__(self, policy: AliasPolicy) -> None:
        self.policy = policy
        self.counts: dict[int, VersionCounts] = {}
        self.tripped: set[int] = set()

    def observe(self, version: int, failed: bool, seconds: float) -> Breach | None:
        """Count one answer of ``version``; a :class:`Breach` the first time a canary fails the guard."""
        counts = self.counts.get(version)
        if counts is None:
            counts = self.counts[version] = VersionCounts()
        counts.requests += 1
        if failed:
            counts.errors += 1
        else:
            counts.latencies.append(seconds)
        policy = self.policy
        guard = policy.guard
        if (
            version == policy.version
            or not guard.enabled
            or version in self.tripped
            or counts.requests < guard.min_requests
            or counts.requests % JUDGE_EVERY
        ):
            return None
        breach = self.judge(version)
        if breach is not None:
            self.tripped.add(version)
        return breach

    def judge(self, version: int) -> Breach | None:
        policy = self.policy
        guard = policy.guard
        canary = self.counts.get(version)
        stable = self.counts.get(policy.version)
        if canary is None or stable is None or stable.requests < guard.min_requests:
            return None
        figures: dict[str, Any] = {
            "stable_version": policy.version,
            "canary_requests": canary.requests,
            "stable_requests": stable.requests,
            "canary_error_rate": round(canary.error_rate(), 6),
            "stable_error_rate": round(stable.error_rate(), 6),
            "canary_p95_s": round(canary.p95(), 6),
            "stable_p95_s": round(stable.p95(), 6),
            "guard": {
                "min_requests": guard.min_requests,
                "max_error_rate_delta": guard.max_error_rate_delta,
                "max_p95_ratio": guard.max_p95_ratio,
                "min_p95_delta_s": guard.min_p95_delta_s,
            },
        }
        delta = canary.error_rate() - stable.error_rate()
        if delta > guard.max_error_rate_delta:
            reason = (
                f"error rate {canary.error_rate():.1%} vs the stable's {stable.error_rate():.1%} "
                f"(+{delta:.1%} > {guard.max_error_rate_delta:.1%})"
            )
            return Breach(policy, version, reason, figures)
        if canary.latencies and stable.latencies:
            c95, s95 = canary.p95(), stable.p95()
            if c95 - s95 > max(guard.max_p95_ratio * s95, guard.min_p95_delta_s):
                reason = (
                    f"p95 {c95 * 1000:.1f} ms vs the stable's {s95 * 1000:.1f} ms "
                    f"(more than {guard.max_p95_ratio:.0%} and {guard.min_p95_delta_s * 1000:.0f} ms slower)"
                )
                return Breach(policy, version, reason, figures)
        return None


@dataclass(slots=True)
class Route:
    """A routed alias's resolution: its policy and, for a split, the guard's window."""

    policy: AliasPolicy
    window: GuardWindow | None


#: Callers dealt by hash instead of a stored assignment: client addresses, workflow executions.
_HASHED = ("ip:", "execution:")
#: Callers' assigned versions kept per split in a process before the cache starts over.
_ASSIGNED_CACHE = 100_000

# Anonymous callers' dealing: seeded once per process (reseeded in a forked worker).
_draws = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _draws.seed(os.urandom(16)))


class Router:
    """The routed aliases of one process: guard windows and callers' versions per split."""

    def __init__(self, policies: Policies, metrics: Metrics) -> None:
        self.policies = policies
        self.metrics = metrics
        #: called with a canary's first guard breach in this process (the lifecycle rolls it back)
        self.on_breach: Callable[[Breach], None] | None = None
        # (model, alias, split_since) -> the split's guard window / callers' assigned versions
        self.windows: dict[tuple[str, str, float | None], GuardWindow] = {}
        self._assigned: dict[tuple[str, str, float | None], dict[str, int]] = {}
        self._assigning: dict[tuple[str, str, float | None], asyncio.Lock] = {}

    def route_for(self, policy: AliasPolicy) -> Route:
        """The route of a routed alias's fresh resolution (its split's window kept across them)."""
        window = None
        if policy.splitting:
            wkey = (policy.model, policy.alias, policy.split_since)
            window = self.windows.get(wkey)
            if window is None:
                for old in [k for k in self.windows if k[:2] == wkey[:2]]:  # an earlier split's
                    self.windows.pop(old, None)
                    self._assigned.pop(old, None)
                    self._assigning.pop(old, None)
                window = self.windows[wkey] = GuardWindow(policy)
                for version, _ in policy.split:  # the rollback counter at 0 from the start
                    if version != policy.version:
                        self.metrics.canary_rollbacks.labels(policy.model, policy.alias, str(version))
            else:
                window.policy = policy  # the same split, weights maybe changed by a rollback
        return Route(policy, window)

    def observe(self, window: GuardWindow, version: int, failed: bool, seconds: float) -> None:
        """Count one answer of the split; a canary's first breach goes to ``on_breach``."""
        breach = window.observe(version, failed, seconds)
        if breach is not None:
            log.warning(
                "canary %s v%s (alias %s) fails its guard: %s",
                breach.policy.model,
                breach.version,
                breach.policy.alias,
                breach.reason,
            )
            if self.on_breach is not None:
                try:
                    self.on_breach(breach)
                except Exception:
                    log.exception("the canary rollback of %s v%s failed", breach.policy.model, breach.version)

    async def version_for(self, route: Route, who: str | None) -> int:
        """The version ``who`` sees under the route's split: a key's or user's sticky assignment
        (stored once, the first time it is seen), a client address's or execution's by hash, an
        anonymous caller's at random; the stable if that version's weight is now 0."""
        policy = route.policy
        if not policy.splitting:
            return policy.version
        if who is None:
            version = bucket_version(policy, identity_hash(f"anon:{_draws.random()}"))
        elif who.startswith(_HASHED):
            # Addresses and executions are not stored (a client choosing new addresses must not
            # turn each request into a database write): dealt by hash, sticky as long as they are.
            version = bucket_version(policy, identity_hash(who))
        else:
            skey = (policy.model, policy.alias, policy.split_since)
            assigned = self._assigned.get(skey)
            if assigned is None:
                assigned = self._assigned[skey] = {}
            found = assigned.get(who)
            if found is None:
                lock = self._assigning.setdefault(skey, asyncio.Lock())
                async with lock:  # one assignment at a time per split: the counts stay balanced
                    found = assigned.get(who)
                    if found is None:
                        found = await asyncio.to_thread(self.policies.assign, policy, who)
                        if len(assigned) >= _ASSIGNED_CACHE:
                            assigned.clear()
                        assigned[who] = found
            version = found
        return version if policy.weight(version) > 0 else policy.version
