"""Baseline statistics of a model version's reference data, for drift (docs/monitoring.md).

One JSON document per version, ``"format": "mlgate-baseline/1"``::

    {"format": "mlgate-baseline/1",
     "input":  {"type": "window", "key": "temperaturas"},   # how captured inputs become rows
     "output": {"kind": "regressor", "value": "prediccion"},  # how answers become output features
     "feature_names": ["lag_60", …, "lag_1"],                 # input features, in order
     "output_names": ["output:value"],
     "n_rows": 20844,
     "features": {
       "lag_1": {"type": "numeric", "count": 20844, "missing": 0, "mean": …, "std": …, "min": …,
                 "max": …, "quantile_edges": [11 decile edges], "expected": [bin fractions],
                 "reservoir": [≤ 2,000 values, a seeded uniform sample]},
       "output:class": {"type": "categorical", "count": …, "missing": …, "distinct": …,
                        "top": {"value": fraction, …20 at most}, "other": fraction}},
     "meta": {…free: source, unit…}}

PSI bins a feature on its reference deciles (interior edges, both ends open), with the
reference's own fraction per bin in ``expected`` (a discrete feature's repeated edges make
fewer, uneven bins); KS compares against the reservoir; chi² compares categorical counts with
``top`` + ``other``. :func:`sagemaker_statistics` and :func:`sagemaker_constraints` write the
same figures as SageMaker Model Monitor's ``statistics.json`` / ``constraints.json``.

:func:`from_legacy` reads the reference services' earlier shape (``feature_names`` +
``features{name: {mean, std, min, max, quantile_edges}}``: no reservoir, so PSI only).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mlgate.errors import InvalidInput

__all__ = [
    "BINS",
    "FORMAT",
    "RESERVOIR",
    "TOP_K",
    "Columns",
    "build_baseline",
    "categorical_stats",
    "check_baseline",
    "from_legacy",
    "numeric_stats",
    "psi_cuts",
    "sagemaker_constraints",
    "sagemaker_statistics",
    "strip_reservoirs",
]

FORMAT = "mlgate-baseline/1"
RESERVOIR = 2_000
TOP_K = 20
BINS = 10
SEED = 20_240_601
#: Largest baseline document accepted (a 60-feature baseline with full reservoirs is ~0.8 MB).
MAX_FEATURES = 2_000

#: Feature columns: float64 arrays (NaN = missing) or object arrays of ``str | None``.
Columns = dict[str, np.ndarray]


def _num(value: float) -> float:
    """A float rounded to 7 significant digits (compact, stable JSON)."""
    if not math.isfinite(value):
        return 0.0
    return float(f"{value:.7g}")


def psi_cuts(edges: Sequence[float]) -> np.ndarray:
    """The interior cut points of decile ``edges`` (duplicates merged): bin ``i`` holds
    ``cuts[i-1] <= x < cuts[i]``, the first and last bins open-ended."""
    inner = np.asarray(edges[1:-1], dtype=np.float64)
    return np.unique(inner)


def bin_fractions(values: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Fraction of ``values`` (no NaN) in each of ``len(cuts) + 1`` bins."""
    counts = np.bincount(np.searchsorted(cuts, values, side="right"), minlength=cuts.size + 1)
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def numeric_stats(values: np.ndarray, *, reservoir: int = RESERVOIR, seed: int = SEED) -> dict[str, Any]:
    """One numeric feature's statistics (``values`` float64, NaN = missing)."""
    values = np.asarray(values, dtype=np.float64)
    present = values[np.isfinite(values)]
    missing = int(values.size - present.size)
    if present.size == 0:
        return {"type": "numeric", "count": 0, "missing": missing}
    edges = np.quantile(present, np.linspace(0.0, 1.0, BINS + 1))
    edges_out = [_num(float(e)) for e in edges]
    cuts = psi_cuts(edges_out)
    if present.size > reservoir:
        rng = np.random.default_rng(seed)
        sample = present[np.sort(rng.choice(present.size, size=reservoir, replace=False))]
    else:
        sample = present
    return {
        "type": "numeric",
        "count": int(present.size),
        "missing": missing,
        "mean": _num(float(present.mean())),
        "std": _num(float(present.std())),
        "min": _num(float(present.min())),
        "max": _num(float(present.max())),
        "sum": _num(float(present.sum())),
        "integral": bool(np.all(present == np.round(present))),
        "quantile_edges": edges_out,
        "expected": [round(float(f), 6) for f in bin_fractions(present, cuts)],
        "reservoir": [_num(float(v)) for v in sample],
    }


def categorical_stats(values: np.ndarray, *, top_k: int = TOP_K) -> dict[str, Any]:
    """One categorical feature's statistics: the ``top_k`` values' fractions plus ``other``."""
    present = [v for v in values.tolist() if v is not None]
    missing = len(values) - len(present)
    counts = Counter(str(v) for v in present)
    total = len(present)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    kept = sum(c for _, c in top)
    return {
        "type": "categorical",
        "count": total,
        "missing": missing,
        "distinct": len(counts),
        "top": {k: round(c / total, 6) for k, c in top} if total else {},
        "top_counts": {k: c for k, c in top},
        "other": round((total - kept) / total, 6) if total else 0.0,
    }


def _is_numeric(column: np.ndarray) -> bool:
    return column.dtype.kind in "fiub"


def build_baseline(
    columns: Columns,
    *,
    feature_names: Sequence[str],
    output_names: Sequence[str] = (),
    input_spec: Mapping[str, Any] | None = None,
    output_spec: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    reservoir: int = RESERVOIR,
    seed: int = SEED,
) -> dict[str, Any]:
    """The baseline document of reference feature ``columns`` (see the module docstring)."""
    names = [*feature_names, *output_names]
    if not names:
        raise InvalidInput("a baseline needs at least one feature")
    if len(names) > MAX_FEATURES:
        raise InvalidInput(f"a baseline has at most {MAX_FEATURES} features, got {len(names)}")
    missing = [n for n in names if n not in columns]
    if missing:
        raise InvalidInput(f"no reference values for feature(s) {', '.join(missing[:5])}")
    n_rows = max((len(columns[n]) for n in names), default=0)
    features: dict[str, Any] = {}
    for i, name in enumerate(names):
        column = columns[name]
        if _is_numeric(column):
            features[name] = numeric_stats(column.astype(np.float64), reservoir=reservoir, seed=seed + i)
        else:
            features[name] = categorical_stats(column)
    return {
        "format": FORMAT,
        "input": dict(input_spec or {"type": "records"}),
        "output": dict(output_spec or {"kind": "none"}),
        "feature_names": list(feature_names),
        "output_names": list(output_names),
        "n_rows": int(n_rows),
        "features": features,
        "meta": dict(meta or {}),
    }


def from_legacy(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The reference services' earlier baseline shape in this format (PSI only: no reservoir)."""
    names = doc.get("feature_names")
    stats = doc.get("features")
    if not isinstance(names, list) or not isinstance(stats, Mapping):
        raise InvalidInput("the baseline has no 'feature_names' and 'features'")
    _check_names(names, [])
    if not _is_number(doc.get("n_samples", doc.get("n_sequences", 0)) or 0):
        raise InvalidInput("the baseline's 'n_samples' is a count")
    features: dict[str, Any] = {}
    for name in names:
        s = stats.get(name)
        if not isinstance(s, Mapping) or "quantile_edges" not in s:
            raise InvalidInput(f"the baseline has no quantile_edges for feature {name!r}")
        edges = _check_numbers(s["quantile_edges"], name, "quantile_edges", at_least=2)
        for key in ("mean", "std", "min", "max"):
            if key in s and not _is_number(s[key]):
                raise InvalidInput(f"baseline feature {name!r}: {key!r} is a number")
        cuts = psi_cuts(edges)
        # Each decile holds 10 % of the reference, in the bin its lower edge opens.
        bins = np.searchsorted(cuts, np.asarray(edges[:-1]), side="right")
        expected = np.bincount(bins, minlength=cuts.size + 1) / (len(edges) - 1)
        features[name] = {
            "type": "numeric",
            "count": int(doc.get("n_samples", doc.get("n_sequences", 0)) or 0),
            "missing": 0,
            **{k: float(s[k]) for k in ("mean", "std", "min", "max") if k in s},
            "quantile_edges": edges,
            "expected": [round(float(e), 6) for e in expected],
        }
    out_spec: dict[str, Any] = {"kind": "none"}
    input_spec: dict[str, Any] = {"type": "vector"}
    if doc.get("window") and len(names) == doc.get("window") and str(names[0]).startswith("lag_"):
        input_spec = {"type": "window", "key": "temperaturas"}
    return {
        "format": FORMAT,
        "input": input_spec,
        "output": out_spec,
        "feature_names": list(names),
        "output_names": [],
        "n_rows": int(doc.get("n_samples", 0) or 0),
        "features": features,
        "meta": {"converted_from": "legacy reference baseline"},
    }


#: Longest feature name (names become ``feature`` labels of the drift gauges).
MAX_NAME = 200
_INPUT_TYPES = ("records", "window", "vector", "long", "image")
_OUTPUT_KINDS = ("none", "regressor", "classifier", "detector")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_names(names: Any, outputs: Any) -> list[str]:
    if not isinstance(names, list) or not isinstance(outputs, list):
        raise InvalidInput("a baseline needs 'feature_names' and 'output_names' (lists of names)")
    every = [*names, *outputs]
    if len(every) > MAX_FEATURES:
        raise InvalidInput(f"a baseline has at most {MAX_FEATURES} features, got {len(every)}")
    for name in every:
        if not isinstance(name, str) or not name or len(name) > MAX_NAME:
            raise InvalidInput(
                f"a feature name is a string of 1 to {MAX_NAME} characters, not {str(name)[:80]!r}"
            )
    if len(set(every)) != len(every):
        raise InvalidInput("the baseline's feature names repeat")
    return every


def _check_spec(spec: Any, what: str, field: str, allowed: tuple[str, ...]) -> None:
    """An ``input`` / ``output`` spec: a known type or kind; keys and paths strings; labels a list."""
    if spec is None:
        return
    if not isinstance(spec, Mapping):
        raise InvalidInput(f"the baseline's {what!r} is a JSON object")
    if spec.get(field, allowed[0]) not in allowed:
        raise InvalidInput(f"the baseline's {what} {field} is one of {', '.join(allowed)}")
    for key, value in spec.items():
        if key == "labels":
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(v, str | int) for v in value)
            ):
                raise InvalidInput(f"the baseline's {what} labels are a list of names")
        elif value is not None and not isinstance(value, str):
            raise InvalidInput(f"the baseline's {what} {key!r} is a name or dotted path (a string)")


def _check_numbers(values: Any, name: str, key: str, *, at_least: int = 0) -> list[float]:
    if not isinstance(values, list) or len(values) < at_least or not all(_is_number(v) for v in values):
        raise InvalidInput(f"baseline feature {name!r}: {key!r} is a list of numbers")
    return [float(v) for v in values]


def _check_stats(name: str, s: Any) -> None:
    if not isinstance(s, Mapping) or s.get("type") not in ("numeric", "categorical"):
        raise InvalidInput(f"baseline feature {name!r} has no numeric or categorical statistics")
    for key in ("count", "missing", "distinct"):
        value = s.get(key, 0)
        if not _is_number(value) or value < 0:
            raise InvalidInput(f"baseline feature {name!r}: {key!r} is a count")
    for key in ("mean", "std", "min", "max", "sum", "other"):
        if key in s and not _is_number(s[key]):
            raise InvalidInput(f"baseline feature {name!r}: {key!r} is a number")
    if s["type"] == "numeric":
        if "reservoir" in s:
            _check_numbers(s["reservoir"], name, "reservoir")
        if s.get("count", 0):
            edges = _check_numbers(s.get("quantile_edges"), name, "quantile_edges", at_least=2)
            expected = _check_numbers(s.get("expected"), name, "expected")
            if len(expected) != psi_cuts(edges).size + 1:
                raise InvalidInput(f"baseline feature {name!r}: 'expected' does not match its edges")
        return
    for key in ("top", "top_counts"):
        table = s.get(key, {})
        if not isinstance(table, Mapping) or not all(_is_number(v) for v in table.values()):
            raise InvalidInput(f"baseline feature {name!r}: {key!r} maps values to numbers")


def check_baseline(doc: Any) -> dict[str, Any]:
    """A baseline document, validated (400 naming what is wrong); the legacy shape converted."""
    if not isinstance(doc, Mapping):
        raise InvalidInput("a baseline is a JSON object")
    if doc.get("format") != FORMAT:
        if "format" in doc:
            raise InvalidInput(
                f"unknown baseline format {str(doc.get('format'))[:80]!r} (expected {FORMAT!r})"
            )
        return from_legacy(doc)
    names = doc.get("feature_names")
    outputs = doc.get("output_names", [])
    features = doc.get("features")
    if not isinstance(features, Mapping):
        raise InvalidInput("a baseline needs 'feature_names', 'output_names' (lists) and 'features'")
    every = _check_names(names, outputs)
    _check_spec(doc.get("input"), "input", "type", _INPUT_TYPES)
    _check_spec(doc.get("output"), "output", "kind", _OUTPUT_KINDS)
    if not _is_number(doc.get("n_rows", 0)):
        raise InvalidInput("the baseline's 'n_rows' is a count")
    for name in every:
        _check_stats(name, features.get(name))
    return dict(doc)


def strip_reservoirs(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The document without its reservoirs (small enough for a manifest)."""
    features = {
        name: {k: v for k, v in stats.items() if k != "reservoir"} for name, stats in doc["features"].items()
    }
    return {**doc, "features": features}


# -- SageMaker Model Monitor shapes ------------------------------------------------------------


def _inferred_type(stats: Mapping[str, Any]) -> str:
    if stats["type"] == "categorical":
        return "String"
    if not stats.get("count"):
        return "Unknown"
    return "Integral" if stats.get("integral") else "Fractional"


def sagemaker_statistics(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``statistics.json`` (SageMaker Model Monitor's schema): per feature the common counts,
    numeric moments and a KLL-shaped distribution (10 buckets over the deciles; the sketch's
    data is the reservoir), or the categorical buckets."""
    out: list[dict[str, Any]] = []
    for name in [*doc["feature_names"], *doc.get("output_names", [])]:
        s = doc["features"][name]
        common = {"num_present": int(s.get("count", 0)), "num_missing": int(s.get("missing", 0))}
        kind = _inferred_type(s)
        if s["type"] == "categorical":
            buckets = [{"value": k, "count": int(c)} for k, c in s.get("top_counts", {}).items()]
            out.append(
                {
                    "name": name,
                    "inferred_type": kind,
                    "string_statistics": {
                        "common": common,
                        "distinct_count": float(s.get("distinct", len(buckets))),
                        "distribution": {"categorical": {"buckets": buckets}},
                    },
                }
            )
            continue
        edges = s.get("quantile_edges", [])
        count = int(s.get("count", 0))
        numerical: dict[str, Any] = {"common": common}
        if count:
            numerical.update(
                mean=s.get("mean", 0.0),
                sum=s.get("sum", s.get("mean", 0.0) * count),
                std_dev=s.get("std", 0.0),
                min=s.get("min", 0.0),
                max=s.get("max", 0.0),
                distribution={
                    "kll": {
                        "buckets": [
                            {"lower_bound": lo, "upper_bound": hi, "count": round(count / BINS, 3)}
                            for lo, hi in itertools.pairwise(edges)
                        ],
                        "sketch": {
                            "parameters": {"c": 0.64, "k": 2048.0},
                            "data": [list(s.get("reservoir", []))],
                        },
                    }
                },
            )
        out.append({"name": name, "inferred_type": kind, "numerical_statistics": numerical})
    return {"version": 0.0, "dataset": {"item_count": int(doc.get("n_rows", 0))}, "features": out}


def sagemaker_constraints(doc: Mapping[str, Any], *, psi_alert: float = 0.25) -> dict[str, Any]:
    """``constraints.json`` (SageMaker Model Monitor's schema) from the baseline."""
    out: list[dict[str, Any]] = []
    for name in [*doc["feature_names"], *doc.get("output_names", [])]:
        s = doc["features"][name]
        total = int(s.get("count", 0)) + int(s.get("missing", 0))
        item: dict[str, Any] = {
            "name": name,
            "inferred_type": _inferred_type(s),
            "completeness": round(s.get("count", 0) / total, 6) if total else 0.0,
        }
        if s["type"] == "numeric":
            item["num_constraints"] = {"is_non_negative": bool(s.get("count")) and s.get("min", 0.0) >= 0}
        else:
            item["string_constraints"] = {"domains": list(s.get("top", {}))}
        out.append(item)
    return {
        "version": 0.0,
        "features": out,
        "monitoring_config": {
            "evaluate_constraints": "Enabled",
            "emit_metrics": "Enabled",
            "datatype_check_threshold": 1.0,
            "domain_content_threshold": 1.0,
            "distribution_constraints": {
                "perform_comparison": "Enabled",
                "comparison_threshold": psi_alert,
                "comparison_method": "Robust",
            },
        },
    }
