"""Per-process measurements of an alias's canary split, for its rollout guard.

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

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlgate.policies import AliasPolicy

__all__ = ["JUDGE_EVERY", "LATENCY_WINDOW", "Breach", "GuardWindow", "VersionCounts"]

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
