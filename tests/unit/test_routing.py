"""The rollout guard's per-process judgement (mlgate.routing)."""

from __future__ import annotations

from mlgate.policies import AliasPolicy, CanaryGuard
from mlgate.routing import JUDGE_EVERY, GuardWindow


def policy(**guard: float) -> AliasPolicy:
    return AliasPolicy(
        "m", "production", 1, split=((2, 10), (1, 90)), guard=CanaryGuard(**guard), split_since=1.0
    )


def test_errors_over_the_margin_trip_once_after_the_minimum() -> None:
    window = GuardWindow(policy(min_requests=20, max_error_rate_delta=0.05))
    for _ in range(20):
        assert window.observe(1, False, 0.01) is None
    breaches = [window.observe(2, i % 5 == 0, 0.01) for i in range(60)]
    tripped = [b for b in breaches if b is not None]
    assert len(tripped) == 1  # reported once
    assert breaches.index(tripped[0]) + 1 == 20  # judged at the minimum, then every JUDGE_EVERY
    assert tripped[0].version == 2 and "error rate 20.0%" in tripped[0].reason
    assert tripped[0].detail["canary_requests"] == 20


def test_the_same_error_rate_as_the_stable_is_not_a_breach() -> None:
    window = GuardWindow(policy(min_requests=20))
    for i in range(200):
        window.observe(1, i % 10 == 0, 0.01)
        assert window.observe(2, i % 10 == 0, 0.01) is None


def test_latency_needs_both_the_ratio_and_the_floor() -> None:
    slow = GuardWindow(policy(min_requests=20, max_p95_ratio=0.5, min_p95_delta_s=0.05))
    for _ in range(20):
        slow.observe(1, False, 0.010)
    results = [slow.observe(2, False, 0.040) for _ in range(40)]  # 4x slower but only +30 ms
    assert results == [None] * 40
    slower = GuardWindow(policy(min_requests=20))
    for _ in range(20):
        slower.observe(1, False, 0.010)
    tripped = [b for b in (slower.observe(2, False, 0.200) for _ in range(20)) if b]
    assert len(tripped) == 1 and "p95" in tripped[0].reason


def test_a_disabled_guard_and_the_stable_itself_never_trip() -> None:
    off = GuardWindow(policy(enabled=False, min_requests=1))
    assert all(off.observe(2, True, 1.0) is None for _ in range(10 * JUDGE_EVERY))
    window = GuardWindow(policy(min_requests=1))
    assert all(window.observe(1, True, 1.0) is None for _ in range(10 * JUDGE_EVERY))
