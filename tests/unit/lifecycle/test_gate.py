"""The promotion gate (mlgate.lifecycle.gate): paired bootstrap, McNemar, guardrails, decisions."""

from __future__ import annotations

import numpy as np
import pytest

from mlgate.lifecycle.gate import (
    GateConfig,
    bootstrap_ci,
    data_hash,
    decide,
    latency_guardrail,
    mcnemar,
    quality_gate,
    size_guardrail,
)
from mlgate.lifecycle.recipes import parse_params, resolve_recipe


def _regression(shift: float, n: int = 2_000, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets, the current model's predictions (noise sd 1) and a candidate's (noise sd 1 + shift)."""
    rng = np.random.default_rng(seed)
    y = rng.normal(20.0, 5.0, n)
    current = y + rng.normal(0.0, 1.0, n)
    candidate = y + rng.normal(0.0, 1.0 + shift, n)
    return y, current, candidate


def test_clear_improvement_promotes() -> None:
    y, current, candidate = _regression(shift=-0.5)
    q = quality_gate("regression", "mae", y, current, candidate, GateConfig(seed=3))
    assert q["passed"], q["reason"]
    lo, hi = q["interval"]
    assert 0 < lo < q["mean_difference"] < hi
    assert q["n"] == 2_000
    assert q["candidate"]["mae"] < q["current"]["mae"]
    assert decide(q, {})[0] == "promote"


def test_identical_models_keep() -> None:
    y, current, _ = _regression(shift=0.0)
    q = quality_gate("regression", "mae", y, current, current.copy(), GateConfig())
    assert not q["passed"]
    assert q["interval"] == [0.0, 0.0]
    assert "not better" in q["reason"]
    assert decide(q, {}) == ("keep", q["reason"])


def test_worse_candidate_keeps_with_reason() -> None:
    y, current, candidate = _regression(shift=0.5)
    q = quality_gate("regression", "rmse", y, current, candidate, GateConfig())
    assert not q["passed"]
    assert q["loss"] == "squared"
    assert q["interval"][1] < 0
    assert q["reason"].startswith("candidate worse")
    assert "rmse" in q["reason"]


def test_minimum_improvement_is_required() -> None:
    y, current, candidate = _regression(shift=-0.2)
    assert quality_gate("regression", "mae", y, current, candidate, GateConfig())["passed"]
    q = quality_gate("regression", "mae", y, current, candidate, GateConfig(min_improvement=1.0))
    assert not q["passed"]
    assert "does not clear 1" in q["reason"]


def test_bootstrap_is_deterministic_with_a_seed() -> None:
    d = np.random.default_rng(0).normal(0.1, 1.0, 3_000)
    assert bootstrap_ci(d, seed=5) == bootstrap_ci(d, seed=5)
    assert bootstrap_ci(d, seed=5) != bootstrap_ci(d, seed=6)
    y, current, candidate = _regression(shift=-0.1)
    a = quality_gate("regression", "mae", y, current, candidate, GateConfig(seed=9), block=24)
    b = quality_gate("regression", "mae", y, current, candidate, GateConfig(seed=9), block=24)
    assert a == b


def test_bootstrap_interval_covers_the_mean_and_blocks_widen_it_for_dependent_rows() -> None:
    rng = np.random.default_rng(2)
    # A random walk's increments summed in runs: strongly autocorrelated differences.
    d = np.convolve(rng.normal(0.0, 1.0, 5_000), np.ones(48) / 48, mode="same")
    lo1, hi1 = bootstrap_ci(d, seed=1)
    lo24, hi24 = bootstrap_ci(d, seed=1, block=48)
    assert lo1 < d.mean() < hi1
    assert (hi24 - lo24) > 2 * (hi1 - lo1)


def test_mcnemar_exact_for_few_discordant_pairs() -> None:
    # 10 discordant pairs, all in the candidate's favour: p = 0.5**10.
    cur = np.array([True] * 90 + [False] * 10)
    can = np.ones(100, dtype=bool)
    t = mcnemar(cur, can)
    assert (t["b"], t["c"], t["method"]) == (0, 10, "exact binomial")
    assert t["p_value"] == pytest.approx(0.5**10)
    assert mcnemar(can, cur)["p_value"] == pytest.approx(1.0)


def test_mcnemar_chi_squared_for_many() -> None:
    # b = 20, c = 40: (|20-40| - 1)^2 / 60 = 6.0167, two-sided p = 0.01418, one-sided half of it.
    cur = np.array([True] * 20 + [False] * 40 + [True] * 100)
    can = np.array([False] * 20 + [True] * 40 + [True] * 100)
    t = mcnemar(cur, can)
    assert t["method"].startswith("chi-squared")
    assert t["statistic"] == pytest.approx(361 / 60)
    assert t["p_value"] == pytest.approx(0.01418 / 2, rel=1e-2)
    assert mcnemar(np.ones(5, bool), np.ones(5, bool))["p_value"] == 1.0


def test_classification_gate() -> None:
    y = np.array(["a", "b"] * 100)
    current = y.copy()
    current[:30] = "x"  # 30 wrong
    better = y.copy()
    better[:5] = "x"  # 5 wrong, a subset of the current's errors
    q = quality_gate("classification", "accuracy", y, current, better, GateConfig())
    assert q["passed"] and q["test"] == "mcnemar"
    assert (q["b"], q["c"]) == (0, 25)
    assert q["accuracy_gain"] == pytest.approx(0.125)
    kept = quality_gate("classification", "accuracy", y, better, current, GateConfig())
    assert not kept["passed"] and "no significant improvement" in kept["reason"]
    small = quality_gate("classification", "accuracy", y, current, better, GateConfig(min_improvement=0.2))
    assert not small["passed"] and "accuracy gain" in small["reason"]


def test_latency_guardrail_uses_medians_of_p95() -> None:
    fast = [[0.001] * 40 for _ in range(5)]
    noisy = [[0.001] * 40 for _ in range(4)] + [[0.010] * 40]  # one bad repeat: the median ignores it
    g = latency_guardrail(fast, noisy, margin=0.5)
    assert g["passed"] and g["candidate_p95_ms"] == pytest.approx(1.0)
    slow = [[0.002] * 40 for _ in range(5)]
    bad = latency_guardrail(fast, slow, margin=0.5)
    assert not bad["passed"] and bad["limit_ms"] == pytest.approx(1.5)
    q = {"passed": True, "reason": "better"}
    decision, reason = decide(q, {"latency": bad})
    assert decision == "keep" and reason.startswith("guardrail failed — latency")


def test_size_guardrail() -> None:
    assert size_guardrail(1_000, 2_000, 2.0)["passed"]
    assert not size_guardrail(1_000, 2_001, 2.0)["passed"]
    unknown = size_guardrail(None, 10**9, 2.0)
    assert unknown["passed"] and "not known" in unknown["reason"]


def test_data_hash_depends_on_bytes_dtype_and_shape() -> None:
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert data_hash(x) == data_hash(x.copy())
    assert data_hash(x) != data_hash(x.reshape(4, 3))
    assert data_hash(x) != data_hash(x.astype(np.float32))


def test_params_and_recipe_names() -> None:
    assert parse_params(["lags=6", "alpha=1.5", "name=x"]) == {"lags": 6, "alpha": 1.5, "name": "x"}
    assert resolve_recipe("temperatura").__name__ == "temperatura"
    assert resolve_recipe("mlgate.lifecycle.recipes:temperatura") is resolve_recipe("temperatura")
    from mlgate.errors import InvalidInput

    with pytest.raises(InvalidInput):
        parse_params(["novalue"])
    with pytest.raises(InvalidInput):
        resolve_recipe("nope")
