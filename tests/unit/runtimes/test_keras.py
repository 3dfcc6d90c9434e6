"""The keras runtime on Keras 3 + torch: a small LSTM saved as .keras and .h5 in the test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlgate.errors import ConfigurationError, InvalidInput, UnsafeArtifact
from mlgate.runtimes import create_runtime
from mlgate.runtimes.keras import KerasRuntime
from tests.unit.runtimes.artifacts import load_context

# Keras reads its backend once, at import; the 'keras' extra ships torch, not TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip(
    "keras", reason="the 'keras' extra is not installed (pip install 'mlgate[keras]')"
)

STEPS, FEATURES, UNITS, CLASSES = 20, 9, 6, 4


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _lstm_model() -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((STEPS, FEATURES)),
            keras.layers.LSTM(UNITS),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    return model


def _reference(model: Any, x: np.ndarray) -> np.ndarray:
    """The LSTM + softmax computed with NumPy from the weights (Keras gate order i, f, c, o)."""
    kernel, recurrent, bias = (_numpy(w) for w in model.layers[0].weights)
    dense_w, dense_b = (_numpy(w) for w in model.layers[1].weights)

    def sigmoid(z: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-z))

    h = np.zeros((len(x), UNITS))
    c = np.zeros((len(x), UNITS))
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = np.split(z, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
    logits = h @ dense_w + dense_b
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _loaded(folder: Path, artifact: str, *, trusted: bool = False) -> KerasRuntime:
    runtime = create_runtime("keras")
    assert isinstance(runtime, KerasRuntime)
    runtime.load(load_context(folder, "keras", artifact, trusted=trusted))
    return runtime


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    folder = tmp_path_factory.mktemp("keras")
    model = _lstm_model()
    model.save(folder / "lstm.keras")
    model.save(folder / "LSTM.h5")  # legacy HDF5, like the original service's LSTM.h5
    return folder, model


@pytest.mark.parametrize("artifact", ["lstm.keras", "LSTM.h5"])
def test_loads_and_matches_the_model(saved: tuple[Path, Any], artifact: str) -> None:
    folder, model = saved
    runtime = _loaded(folder, artifact)
    x = np.random.default_rng(1).normal(size=(5, STEPS, FEATURES)).astype(np.float32)
    items = [runtime.decode(row.tolist()) for row in x]
    assert items[0].dtype == np.float32 and items[0].shape == (STEPS, FEATURES)
    out = np.stack(runtime.predict(items))
    assert out.shape == (5, CLASSES)
    np.testing.assert_allclose(out, _reference(model, x.astype(np.float64)), atol=1e-5)
    np.testing.assert_allclose(out, _numpy(model(x, training=False)), atol=1e-6)
    # One item alone gives the same row as inside a batch; encode is JSON-able.
    [single] = runtime.predict([items[2]])
    np.testing.assert_allclose(single, out[2], atol=1e-6)
    assert runtime.encode(single) == pytest.approx(out[2].tolist(), abs=1e-6)
    meta = runtime.metadata()
    assert meta["inputs"][0]["shape"] == [-1, STEPS, FEATURES]
    assert meta["inputs"][0]["datatype"] == "FP32"
    assert meta["outputs"][0]["shape"] == [-1, CLASSES]
    assert runtime.predict([runtime.warmup_input()])[0].shape == (CLASSES,)


def test_tensor_rows_and_stacked_output(saved: tuple[Path, Any]) -> None:
    runtime = _loaded(saved[0], "lstm.keras")
    x = np.zeros((3, STEPS, FEATURES), dtype=np.float32)
    items = runtime.decode_tensors({"x": x})
    assert len(items) == 3
    outputs = runtime.encode_tensors(runtime.predict(items))
    (stacked,) = outputs.values()
    assert stacked.shape == (3, CLASSES)


def test_decode_refuses_bad_shapes_and_values(saved: tuple[Path, Any]) -> None:
    runtime = _loaded(saved[0], "lstm.keras")
    good = np.zeros((STEPS, FEATURES)).tolist()
    assert runtime.decode({"inputs": good}).shape == (STEPS, FEATURES)
    for payload, message in [
        ([good], r"shape \[20, 9\] \(without the batch dimension\), got \[1, 20, 9\]"),
        (good[:19], r"got \[19, 9\]"),
        ([[float("nan")] * FEATURES] * STEPS, "NaN"),
        ([["a"] * FEATURES] * STEPS, "only numbers"),
        ({"other": good}, "expected a tensor"),
        ("text", "not str"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            runtime.decode(payload)


def test_variable_length_items_run_one_by_one(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    model.save(tmp_path / "var.keras")
    runtime = _loaded(tmp_path, "var.keras")
    a, b = np.ones((5, 3), np.float32), np.ones((8, 3), np.float32)
    out = runtime.predict([runtime.decode(a), runtime.decode(b)])
    np.testing.assert_allclose(out[0], _numpy(model(a[None], training=False))[0], atol=1e-6)
    np.testing.assert_allclose(out[1], _numpy(model(b[None], training=False))[0], atol=1e-6)


@pytest.mark.parametrize("artifact", ["lambda.keras", "lambda.h5"])
def test_lambda_layers_need_trust(tmp_path: Path, artifact: str) -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda t: t * 2.0)])
    model.save(tmp_path / artifact)
    with pytest.raises(UnsafeArtifact, match="code that would run on load"):
        _loaded(tmp_path, artifact)
    runtime = _loaded(tmp_path, artifact, trusted=True)
    [out] = runtime.predict([runtime.decode([1.0, 2.0, 3.0])])
    np.testing.assert_allclose(out, [2.0, 4.0, 6.0])


def test_wrong_suffix_and_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "model.pb").write_bytes(b"x")
    with pytest.raises(ConfigurationError, match=r"\.keras, \.h5 or \.hdf5"):
        _loaded(tmp_path, "model.pb")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(Exception, match="keras runtime could not load") as info:
        _loaded(tmp_path, "broken.keras")
    assert info.value.__class__.__name__ == "ModelLoadError"


def test_missing_backend_names_the_fix(tmp_path: Path) -> None:
    if subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True).returncode == 0:
        pytest.skip("TensorFlow is installed: Keras' default backend loads")
    code = textwrap.dedent(
        """
        from pathlib import Path
        from mlgate.errors import ConfigurationError
        from mlgate.runtimes.base import LoadContext
        from mlgate.runtimes.keras import KerasRuntime
        from mlgate.types import Manifest
        try:
            KerasRuntime().load(LoadContext(Path("."), Manifest(runtime="keras", artifact="m.keras")))
        except ConfigurationError as exc:
            print(exc)
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "KERAS_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert "KERAS_BACKEND=torch" in result.stdout, result.stdout + result.stderr
