"""Bring your own LSTM: plain ``[n, 20, 9] → [n, 4]`` Keras and ONNX models, wrapped, behind the processor."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mlgate.runtimes import create_runtime
from mlgate.runtimes.base import LoadContext, ModelRuntime
from mlgate.types import Manifest
from mlgate_services.cardiaco import generator
from mlgate_services.cardiaco.byo import INPUT_NAME, wrap_keras, wrap_onnx
from mlgate_services.cardiaco.processing import SIGNS, STATES, WINDOW, preprocess
from mlgate_services.cardiaco.service import CardiacProcessor


def _serve(runtime: ModelRuntime, record: dict[str, Any]) -> Any:
    processor = CardiacProcessor()
    [y] = runtime.predict([runtime.decode(processor.decode(record))])
    return processor.encode(runtime.encode(y))


def _loaded(folder: Path, runtime_name: str, artifact: str) -> ModelRuntime:
    runtime = create_runtime(runtime_name)
    runtime.load(LoadContext(folder, Manifest(runtime=runtime_name, artifact=artifact)))
    return runtime


def _plain_onnx(weights: np.ndarray) -> onnx.ModelProto:
    """``[n, 20, 9]`` → max over time → MatMul → softmax ``[n, 4]``: outputs known exactly."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["x"], ["pooled"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["p"], axis=-1),
        ],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", WINDOW, len(SIGNS)])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["n", len(STATES)])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.ravel().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_wrapped_onnx_model_serves_several_patients(tmp_path: Path) -> None:
    weights = np.random.default_rng(0).normal(size=(len(SIGNS), len(STATES))).astype(np.float32)
    onnx.save(wrap_onnx(_plain_onnx(weights)), tmp_path / "cardiaco.onnx")
    runtime = _loaded(tmp_path, "onnx", "cardiaco.onnx")
    assert runtime.metadata()["inputs"][0]["name"] == INPUT_NAME
    patients = generator.generate(3, seed=12)
    record = generator.to_record(patients)
    out = _serve(runtime, record)
    x = preprocess(record).x.astype(np.float64)
    logits = x.max(axis=1) @ weights
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert [o["idAtencion"] for o in out] == [p.id for p in patients]
    for o, row in zip(out, expected, strict=True):
        assert list(o["inferences"].values()) == pytest.approx([round(float(v), 2) for v in row], abs=0.0101)
        assert o["State"] == STATES[int(row.argmax())]


def test_wrap_onnx_refuses_several_inputs() -> None:
    model = _plain_onnx(np.zeros((len(SIGNS), len(STATES)), np.float32))
    model.graph.input.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1]))
    with pytest.raises(ValueError, match="one input"):
        wrap_onnx(model)


def test_wrapped_keras_lstm_serves_through_the_keras_runtime(tmp_path: Path) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras reads it once, at import
    keras = pytest.importorskip(
        "keras", reason="the 'keras' extra is not installed (pip install 'mlgate[keras]')"
    )
    keras.utils.set_random_seed(0)
    plain = keras.Sequential(
        [
            keras.Input((WINDOW, len(SIGNS))),
            keras.layers.LSTM(8),
            keras.layers.Dense(len(STATES), activation="softmax"),
        ]
    )
    plain.save(tmp_path / "LSTM.h5")  # the original service's format
    original = keras.saving.load_model(tmp_path / "LSTM.h5", compile=False)
    wrap_keras(original).save(tmp_path / "cardiaco.keras")
    runtime = _loaded(tmp_path, "keras", "cardiaco.keras")  # untrusted: no code inside
    patients = generator.generate(3, seed=13)
    record = generator.to_record(patients)
    out = _serve(runtime, record)
    x = preprocess(record).x
    expected = plain(x, training=False).detach().cpu().numpy()
    assert [o["idAtencion"] for o in out] == [p.id for p in patients]
    for o, row in zip(out, expected, strict=True):
        assert list(o["inferences"].values()) == pytest.approx([round(float(v), 2) for v in row], abs=0.011)
        assert o["State"] == STATES[int(row.argmax())]
    single = _serve(runtime, generator.to_record(patients[:1]))
    assert isinstance(single, dict) and single["idAtencion"] == patients[0].id
