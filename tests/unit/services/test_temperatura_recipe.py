"""The committed ``temperatura`` artifact loads safely, beats naive, and is rebuilt by its recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio

from mlgate_services.temperatura import recipe

ARTIFACT = recipe.ARTIFACT_DIR


def _metrics(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "metrics.json").read_text(encoding="utf-8"))


def _load_model() -> Any:
    path = ARTIFACT / "model.skops"
    untrusted = sio.get_untrusted_types(file=path)
    assert all(t.startswith(("sklearn.", "numpy.")) for t in untrusted), untrusted
    return sio.load(path, trusted=untrusted)


def test_artifact_is_small_and_loads_with_only_sklearn_numpy_types() -> None:
    assert (ARTIFACT / "model.skops").stat().st_size < 100_000
    model = _load_model()
    assert model.n_features_in_ == recipe.WINDOW


def test_model_predicts_the_next_hour_from_60_values() -> None:
    model = _load_model()
    # A cooling evening: 22.1 °C falling steadily to 16.2 °C, as in the SPEC example.
    window = np.linspace(22.1, 16.2, recipe.WINDOW).reshape(1, -1)
    [pred] = model.predict(window)
    assert np.isfinite(pred)
    assert 12.0 < pred < 18.0


def test_metrics_beat_the_naive_last_value_forecast() -> None:
    metrics = _metrics(ARTIFACT)
    assert metrics["mae"] < metrics["naive_mae"]
    assert metrics["n_test"] > 0
    assert metrics["n_train"] > metrics["n_test"]
    assert len(metrics["stations"]) >= 2


def test_baseline_has_stats_for_every_lag() -> None:
    baseline = json.loads((ARTIFACT / "baseline.json").read_text(encoding="utf-8"))
    assert len(baseline["feature_names"]) == recipe.WINDOW
    for name in baseline["feature_names"]:
        stats = baseline["features"][name]
        assert stats["min"] <= stats["mean"] <= stats["max"]
        assert len(stats["quantile_edges"]) == 11
        assert stats["quantile_edges"] == sorted(stats["quantile_edges"])


def test_recipe_rebuilds_the_committed_artifact(tmp_path: Path) -> None:
    rebuilt = recipe.train(tmp_path)
    committed = _metrics(ARTIFACT)
    for key in ("mae", "rmse", "naive_mae", "naive_rmse"):
        assert rebuilt[key] == pytest.approx(committed[key], abs=1e-6)
    for key in ("n_train", "n_test", "stations", "model"):
        assert rebuilt[key] == committed[key]
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8")) == rebuilt
