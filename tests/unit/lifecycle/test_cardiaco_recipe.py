"""The cardiaco reference recipe of ``mlgate train`` (lifecycle/recipes.py): deterministic with a
seed, its artifact shaped like the bundled one, each held-out row sent as that patient's record."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mlgate.errors import InvalidInput
from mlgate.lifecycle.gate import data_hash
from mlgate.lifecycle.recipes import TrainResult, cardiaco

pytest.importorskip("torch")

#: a small fit (~1 s): the defaults are the reference recipe's (4,000 patients, 30 epochs)
SMALL = {"epochs": 2, "n_train": 200, "n_test": 80}


def _run(seed: int) -> TrainResult:
    result = cardiaco(None, seed, dict(SMALL))
    shutil.rmtree(result.artifact_dir)
    return result


def test_same_seed_same_metrics_and_rows() -> None:
    first, second = _run(5), _run(5)
    assert first.metrics == second.metrics
    assert data_hash(first.x_test, first.y_test) == data_hash(second.x_test, second.y_test)
    assert np.array_equal(first.predict(first.x_test), second.predict(second.x_test))
    other = _run(6)  # another seed trains on other patients, is gated on the same held-out rows
    assert other.metrics["seeds"]["train"] != first.metrics["seeds"]["train"]
    assert data_hash(other.x_test, other.y_test) == data_hash(first.x_test, first.y_test)


def test_shaped_like_the_bundled_version() -> None:
    from mlgate_services.cardiaco import service
    from mlgate_services.cardiaco.processing import STATES, preprocess

    result = cardiaco(None, 1, dict(SMALL))
    try:
        assert sorted(p.name for p in result.artifact_dir.iterdir()) == ["model.onnx"]
        bundled = service._manifest().model_dump(mode="json", exclude={"files"})
        for key in ("runtime", "artifact", "input_schema", "output_schema", "batching", "timeout_s"):
            assert result.manifest[key] == bundled[key], key
        assert result.manifest["params"]["threads"] == 1 and result.manifest["params"]["recipe"] == "cardiaco"
        assert result.task == "classification" and result.metric == "accuracy"
        assert result.baseline is not None and result.baseline["format"] == "mlgate-baseline/1"
        assert set(result.y_test) <= set(STATES) and len(result.y_test) == SMALL["n_test"]
        # a held-out row goes to the server as its patient's long-format record
        record = result.to_payload(result.x_test[3])
        assert np.array_equal(preprocess(record).x[0], result.x_test[3])
        assert result.from_output({"idAtencion": 1, "State": "Sano", "inferences": {}}) == "Sano"
    finally:
        shutil.rmtree(result.artifact_dir)


def test_bad_params_are_refused() -> None:
    for params in ({"epochs": 0}, {"layers": 2}, {"n_train": "many"}, {"lr": True}, {"epochs": 1.5}):
        with pytest.raises(InvalidInput):
            cardiaco(None, 0, params)
    with pytest.raises(InvalidInput):
        cardiaco(__import__("pathlib").Path("/tmp"), 0, {})
