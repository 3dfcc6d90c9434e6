"""One output shape rule for the native API: the same regressor answers one number in any format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LinearRegression

from mlgate.runtimes import create_runtime
from mlgate.runtimes.base import LoadContext
from mlgate.types import Manifest


def _answer(runtime_name: str, path: Path, row: list[float]) -> object:
    runtime = create_runtime(runtime_name)
    runtime.load(LoadContext(path.parent, Manifest(runtime=runtime_name, artifact=path.name)))
    [output] = runtime.predict([runtime.decode(row)])
    return runtime.encode(output)


def test_skops_and_onnx_exports_of_one_regressor_answer_the_same_number(tmp_path: Path) -> None:
    skl2onnx = pytest.importorskip("skl2onnx")
    from skl2onnx.common.data_types import FloatTensorType

    x = np.random.default_rng(0).normal(size=(50, 3))
    model = LinearRegression().fit(x, x @ [1.0, 2.0, 3.0] + 0.5)
    sio.dump(model, tmp_path / "m.skops")
    onx = skl2onnx.convert_sklearn(model, initial_types=[("x", FloatTensorType([None, 3]))])
    (tmp_path / "m.onnx").write_bytes(onx.SerializeToString())
    row = [1.0, 1.0, 1.0]
    from_skops = _answer("sklearn", tmp_path / "m.skops", row)
    from_onnx = _answer("onnx", tmp_path / "m.onnx", row)
    assert isinstance(from_skops, float) and isinstance(from_onnx, float)  # not [6.5]
    assert from_onnx == pytest.approx(from_skops, rel=1e-5)
    assert from_skops == pytest.approx(6.5)


def test_rows_of_several_values_stay_lists() -> None:
    runtime = create_runtime("onnx")
    assert runtime.encode(np.array([0.25, 0.75])) == [0.25, 0.75]
    assert runtime.encode(np.array([[1.0]])) == [[1.0]]
    assert runtime.encode([1.0]) == [1.0]  # a list a runtime built on purpose is kept
