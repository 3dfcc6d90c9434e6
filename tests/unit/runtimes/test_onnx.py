from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from mlgate.errors import ConfigurationError, InvalidInput, ModelLoadError
from mlgate.runtimes.onnx import OnnxRuntime
from tests.unit.runtimes.artifacts import load_context, onnx_linear, onnx_tiny_conv, regression_data


def _loaded(folder: Path, artifact: str, **params: Any) -> OnnxRuntime:
    runtime = OnnxRuntime()
    runtime.load(load_context(folder, "onnx", artifact, params=params))
    return runtime


def _graph_model(folder: Path, name: str, nodes: list[Any], inputs: list[Any], outputs: list[Any]) -> str:
    model = helper.make_model(
        helper.make_graph(nodes, name, inputs, outputs), opset_imports=[helper.make_opsetid("", 13)]
    )
    model.ir_version = 8
    onnx.save(model, folder / f"{name}.onnx")
    return f"{name}.onnx"


def test_decode_checks_rank_fixed_dims_and_values(tmp_path: Path) -> None:
    onnx_linear(tmp_path, n_features=4)
    runtime = _loaded(tmp_path, "linear.onnx", threads=2)
    x = runtime.decode([1, 2, 3, 4])
    assert x.dtype == np.float32 and x.shape == (4,)
    assert runtime.decode({"inputs": [1, 2, 3, 4]}).shape == (4,)
    for payload, message in [
        ([[1, 2, 3, 4]], r"shape \[4\] \(without the batch dimension\), got \[1, 4\]"),
        ([1, 2, 3], r"got \[3\]"),
        ([1, 2, "3", 4], "only numbers"),
        ([1, 2, 3, float("nan")], "NaN"),
        ([1e39, 0, 0, 0], "too large for float32"),
        ({"Y": [1, 2, 3, 4]}, "expected a tensor"),
        ("1 2 3 4", "not str"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            runtime.decode(payload)


def test_bad_threads_param(tmp_path: Path) -> None:
    onnx_linear(tmp_path)
    with pytest.raises(ConfigurationError, match="threads"):
        _loaded(tmp_path, "linear.onnx", threads="4")


def test_corrupt_model_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ModelLoadError):
        _loaded(tmp_path, "broken.onnx")


def test_dynamic_batch_runs_once_and_splits_rows(tmp_path: Path) -> None:
    onnx_linear(tmp_path, n_features=4)
    runtime = _loaded(tmp_path, "linear.onnx")
    calls: list[int] = []
    run = runtime._session.run

    def counting_run(names: Any, feeds: dict[str, np.ndarray]) -> Any:
        calls.append(len(next(iter(feeds.values()))))
        return run(names, feeds)

    runtime._session.run = counting_run
    items = [runtime.decode([float(i), 0, 0, 0]) for i in range(4)]
    outputs = runtime.predict(items)
    assert calls == [4]
    assert [o.shape for o in outputs] == [(1,)] * 4
    assert outputs[3] == pytest.approx(runtime.predict([items[3]])[0])


def test_fixed_batch_of_one_runs_item_by_item(tmp_path: Path) -> None:
    onnx_tiny_conv(tmp_path, batch=1, size=8)
    runtime = _loaded(tmp_path, "conv.onnx")
    assert runtime.metadata()["inputs"][0]["shape"] == [1, 3, 8, 8]
    rng = np.random.default_rng(0)
    items = [runtime.decode(rng.normal(size=(3, 8, 8)).tolist()) for _ in range(3)]
    outputs = runtime.predict(items)
    assert [o.shape for o in outputs] == [(2,)] * 3
    np.testing.assert_allclose(outputs[1], runtime.predict([items[1]])[0], rtol=1e-6)


def test_classifier_with_zipmap_gives_named_outputs(tmp_path: Path) -> None:
    x, y = regression_data()
    model = to_onnx(LogisticRegression().fit(x, y > y.mean()), x[:1].astype(np.float32), target_opset=17)
    (tmp_path / "clf.onnx").write_bytes(model.SerializeToString())
    runtime = _loaded(tmp_path, "clf.onnx")
    outputs = runtime.predict([runtime.decode(row.tolist()) for row in x[:3]])
    assert set(outputs[0]) == {"output_label", "output_probability"}
    assert sum(outputs[0]["output_probability"].values()) == pytest.approx(1.0)
    orjson.dumps(runtime.encode(outputs[0]))
    tensors = runtime.encode_tensors(outputs)
    assert set(tensors) == {"output_label"}  # sequence-of-maps outputs have no OIP tensor form
    assert tensors["output_label"].shape == (3,)
    assert [o["name"] for o in runtime.metadata()["outputs"]] == ["output_label"]


def test_multi_input_model(tmp_path: Path) -> None:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2])
    b = helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 2])
    total = helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N", 2])
    nodes = [
        helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "bf"], ["total"]),
    ]
    runtime = _loaded(tmp_path, _graph_model(tmp_path, "add", nodes, [a, b], [total]))
    item = runtime.decode({"a": [0.5, 1.5], "b": [1, 2]})
    assert item["b"].dtype == np.int64
    outputs = runtime.predict([item, runtime.decode({"inputs": {"a": [0, 0], "b": [3, 4]}})])
    np.testing.assert_allclose(outputs[0], [1.5, 3.5])
    np.testing.assert_allclose(outputs[1], [3.0, 4.0])
    for payload, message in [
        ({"a": [0.5, 1.5]}, "inputs"),
        ({"a": [0.5, 1.5], "b": [1.5, 2]}, "whole numbers"),
        ({"a": [0.5, 1.5], "b": [1, 2**70]}, "only numbers"),
        ([0.5, 1.5], "inputs"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            runtime.decode(payload)
    rows = runtime.decode_tensors({"a": np.zeros((3, 2), np.float32), "b": np.ones((3, 2), np.int64)})
    assert len(rows) == 3
    with pytest.raises(InvalidInput, match="batch sizes"):
        runtime.decode_tensors({"a": np.zeros((3, 2), np.float32), "b": np.ones((2, 2), np.int64)})
    with pytest.raises(InvalidInput, match="input tensors"):
        runtime.decode_tensors({"a": np.zeros((3, 2), np.float32)})
    assert set(runtime.warmup_input()) == {"a", "b"}


def test_symbolic_inner_dims_are_free_and_unstackable_batches_still_work(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T"])
    runtime = _loaded(
        tmp_path, _graph_model(tmp_path, "neg", [helper.make_node("Neg", ["x"], ["y"])], [x], [y])
    )
    outputs = runtime.predict([runtime.decode([1.0, 2.0]), runtime.decode([3.0, 4.0, 5.0])])
    assert outputs[0].tolist() == [-1.0, -2.0]
    assert outputs[1].tolist() == [-3.0, -4.0, -5.0]
    assert runtime.metadata()["inputs"][0]["shape"] == [-1, -1]


def test_oip_tensors_round_trip(tmp_path: Path) -> None:
    onnx_linear(tmp_path, n_features=4)
    runtime = _loaded(tmp_path, "linear.onnx")
    rows = runtime.decode_tensors({"X": np.arange(8, dtype=np.float64).reshape(2, 4)})
    assert [r.dtype for r in rows] == [np.float32, np.float32]
    tensors = runtime.encode_tensors(runtime.predict(rows))
    assert tensors["variable"].shape == (2, 1)
    with pytest.raises(InvalidInput):
        runtime.decode_tensors({"X": np.zeros((2, 3))})
    with pytest.raises(InvalidInput, match="batch dimension"):
        runtime.decode_tensors({"X": np.float64(1.0)})  # type: ignore[dict-item]
    with pytest.raises(InvalidInput, match="exactly one"):
        runtime.decode_tensors({"X": np.zeros((1, 4)), "Z": np.zeros((1, 4))})
