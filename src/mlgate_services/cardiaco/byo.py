"""Bring your own LSTM: add the patients axis the ``cardiaco`` processor feeds.

The processor turns one request into one ``[patients, 20, 9]`` array, so a model version of
``cardiaco`` takes ``[batch, patients, 20, 9]`` and answers ``[batch, patients, 4]``
probabilities in :data:`~mlgate_services.cardiaco.processing.STATES` order. A usual sequence
classifier (like the original ``LSTM.h5``) takes ``[batch, 20, 9]`` and answers ``[batch, 4]``;
these helpers wrap it once, offline, without retraining::

    # Keras (.keras / .h5), with KERAS_BACKEND=torch and pip install 'mlgate[keras]'
    import keras
    from mlgate_services.cardiaco.byo import wrap_keras
    wrap_keras(keras.saving.load_model("LSTM.h5", compile=False)).save("cardiaco.keras")

    # ONNX, with pip install 'mlgate[train]' (the onnx package)
    import onnx
    from mlgate_services.cardiaco.byo import wrap_onnx
    onnx.save(wrap_onnx(onnx.load("lstm.onnx")), "cardiaco.onnx")

Then push ``cardiaco.keras`` (runtime ``keras``) or ``cardiaco.onnx`` (runtime ``onnx``) as a new
version of ``cardiaco``; the same pre-processing and response apply. The wrapped model must
output probabilities (end with a softmax), not logits, and expect inputs pre-processed exactly
as ``processing.py`` does (nine signs in its order, per-sequence standardisation).
"""

from __future__ import annotations

import importlib
from typing import Any

from mlgate_services.cardiaco.processing import SIGNS, WINDOW

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "wrap_keras", "wrap_onnx"]

INPUT_NAME = "vitals"
OUTPUT_NAME = "probabilities"
_PREFIX = "per_patient/"


def wrap_keras(model: Any) -> Any:
    """A Keras model ``[batch, patients, 20, 9] → [batch, patients, C]`` applying ``model`` per patient."""
    keras: Any = importlib.import_module("keras")  # untyped; the 'keras' extra
    vitals = keras.Input((None, WINDOW, len(SIGNS)), name=INPUT_NAME)
    return keras.Model(vitals, keras.layers.TimeDistributed(model, name="per_patient")(vitals))


def wrap_onnx(model: Any) -> Any:
    """An ONNX model ``[batch, patients, 20, 9] → [batch, patients, C]`` around a ``[n, 20, 9] → [n, C]`` one.

    The inner graph runs once on all patients of the batch (reshaped to ``[batch·patients, 20, 9]``);
    its nodes and initialisers are prefixed so no name can clash with the wrapper's.
    """
    import onnx
    from onnx import TensorProto, compose, helper

    graph = model.graph
    initialisers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(f"expected one input and one output, got {len(inputs)} and {len(graph.output)}")
    inner = compose.add_prefix(model, _PREFIX)
    inner_in = _PREFIX + inputs[0].name
    inner_out = _PREFIX + graph.output[0].name
    steps_features = helper.make_tensor(
        "wrap/steps_features", TensorProto.INT64, [3], [-1, WINDOW, len(SIGNS)]
    )
    minus_one = helper.make_tensor("wrap/minus_one", TensorProto.INT64, [1], [-1])
    starts = helper.make_tensor("wrap/starts", TensorProto.INT64, [1], [0])
    ends = helper.make_tensor("wrap/ends", TensorProto.INT64, [1], [2])
    nodes = [
        helper.make_node("Shape", [INPUT_NAME], ["wrap/shape"]),
        helper.make_node("Slice", ["wrap/shape", "wrap/starts", "wrap/ends"], ["wrap/batch_patients"]),
        helper.make_node("Reshape", [INPUT_NAME, "wrap/steps_features"], [inner_in]),
        *inner.graph.node,
        helper.make_node("Concat", ["wrap/batch_patients", "wrap/minus_one"], ["wrap/out_shape"], axis=0),
        helper.make_node("Reshape", [inner_out, "wrap/out_shape"], [OUTPUT_NAME]),
    ]
    elem = inputs[0].type.tensor_type.elem_type
    out_elem = graph.output[0].type.tensor_type.elem_type
    wrapped = helper.make_graph(
        nodes,
        "cardiaco_per_patient",
        [helper.make_tensor_value_info(INPUT_NAME, elem, ["batch", "patients", WINDOW, len(SIGNS)])],
        [helper.make_tensor_value_info(OUTPUT_NAME, out_elem, ["batch", "patients", None])],
        initializer=[*inner.graph.initializer, steps_features, minus_one, starts, ends],
    )
    out = helper.make_model(
        wrapped,
        opset_imports=list(model.opset_import),
        functions=list(inner.functions),
        producer_name="mlgate cardiaco byo",
    )
    out.ir_version = model.ir_version
    onnx.checker.check_model(out)
    return out
