"""Baseline statistics (mlgate.monitoring.baseline) and their SageMaker shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlgate.errors import InvalidInput
from mlgate.monitoring.baseline import (
    FORMAT,
    RESERVOIR,
    build_baseline,
    categorical_stats,
    check_baseline,
    from_legacy,
    numeric_stats,
    psi_cuts,
    sagemaker_constraints,
    sagemaker_statistics,
    strip_reservoirs,
)

SERVICES = Path(__file__).resolve().parents[3] / "src" / "mlgate_services"


def test_numeric_stats_deciles_expected_and_a_seeded_reservoir() -> None:
    values = np.random.default_rng(0).normal(10.0, 2.0, 50_000)
    values[:100] = np.nan
    stats = numeric_stats(values)
    assert stats["count"] == 49_900 and stats["missing"] == 100
    assert stats["mean"] == pytest.approx(10.0, abs=0.05)
    assert stats["std"] == pytest.approx(2.0, abs=0.05)
    assert len(stats["quantile_edges"]) == 11
    assert stats["quantile_edges"] == sorted(stats["quantile_edges"])
    assert sum(stats["expected"]) == pytest.approx(1.0)
    assert all(e == pytest.approx(0.1, abs=0.002) for e in stats["expected"])
    assert len(stats["reservoir"]) == RESERVOIR
    assert numeric_stats(values)["reservoir"] == stats["reservoir"]  # deterministic
    assert numeric_stats(values, seed=1)["reservoir"] != stats["reservoir"]


def test_discrete_feature_merges_repeated_edges() -> None:
    values = np.array([0.0] * 700 + [1.0] * 200 + [5.0] * 100)
    stats = numeric_stats(values)
    cuts = psi_cuts(stats["quantile_edges"])
    assert cuts.size < 9  # the repeated 0s merge into one bin
    assert stats["expected"][np.searchsorted(cuts, 0.0, side="right")] == pytest.approx(0.7)
    assert len(stats["expected"]) == cuts.size + 1
    assert sum(stats["expected"]) == pytest.approx(1.0)
    assert stats["integral"] is True


def test_all_missing_numeric_feature() -> None:
    assert numeric_stats(np.array([np.nan, np.nan])) == {"type": "numeric", "count": 0, "missing": 2}


def test_categorical_top_k_and_other() -> None:
    values = np.array([f"c{i % 30}" for i in range(3000)] + [None] * 10, dtype=object)
    stats = categorical_stats(values, top_k=20)
    assert stats["count"] == 3000 and stats["missing"] == 10 and stats["distinct"] == 30
    assert len(stats["top"]) == 20
    assert stats["other"] == pytest.approx(10 / 30, abs=1e-6)
    assert sum(stats["top"].values()) + stats["other"] == pytest.approx(1.0, abs=1e-4)


def test_build_baseline_document_and_sagemaker_shapes() -> None:
    rng = np.random.default_rng(1)
    columns = {
        "age": rng.integers(18, 90, 500).astype(np.float64),
        "city": np.array(rng.choice(["a", "b", "c"], 500), dtype=object),
        "output:value": rng.normal(0, 1, 500),
    }
    doc = build_baseline(columns, feature_names=["age", "city"], output_names=["output:value"])
    assert doc["format"] == FORMAT
    assert doc["n_rows"] == 500
    assert doc["features"]["city"]["type"] == "categorical"
    assert check_baseline(json.loads(json.dumps(doc))) == doc

    stats = sagemaker_statistics(doc)
    assert stats["dataset"] == {"item_count": 500}
    by_name = {f["name"]: f for f in stats["features"]}
    age = by_name["age"]
    assert age["inferred_type"] == "Integral"
    numerical = age["numerical_statistics"]
    assert set(numerical) >= {"common", "mean", "sum", "std_dev", "min", "max", "distribution"}
    assert numerical["common"] == {"num_present": 500, "num_missing": 0}
    kll = numerical["distribution"]["kll"]
    assert len(kll["buckets"]) == 10
    assert set(kll["buckets"][0]) == {"lower_bound", "upper_bound", "count"}
    assert kll["sketch"]["parameters"] == {"c": 0.64, "k": 2048.0}
    city = by_name["city"]
    assert city["inferred_type"] == "String"
    buckets = city["string_statistics"]["distribution"]["categorical"]["buckets"]
    assert sum(b["count"] for b in buckets) == 500

    constraints = sagemaker_constraints(doc, psi_alert=0.25)
    assert constraints["monitoring_config"]["distribution_constraints"]["comparison_threshold"] == 0.25
    cons = {f["name"]: f for f in constraints["features"]}
    assert cons["age"]["num_constraints"] == {"is_non_negative": True}
    assert sorted(cons["city"]["string_constraints"]["domains"]) == ["a", "b", "c"]
    assert cons["age"]["completeness"] == 1.0

    small = strip_reservoirs(doc)
    assert "reservoir" not in small["features"]["age"]


def test_check_baseline_refuses_bad_documents() -> None:
    with pytest.raises(InvalidInput):
        check_baseline([1, 2])
    with pytest.raises(InvalidInput, match="unknown baseline format"):
        check_baseline({"format": "other/9"})
    with pytest.raises(InvalidInput):
        check_baseline({"format": FORMAT, "feature_names": ["a"], "output_names": [], "features": {}})
    with pytest.raises(InvalidInput):
        check_baseline({"feature_names": ["a"]})
    with pytest.raises(InvalidInput, match="no reference values"):
        build_baseline({}, feature_names=["a"])


def test_legacy_shape_is_converted() -> None:
    legacy = {
        "window": 2,
        "n_samples": 100,
        "feature_names": ["lag_2", "lag_1"],
        "features": {
            n: {
                "mean": 1.0,
                "std": 1.0,
                "min": 0.0,
                "max": 3.0,
                "quantile_edges": [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3],
            }
            for n in ("lag_2", "lag_1")
        },
    }
    doc = from_legacy(legacy)
    assert doc["input"] == {"type": "window", "key": "temperaturas"}
    expected = doc["features"]["lag_1"]["expected"]
    assert len(expected) == psi_cuts(legacy["features"]["lag_1"]["quantile_edges"]).size + 1
    assert sum(expected) == pytest.approx(1.0)
    assert check_baseline(legacy)["feature_names"] == ["lag_2", "lag_1"]


def test_reference_baselines_load() -> None:
    temp = check_baseline(json.loads((SERVICES / "temperatura/artifact/baseline.json").read_text()))
    assert temp["format"] == FORMAT
    assert temp["feature_names"][0] == "lag_60" and temp["feature_names"][-1] == "lag_1"
    assert temp["output"]["kind"] == "regressor" and temp["output_names"] == ["output:value"]
    assert len(temp["features"]["lag_1"]["reservoir"]) == RESERVOIR
    cardiac = check_baseline(json.loads((SERVICES / "cardiaco/artifact/baseline.json").read_text()))
    assert len(cardiac["feature_names"]) == 9


def _doc(**stats: object) -> dict[str, object]:
    return {
        "format": "mlgate-baseline/1",
        "feature_names": ["a"],
        "output_names": [],
        "features": {"a": {"type": "numeric", "count": 5, **stats}},
    }


@pytest.mark.parametrize(
    "doc",
    [
        _doc(quantile_edges=["x", "y"], expected=[1]),
        _doc(quantile_edges=[None, {}], expected=[1]),
        _doc(quantile_edges=[0, 1], expected=["1"]),
        _doc(quantile_edges=[0, 1], expected=[1], reservoir=["x"]),
        _doc(quantile_edges=[0, 1], expected=[1], mean="x"),
        _doc(quantile_edges=[0, 1], expected=[1], count="5"),
        {**_doc(quantile_edges=[0, 1], expected=[1]), "input": {"type": "window", "key": ["x"]}},
        {**_doc(quantile_edges=[0, 1], expected=[1]), "input": {"type": "tarot"}},
        {**_doc(quantile_edges=[0, 1], expected=[1]), "output": {"kind": "regressor", "value": 5}},
        {**_doc(quantile_edges=[0, 1], expected=[1]), "feature_names": [["a"]]},
        {**_doc(quantile_edges=[0, 1], expected=[1]), "feature_names": ["a", "a"]},
        {"feature_names": ["a"], "features": {"a": {"quantile_edges": "abc"}}},
        {"feature_names": ["a"], "features": {"a": {"quantile_edges": []}}},
        {"feature_names": ["a"], "features": {"a": {"quantile_edges": [1, 2], "mean": "x"}}},
        {"feature_names": ["a"], "features": {"a": {"quantile_edges": [1, 2]}}, "n_samples": "lots"},
        {
            "feature_names": [f"f{i}" for i in range(2001)],
            "features": {f"f{i}": {"quantile_edges": [0, 1]} for i in range(2001)},
        },
    ],
)
def test_malformed_baselines_are_refused_naming_the_problem(doc: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        check_baseline(doc)
