from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from mlgate.errors import ConfigurationError, InvalidInput, UnsafeArtifact
from mlgate.runtimes.sklearn import SklearnRuntime, skops_refused_types
from tests.unit.runtimes.artifacts import load_context, regression_data, skops_ridge


def double(x: Any) -> Any:
    """A user function: skops cannot vouch for it."""
    return x * 2


class Canary:
    """Unpickling this opens (creates) the canary file: proof that loading ran code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def _loaded(folder: Path, artifact: str, **params: Any) -> SklearnRuntime:
    runtime = SklearnRuntime()
    runtime.load(load_context(folder, "sklearn", artifact, params=params))
    return runtime


@pytest.mark.parametrize("suffix", [".pkl", ".pickle", ".joblib"])
def test_pickle_is_refused_without_trust_and_never_executed(tmp_path: Path, suffix: str) -> None:
    canary = tmp_path / "canary"
    (tmp_path / f"model{suffix}").write_bytes(pickle.dumps(Canary(canary)))
    with pytest.raises(UnsafeArtifact, match="MLGATE_TRUSTED_SHA256"):
        SklearnRuntime().load(load_context(tmp_path, "sklearn", f"model{suffix}"))
    assert not canary.exists()


def test_the_canary_really_fires_when_unpickled(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    pickle.loads(pickle.dumps(Canary(canary))).close()  # proves the premise
    assert canary.exists()


def test_trusted_joblib_loads(tmp_path: Path) -> None:
    x, y = regression_data()
    estimator = Ridge().fit(x, y)
    joblib.dump(estimator, tmp_path / "model.joblib")
    runtime = SklearnRuntime()
    runtime.load(load_context(tmp_path, "sklearn", "model.joblib", trusted=True))
    [out] = runtime.predict([runtime.decode(x[0].tolist())])
    assert out == pytest.approx(float(estimator.predict(x[:1])[0]))


def test_skops_with_foreign_types_is_refused_unless_trusted(tmp_path: Path) -> None:
    x, y = regression_data()
    sio.dump(make_pipeline(FunctionTransformer(double), Ridge()).fit(x, y), tmp_path / "model.skops")
    with pytest.raises(UnsafeArtifact, match=r"test_sklearn\.double") as info:
        SklearnRuntime().load(load_context(tmp_path, "sklearn", "model.skops"))
    assert info.value.details["types"] == [f"{__name__}.double"]
    runtime = SklearnRuntime()
    runtime.load(load_context(tmp_path, "sklearn", "model.skops", trusted=True))
    assert isinstance(runtime.predict([runtime.decode([1.0, 2.0, 3.0])])[0], float)


def test_skops_allowlist_and_denylist() -> None:
    assert (
        skops_refused_types(
            ["sklearn.linear_model._ridge.Ridge", "numpy.float64", "scipy.sparse._csr.csr_matrix"]
        )
        == []
    )
    refused = skops_refused_types(
        [
            "builtins.eval",
            "numpy.testing._private.utils.runstring",
            "scipy.io.loadmat",
            "numpyx.evil",
            "os.system",
        ]
    )
    assert refused == sorted(refused) and len(refused) == 5


def test_unsupported_artifact_and_params_are_configuration_errors(tmp_path: Path) -> None:
    skops_ridge(tmp_path)
    (tmp_path / "model.h5").write_bytes(b"")
    with pytest.raises(ConfigurationError, match=r"\.skops"):
        _loaded(tmp_path, "model.h5")
    with pytest.raises(ConfigurationError, match="output"):
        _loaded(tmp_path, "model.skops", output="labels")
    with pytest.raises(ConfigurationError, match="predict_proba"):
        _loaded(tmp_path, "model.skops", output="proba")


def test_decode_forms_and_errors(tmp_path: Path) -> None:
    skops_ridge(tmp_path)
    runtime = _loaded(tmp_path, "model.skops")
    assert runtime.decode([1, 2, 3.5]).tolist() == [1.0, 2.0, 3.5]
    assert runtime.decode({"inputs": [1, 2, 3]}).dtype == np.float64
    assert runtime.decode(np.array([1.0, 2.0, 3.0])).shape == (3,)
    cases = {
        "expected 3 features, got 2": [1, 2],
        "booleans": [1, True, 2],
        "NaN or infinity": [1, float("-inf"), 2],
        "only numbers": [1, None, 2],
        "flat list": [[1, 2, 3]],
        "inputs": {"inputs": [1, 2, 3], "extra": 1},
        "not fitted on named columns": {"inputs": {"a": 1}},
        "not str": "1,2,3",
        "at least one": [],
    }
    for message, payload in cases.items():
        with pytest.raises(InvalidInput, match=message):
            runtime.decode(payload)


def test_predict_batches_in_order(tmp_path: Path) -> None:
    skops_ridge(tmp_path)
    runtime = _loaded(tmp_path, "model.skops")
    rows = [runtime.decode([float(i), 0.0, 0.0]) for i in range(5)]
    outputs = runtime.predict(rows)
    assert all(type(o) is float for o in outputs)
    assert outputs == sorted(outputs)  # coefficient of the first feature is positive
    assert runtime.predict(rows[2:3]) == pytest.approx(outputs[2:3])
    assert runtime.warmup_input() is not None
    meta = runtime.metadata()
    assert meta["inputs"][0]["shape"] == [-1, 3]


def test_classifier_labels_and_probabilities(tmp_path: Path) -> None:
    x, y = regression_data()
    labels = np.where(y > y.mean(), "high", "low")
    sio.dump(LogisticRegression().fit(x, labels), tmp_path / "clf.skops")
    runtime = _loaded(tmp_path, "clf.skops")
    [label] = runtime.predict([runtime.decode(x[0].tolist())])
    assert label in ("high", "low") and type(label) is str
    assert runtime.metadata()["outputs"][0]["datatype"] == "BYTES"
    proba = _loaded(tmp_path, "clf.skops", output="proba")
    [p] = proba.predict([proba.decode(x[0].tolist())])
    assert len(p) == 2 and sum(p) == pytest.approx(1.0)
    assert proba.metadata()["outputs"][0]["shape"] == [-1, 2]


def test_multi_output_regression_gives_lists(tmp_path: Path) -> None:
    x, y = regression_data()
    sio.dump(LinearRegression().fit(x, np.stack([y, -y], axis=1)), tmp_path / "multi.skops")
    runtime = _loaded(tmp_path, "multi.skops")
    out = runtime.predict([runtime.decode(x[0].tolist()), runtime.decode(x[1].tolist())])
    assert len(out) == 2 and all(len(o) == 2 for o in out)
    assert out[0][0] == pytest.approx(-out[0][1])


def test_dataframe_estimators_take_features_by_name(tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    x, y = regression_data()
    frame = pandas.DataFrame(x, columns=["a", "b", "c"])
    sio.dump(Ridge().fit(frame, y), tmp_path / "named.skops")
    runtime = _loaded(tmp_path, "named.skops")
    by_name = runtime.decode({"inputs": {"c": 3.0, "a": 1.0, "b": 2.0}})
    with pytest.raises(InvalidInput, match="missing column 'c'"):
        runtime.decode({"inputs": {"a": 1.0, "b": 2.0}})
    # no "X does not have valid feature names" warning (warnings are errors here)
    assert runtime.predict([by_name]) == runtime.predict([runtime.decode([1.0, 2.0, 3.0])])
    assert [i["name"] for i in runtime.metadata()["inputs"]] == ["a", "b", "c"]
    # more tabular cases (strings, missing values, records, columns): test_sklearn_tabular.py
