"""The promotion gate: is the candidate really better than the current version?

Both versions are scored on the *same* held-out rows, so the comparison is paired:

- **regression**: the per-row loss difference ``d = loss(current) - loss(candidate)``
  (absolute error for MAE, squared error for RMSE/MSE; positive = the candidate is better) and a
  seeded paired bootstrap confidence interval of its mean (percentile, 2,000 resamples,
  vectorized; rows serially dependent in runs — a time series — are resampled in circular
  blocks). Promote only when the interval's *lower* bound exceeds ``min_improvement``
  (default 0): a point estimate that looks better is not enough.
- **classification**: McNemar's test on the discordant pairs (``b``: only the current is right,
  ``c``: only the candidate is), exact binomial (``scipy.stats.binomtest``) for fewer than 25
  discordant pairs, continuity-corrected chi-squared above; one-sided (the candidate better),
  and the accuracy gain ``(c - b) / n`` must exceed ``min_improvement``.

Guardrails, checked only when the quality test passes: p95 latency (the median of several
repeats' p95, candidate ≤ current * (1 + margin), default margin 50 % — single-machine timing
is noisy) and artifact size (≤ current * 2). "Kept production" is a normal outcome.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "GateConfig",
    "bootstrap_ci",
    "data_hash",
    "latency_guardrail",
    "mcnemar",
    "paired_losses",
    "quality_gate",
    "size_guardrail",
]

#: Below this many discordant pairs McNemar's test is the exact binomial one.
EXACT_BELOW = 25


@dataclass(frozen=True)
class GateConfig:
    min_improvement: float = 0.0
    confidence: float = 0.95
    resamples: int = 2_000
    seed: int = 0
    #: McNemar's significance level
    alpha: float = 0.05
    latency_margin: float = 0.5
    size_factor: float = 2.0


def data_hash(*arrays: np.ndarray) -> str:
    """sha256 of the rows' bytes (C order, with each array's dtype and shape)."""
    import hashlib

    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def loss_for(metric: str) -> str:
    """The per-row loss a metric averages: ``absolute`` for MAE, ``squared`` for (R)MSE."""
    return "squared" if metric.lower() in ("rmse", "mse") else "absolute"


def paired_losses(
    y: np.ndarray, current: np.ndarray, candidate: np.ndarray, loss: str = "absolute"
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    e_cur = np.asarray(current, dtype=np.float64) - y
    e_can = np.asarray(candidate, dtype=np.float64) - y
    if loss == "squared":
        return e_cur**2, e_can**2
    return np.abs(e_cur), np.abs(e_can)


def _resample_means(d: np.ndarray, resamples: int, seed: int, block: int) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of ``d`` (circular blocks of ``block`` rows)."""
    n = d.size
    rng = np.random.default_rng(seed)
    block = max(1, min(block, n))
    k = -(-n // block)  # blocks per resample
    out = np.empty(resamples, dtype=np.float64)
    # Chunks bound the index matrix (~32 MB) whatever n is.
    step = max(1, (4 << 20) // max(n, 1))
    offsets = np.arange(block)
    for lo in range(0, resamples, step):
        hi = min(resamples, lo + step)
        starts = rng.integers(0, n, size=(hi - lo, k))
        idx = ((starts[:, :, None] + offsets) % n).reshape(hi - lo, k * block)[:, :n]
        out[lo:hi] = d[idx].mean(axis=1)
    return out


def bootstrap_ci(
    d: np.ndarray, *, resamples: int = 2_000, confidence: float = 0.95, seed: int = 0, block: int = 1
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(d)`` (seeded: same inputs → same interval)."""
    d = np.asarray(d, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no rows to compare")
    means = _resample_means(d, resamples, seed, block)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def mcnemar(current_right: np.ndarray, candidate_right: np.ndarray) -> dict[str, Any]:
    """McNemar's test, one-sided (the candidate better): discordant counts and p-value."""
    cur = np.asarray(current_right, dtype=bool)
    can = np.asarray(candidate_right, dtype=bool)
    b = int(np.sum(cur & ~can))  # only the current is right
    c = int(np.sum(~cur & can))  # only the candidate is right
    m = b + c
    if m == 0:
        return {"b": 0, "c": 0, "method": "none", "p_value": 1.0}
    if m < EXACT_BELOW:
        from scipy.stats import binomtest

        p = float(binomtest(c, m, 0.5, alternative="greater").pvalue)
        return {"b": b, "c": c, "method": "exact binomial", "p_value": p}
    from scipy.stats import chi2

    stat = (abs(b - c) - 1.0) ** 2 / m
    two_sided = float(chi2.sf(stat, 1))
    p = two_sided / 2.0 if c > b else 1.0 - two_sided / 2.0
    return {"b": b, "c": c, "method": "chi-squared, continuity-corrected", "statistic": stat, "p_value": p}


def _r(x: float) -> float:
    return float(f"{x:.6g}") if math.isfinite(x) else x


def quality_gate(
    task: str,
    metric: str,
    y: np.ndarray,
    current: np.ndarray,
    candidate: np.ndarray,
    config: GateConfig,
    *,
    block: int = 1,
) -> dict[str, Any]:
    """The paired test: its figures, ``passed`` and the ``reason`` in words."""
    n = int(np.asarray(y).shape[0])
    if n == 0:
        raise ValueError("no held-out rows")
    if task == "classification":
        y_arr = np.asarray(y)
        cur_right = np.asarray(current) == y_arr
        can_right = np.asarray(candidate) == y_arr
        test = mcnemar(cur_right, can_right)
        gain = (test["c"] - test["b"]) / n
        out = {
            "test": "mcnemar",
            "n": n,
            "current": {"accuracy": _r(float(cur_right.mean()))},
            "candidate": {"accuracy": _r(float(can_right.mean()))},
            **test,
            "accuracy_gain": _r(gain),
            "alpha": config.alpha,
            "min_improvement": config.min_improvement,
        }
        if test["p_value"] >= config.alpha:
            out["passed"], out["reason"] = (
                False,
                (
                    f"McNemar p = {test['p_value']:.3g} ≥ {config.alpha}: no significant improvement "
                    f"(only current right {test['b']}, only candidate right {test['c']})"
                ),
            )
        elif gain <= config.min_improvement:
            out["passed"], out["reason"] = (
                False,
                (f"accuracy gain {gain:.4g} does not exceed the minimum {config.min_improvement}"),
            )
        else:
            out["passed"], out["reason"] = (
                True,
                (f"McNemar p = {test['p_value']:.3g} < {config.alpha}, accuracy +{gain:.4g}"),
            )
        return out
    loss = loss_for(metric)
    l_cur, l_can = paired_losses(y, current, candidate, loss)
    d = l_cur - l_can
    lo, hi = bootstrap_ci(
        d, resamples=config.resamples, confidence=config.confidence, seed=config.seed, block=block
    )
    mean = float(d.mean())
    out = {
        "test": "paired bootstrap",
        "n": n,
        "loss": loss,
        "difference": "loss(current) - loss(candidate): positive = candidate better",
        "current": _metric_pair(metric, l_cur),
        "candidate": _metric_pair(metric, l_can),
        "mean_difference": _r(mean),
        "interval": [_r(lo), _r(hi)],
        "confidence": config.confidence,
        "resamples": config.resamples,
        "block": max(1, block),
        "min_improvement": config.min_improvement,
    }
    if lo > config.min_improvement:
        out["passed"], out["reason"] = (
            True,
            (
                f"{config.confidence:.0%} interval of the {loss} loss improvement [{lo:.4g}, {hi:.4g}] "
                f"clears {config.min_improvement:g}"
            ),
        )
    else:
        verdict = "worse" if hi < 0 else "not better" if mean <= 0 else "not clearly better"
        out["passed"], out["reason"] = (
            False,
            (
                f"candidate {verdict}: {config.confidence:.0%} interval of the {loss} loss improvement "
                f"[{lo:.4g}, {hi:.4g}] does not clear {config.min_improvement:g} "
                f"({metric} {out['current'][metric]} → {out['candidate'][metric]})"
            ),
        )
    return out


def _metric_pair(metric: str, losses: np.ndarray) -> dict[str, float]:
    mean = float(losses.mean())
    name = metric.lower()
    value = math.sqrt(mean) if name == "rmse" else mean
    return {metric: _r(value)}


def p95(samples_s: Sequence[float]) -> float:
    return float(np.quantile(np.asarray(samples_s, dtype=np.float64), 0.95))


def latency_guardrail(
    current_runs: Sequence[Sequence[float]], candidate_runs: Sequence[Sequence[float]], margin: float
) -> dict[str, Any]:
    """Median over repeats of each repeat's p95 (seconds in, milliseconds out)."""
    cur = float(np.median([p95(r) for r in current_runs])) * 1e3
    can = float(np.median([p95(r) for r in candidate_runs])) * 1e3
    limit = cur * (1.0 + margin)
    passed = can <= limit
    sign = "≤" if passed else ">"
    return {
        "current_p95_ms": _r(cur),
        "candidate_p95_ms": _r(can),
        "limit_ms": _r(limit),
        "margin": margin,
        "repeats": len(current_runs),
        "passed": passed,
        "reason": (f"p95 {can:.3g} ms {sign} {limit:.3g} ms (current {cur:.3g} ms * {1 + margin:g})"),
    }


def size_guardrail(current_bytes: int | None, candidate_bytes: int, factor: float) -> dict[str, Any]:
    if current_bytes is None:
        return {
            "candidate_bytes": candidate_bytes,
            "current_bytes": None,
            "passed": True,
            "reason": "the current version's artifact size is not known (registered without mlgate train)",
        }
    limit = current_bytes * factor
    passed = candidate_bytes <= limit
    return {
        "current_bytes": current_bytes,
        "candidate_bytes": candidate_bytes,
        "limit_bytes": limit,
        "passed": passed,
        "reason": f"{candidate_bytes} bytes {'≤' if passed else '>'} {limit:g} (current * {factor:g})",
    }


def decide(quality: Mapping[str, Any] | None, guardrails: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
    """``("promote" | "keep", reason)`` from the quality test and the guardrails."""
    if quality is None:
        return "keep", "nothing to compare with"
    if not quality["passed"]:
        return "keep", str(quality["reason"])
    failed = [f"{name}: {g['reason']}" for name, g in guardrails.items() if not g["passed"]]
    if failed:
        return "keep", "guardrail failed — " + "; ".join(failed)
    return "promote", str(quality["reason"])
