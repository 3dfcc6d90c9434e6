"""Drift of captured features against a baseline: PSI, KS and chi² (docs/monitoring.md).

Per numeric feature: **PSI** over the baseline's decile bins (``sum((a - e) ln(a / e))``, each
fraction floored at :data:`EPSILON` so an empty bin is finite) with one ``np.searchsorted`` +
``np.bincount``, and the two-sample **KS** statistic and asymptotic p-value against the
baseline's reservoir (``scipy.stats.ks_2samp(..., method="asymp")``). Per categorical feature
(the classifier's class mix, a detector's top class): **chi²** of the counts over the
baseline's top values + "other" (``scipy.stats.chisquare``) and PSI over the same categories.

The band of a feature is its PSI's: ``ok`` below ``psi_warn``, ``moderate`` below ``psi_alert``,
``drift`` from it — provided the shift is also significant (KS or chi² p-value below
``p_value``; a feature without a reservoir is judged on PSI alone). PSI over 10 bins has a
small-sample bias of about ``9 (1/n + 1/m)`` (0.26 for 60 rows against 80), so a few dozen
rows can pass 0.25 by chance; the test keeps those ``moderate``. With thousands of rows the
tests flag shifts too small to matter, so they never raise a band on their own. A feature with fewer than
``min_rows`` values has band ``insufficient``. The verdict is the worst band, separately for
inputs and outputs. :func:`constraint_violations` writes SageMaker Model Monitor's
``constraint_violations.json`` from a report. SciPy is imported when an evaluation runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlgate.monitoring.baseline import psi_cuts
from mlgate.monitoring.features import FeatureFrame

__all__ = ["EPSILON", "REPORT_FORMAT", "Thresholds", "band", "compare", "constraint_violations", "psi"]

EPSILON = 1e-4
REPORT_FORMAT = "mlgate-drift-report/1"
_ORDER = {"insufficient": 0, "ok": 1, "moderate": 2, "drift": 3}


@dataclass(frozen=True, slots=True)
class Thresholds:
    psi_warn: float = 0.1
    psi_alert: float = 0.25
    p_value: float = 0.01
    min_rows: int = 50


def psi(actual: np.ndarray, expected: np.ndarray) -> float:
    """Population stability index of two fraction vectors (floored at :data:`EPSILON`)."""
    a = np.maximum(actual, EPSILON)
    e = np.maximum(expected, EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def band(value: float, t: Thresholds) -> str:
    if value >= t.psi_alert:
        return "drift"
    return "moderate" if value >= t.psi_warn else "ok"


def _r(value: float) -> float:
    return float(f"{value:.6g}") if np.isfinite(value) else 0.0


def _numeric(name: str, values: np.ndarray, stats: Mapping[str, Any], t: Thresholds) -> dict[str, Any]:
    from scipy import stats as sps

    present = values[np.isfinite(values)]
    out: dict[str, Any] = {"n": int(present.size), "missing": int(values.size - present.size)}
    if present.size < t.min_rows or not stats.get("count"):
        return {**out, "band": "insufficient"}
    cuts = psi_cuts(stats["quantile_edges"])
    counts = np.bincount(np.searchsorted(cuts, present, side="right"), minlength=cuts.size + 1)
    actual = counts / present.size
    expected = np.asarray(stats["expected"], dtype=np.float64)
    value = psi(actual, expected)
    out.update(
        psi=_r(value),
        band=band(value, t),
        mean=_r(float(present.mean())),
        baseline_mean=stats.get("mean"),
        std=_r(float(present.std())),
        baseline_std=stats.get("std"),
    )
    reservoir = stats.get("reservoir")
    if reservoir:
        result = sps.ks_2samp(present, np.asarray(reservoir, dtype=np.float64), method="asymp")
        out.update(ks=_r(float(result.statistic)), ks_p_value=_r(float(result.pvalue)))
        if out["band"] == "drift" and result.pvalue >= t.p_value:
            out["band"] = "moderate"  # a large PSI the samples cannot tell from noise
    return out


def _categorical(name: str, values: np.ndarray, stats: Mapping[str, Any], t: Thresholds) -> dict[str, Any]:
    from scipy import stats as sps

    present = [v for v in values.tolist() if v is not None]
    out: dict[str, Any] = {"n": len(present), "missing": int(values.size - len(present))}
    if len(present) < t.min_rows or not stats.get("count"):
        return {**out, "band": "insufficient"}
    top: Mapping[str, float] = stats.get("top", {})
    categories = list(top)
    index = {c: i for i, c in enumerate(categories)}
    observed = np.zeros(len(categories) + 1)
    for v in present:
        observed[index.get(v, len(categories))] += 1
    expected = np.array([*top.values(), stats.get("other", 0.0)], dtype=np.float64)
    actual = observed / observed.sum()
    value = psi(actual, expected)
    f_exp = np.maximum(expected, EPSILON)
    f_exp = f_exp / f_exp.sum() * observed.sum()
    chi = sps.chisquare(observed, f_exp)
    shares = {c: _r(float(actual[i])) for i, c in enumerate(categories) if actual[i] > 0}
    if actual[-1] > 0:
        shares["(other)"] = _r(float(actual[-1]))
    level = band(value, t)
    if level == "drift" and chi.pvalue >= t.p_value:
        level = "moderate"  # a large PSI the samples cannot tell from noise
    return {
        **out,
        "psi": _r(value),
        "band": level,
        "chi2": _r(float(chi.statistic)),
        "chi2_p_value": _r(float(chi.pvalue)),
        "shares": dict(sorted(shares.items(), key=lambda kv: -kv[1])[:10]),
    }


def _verdict(items: list[dict[str, Any]]) -> str:
    bands: list[str] = [str(f["band"]) for f in items]
    if not bands or all(b == "insufficient" for b in bands):
        return "insufficient_data"
    return max((b for b in bands if b != "insufficient"), key=lambda b: _ORDER[b])


def compare(
    baseline: Mapping[str, Any],
    frame: FeatureFrame,
    thresholds: Thresholds,
    *,
    model: str = "",
    version: int | None = None,
    since: str = "",
    until: str = "",
    evaluated_at: str = "",
) -> dict[str, Any]:
    """The drift report of ``frame`` against ``baseline`` (see the module docstring)."""
    features: Mapping[str, Any] = baseline["features"]
    report_features: list[dict[str, Any]] = []
    for kind, names in (("input", baseline["feature_names"]), ("output", baseline.get("output_names", []))):
        for name in names:
            stats = features[name]
            values = frame.columns.get(name)
            if values is None:
                values = np.empty(0)
            if stats.get("type") == "categorical":
                figures = _categorical(name, values, stats, thresholds)
            else:
                figures = _numeric(name, np.asarray(values, dtype=np.float64), stats, thresholds)
            report_features.append({"name": name, "kind": kind, "type": stats.get("type"), **figures})
    inputs = [f for f in report_features if f["kind"] == "input"]
    outputs = [f for f in report_features if f["kind"] == "output"]
    verdicts = [v for v in (_verdict(inputs), _verdict(outputs)) if v != "insufficient_data"]
    return {
        "format": REPORT_FORMAT,
        "model": model,
        "version": version,
        "window": {"since": since, "until": until},
        "evaluated_at": evaluated_at,
        "n_records": frame.n_records,
        "n_rows": frame.n_rows,
        "n_outputs": frame.n_outputs,
        "skipped": dict(frame.skipped),
        "thresholds": {
            "psi_warn": thresholds.psi_warn,
            "psi_alert": thresholds.psi_alert,
            "p_value": thresholds.p_value,
            "min_rows": thresholds.min_rows,
        },
        "verdict": max(verdicts, key=lambda b: _ORDER[b]) if verdicts else "insufficient_data",
        "input_verdict": _verdict(inputs),
        "output_verdict": _verdict(outputs),
        "drifted": [f["name"] for f in report_features if f["band"] == "drift"],
        "features": report_features,
    }


def constraint_violations(report: Mapping[str, Any]) -> dict[str, Any]:
    """SageMaker Model Monitor's ``constraint_violations.json`` for a report: a
    ``baseline_drift_check`` per drifted feature, a ``missing_column_check`` per feature with
    no value at all in a window that has rows."""
    t = report["thresholds"]
    violations: list[dict[str, Any]] = []
    for f in report["features"]:
        rows = report["n_rows"] if f["kind"] == "input" else report["n_outputs"]
        if f["band"] == "drift":
            detail = f"PSI {f['psi']} >= {t['psi_alert']}"
            if "ks" in f:
                detail += f"; KS {f['ks']} (p = {f['ks_p_value']:.3g})"
            if "chi2" in f:
                detail += f"; chi2 {f['chi2']} (p = {f['chi2_p_value']:.3g})"
            violations.append(
                {
                    "feature_name": f["name"],
                    "constraint_check_type": "baseline_drift_check",
                    "description": (
                        f"Baseline drift distance {f['psi']} exceeds threshold {t['psi_alert']}: {detail}"
                    ),
                }
            )
        elif f["n"] == 0 and rows >= t["min_rows"]:
            violations.append(
                {
                    "feature_name": f["name"],
                    "constraint_check_type": "missing_column_check",
                    "description": f"No value of {f['name']} in {rows} captured rows",
                }
            )
    return {"violations": violations}
