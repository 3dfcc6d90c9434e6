"""ONNX models on onnxruntime's CPU provider.

Each item is one example *without* the batch dimension, in the input's dtype and shape
(symbolic dimensions are free, fixed ones are checked). When the model's batch dimension
is dynamic a whole batch runs as one ``session.run``; otherwise items run one by one::

    runtime = OnnxRuntime()
    runtime.load(LoadContext(path, Manifest(runtime="onnx", artifact="model.onnx")))
    [row] = runtime.predict([runtime.decode([1.0, 2.0, 3.0])])   # the output's row

Multi-input models take ``{"<input name>": value, ...}``. With one output an item's output
is that output's row; with several it is ``{output name: row}``.

Params: ``threads`` (intra-op threads, default 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlgate.errors import ConfigurationError, InvalidInput
from mlgate.runtimes.base import LoadContext, ModelRuntime, load_failed, numeric_array, oip_datatype

__all__ = ["OnnxRuntime"]

_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


@dataclass(frozen=True, slots=True)
class _Input:
    name: str
    dtype: np.dtype[Any]
    #: full model shape: ints are fixed, None marks a symbolic dimension
    shape: tuple[int | None, ...]
    #: "dynamic" (symbolic batch dim), "fixed" (batch dim of 1) or "none" (no batch dim)
    batch: str

    @property
    def item_shape(self) -> tuple[int | None, ...]:
        return self.shape if self.batch == "none" else self.shape[1:]

    @property
    def fixed_item_shape(self) -> tuple[int, ...] | None:
        """:attr:`item_shape` when no dimension is symbolic (an exact ``==`` check), else None."""
        shape = self.item_shape
        return None if any(d is None for d in shape) else tuple(d for d in shape if d is not None)

    def describe(self) -> str:
        return "[" + ", ".join("?" if d is None else str(d) for d in self.item_shape) + "]"


def _spec(node: Any) -> _Input:
    dtype = _DTYPES.get(node.type)
    if dtype is None:
        raise ConfigurationError(f"onnx input '{node.name}' has unsupported type {node.type}")
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (node.shape or []))
    if not shape:
        batch = "none"
    elif shape[0] is None:
        batch = "dynamic"
    else:
        batch = "fixed" if shape[0] == 1 else "none"
    return _Input(node.name, np.dtype(dtype), shape, batch)


class OnnxRuntime(ModelRuntime):
    """An onnxruntime ``InferenceSession`` on CPU, batched along a dynamic first dimension."""

    name = "onnx"

    def __init__(self) -> None:
        self._session: Any = None
        self._inputs: list[_Input] = []
        self._row_shape: tuple[int, ...] | None = None  # the one input's shape, when fully fixed
        self._outputs: list[tuple[str, str, list[Any]]] = []

    def load(self, ctx: LoadContext) -> None:
        import onnxruntime as ort  # a core dependency, imported lazily to keep startup light

        threads = ctx.params.get("threads", 1)
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
            raise ConfigurationError("onnx param 'threads' must be a non-negative integer")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(
                str(ctx.artifact_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise load_failed(self.name, exc) from exc
        self._inputs = [_spec(node) for node in session.get_inputs()]
        if not self._inputs:
            raise ConfigurationError("onnx model has no inputs")
        self._row_shape = self._inputs[0].fixed_item_shape if len(self._inputs) == 1 else None
        self._outputs = [(o.name, o.type, list(o.shape or [])) for o in session.get_outputs()]
        self._session = session

    # -- decoding --------------------------------------------------------------------------

    def decode(self, payload: Any) -> Any:
        if len(self._inputs) == 1:
            spec = self._inputs[0]
            if (
                type(payload) is np.ndarray
                and payload.dtype == spec.dtype
                and payload.shape == self._row_shape
            ):
                # A processor's row (the temperature window): already the tensor; only finiteness left.
                if payload.dtype.kind != "f" or np.isfinite(payload).all():
                    return payload
                raise InvalidInput(f"input '{spec.name}' contains NaN or infinity")
            if isinstance(payload, Mapping):
                if len(payload) != 1 or next(iter(payload)) not in ("inputs", spec.name):
                    raise InvalidInput(f"expected a tensor or {{'{spec.name}': tensor}}")
                payload = next(iter(payload.values()))
            return _decode_tensor(payload, spec)
        if isinstance(payload, Mapping) and set(payload) == {"inputs"}:
            payload = payload["inputs"]
        names = [s.name for s in self._inputs]
        if not isinstance(payload, Mapping) or set(payload) != set(names):
            raise InvalidInput(f"expected an object with the inputs {names}")
        return {s.name: _decode_tensor(payload[s.name], s) for s in self._inputs}

    def decode_tensors(self, tensors: dict[str, np.ndarray]) -> list[Any]:
        if len(self._inputs) == 1:
            if len(tensors) != 1:
                raise InvalidInput(f"expected exactly one input tensor, got {len(tensors)}")
            spec = self._inputs[0]
            (array,) = tensors.values()
            if spec.batch == "none":
                return [_decode_tensor(array, spec)]
            return [_decode_tensor(row, spec) for row in _rows(array)]
        names = {s.name for s in self._inputs}
        if set(tensors) != names:
            raise InvalidInput(f"expected the input tensors {sorted(names)}, got {sorted(tensors)}")
        if any(s.batch == "none" for s in self._inputs):
            return [self.decode(dict(tensors))]
        rows = {name: _rows(array) for name, array in tensors.items()}
        sizes = {len(r) for r in rows.values()}
        if len(sizes) != 1:
            raise InvalidInput("input tensors have different batch sizes")
        return [
            {s.name: _decode_tensor(rows[s.name][i], s) for s in self._inputs} for i in range(sizes.pop())
        ]

    # -- prediction ------------------------------------------------------------------------

    def predict(self, batch: list[Any]) -> list[Any]:
        if not batch:
            return []
        if len(batch) > 1 and len(self._inputs) == 1 and self._inputs[0].batch == "dynamic":
            stacked = self._run_stacked_single(batch)
            if stacked is not None:
                return stacked
        items = [self._feeds(x) for x in batch]
        if len(items) > 1 and all(s.batch == "dynamic" for s in self._inputs):
            stacked = self._run_stacked(items)
            if stacked is not None:
                return stacked
        return [self._run_one(feeds) for feeds in items]

    def _run_stacked_single(self, batch: list[Any]) -> list[Any] | None:
        """One input, rows of one shape (the common case): one stack, one run, rows split in C."""
        first = batch[0]
        if isinstance(first, dict):
            return None
        shape = first.shape
        if any(x.shape != shape for x in batch):
            return None
        outputs = self._session.run(None, {self._inputs[0].name: np.stack(batch)})
        n = len(batch)
        if not all(_length(out) == n for out in outputs):
            return None
        if len(outputs) == 1:
            return list(outputs[0])  # iterating an array yields its rows
        return [self._pack([out[i] for out in outputs]) for i in range(n)]

    def _feeds(self, item: Any) -> dict[str, np.ndarray]:
        if isinstance(item, dict):
            return item
        return {self._inputs[0].name: item}

    def _run_stacked(self, items: list[dict[str, np.ndarray]]) -> list[Any] | None:
        feeds = {}
        for s in self._inputs:
            arrays = [f[s.name] for f in items]
            if len({a.shape for a in arrays}) != 1:  # symbolic non-batch dims differ: no stacking
                return None
            feeds[s.name] = np.stack(arrays)
        outputs = self._session.run(None, feeds)
        n = len(items)
        if not all(_length(out) == n for out in outputs):
            return None
        return [self._pack([out[i] for out in outputs]) for i in range(n)]

    def _run_one(self, feeds: dict[str, np.ndarray]) -> Any:
        batched = {s.name: feeds[s.name] if s.batch == "none" else feeds[s.name][None] for s in self._inputs}
        outputs = self._session.run(None, batched)
        if all(s.batch == "none" for s in self._inputs):
            return self._pack(list(outputs))
        return self._pack([out[0] if _length(out) == 1 else out for out in outputs])

    def _pack(self, values: list[Any]) -> Any:
        if len(values) == 1:
            return values[0]
        return {name: value for (name, _, _), value in zip(self._outputs, values, strict=True)}

    def encode_tensors(self, outputs: list[Any]) -> dict[str, np.ndarray]:
        """Stack each tensor output over the batch; sequence/map outputs are left out."""
        result: dict[str, np.ndarray] = {}
        for name, kind, _ in self._outputs:
            if not kind.startswith("tensor("):
                continue
            rows = [o[name] if isinstance(o, dict) else o for o in outputs]
            result[name] = np.stack([np.asarray(r) for r in rows])
        return result

    # -- description -----------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        inputs = [
            {
                "name": s.name,
                "datatype": oip_datatype(s.dtype),
                "shape": [-1 if d is None else d for d in s.shape],
            }
            for s in self._inputs
        ]
        outputs = [
            {
                "name": name,
                "datatype": oip_datatype(_DTYPES[kind]) if kind in _DTYPES else "BYTES",
                "shape": [d if isinstance(d, int) and d >= 0 else -1 for d in shape],
            }
            for name, kind, shape in self._outputs
            if kind.startswith("tensor(")
        ]
        return {"inputs": inputs, "outputs": outputs}

    def warmup_input(self) -> Any:
        arrays = {
            s.name: np.full(
                tuple(1 if d is None else d for d in s.item_shape), "" if s.dtype.kind == "O" else 0, s.dtype
            )
            for s in self._inputs
        }
        return arrays if len(arrays) > 1 else next(iter(arrays.values()))

    def close(self) -> None:
        self._session = None


def _length(output: Any) -> int | None:
    if isinstance(output, np.ndarray):
        return len(output) if output.ndim else None
    return len(output) if isinstance(output, list) else None


def _rows(array: np.ndarray) -> list[np.ndarray]:
    array = np.asarray(array)
    if array.ndim == 0:
        raise InvalidInput("input tensor must have a batch dimension")
    return list(array)


def _decode_tensor(value: Any, spec: _Input) -> np.ndarray:
    what = f"input '{spec.name}'"
    if spec.dtype.kind == "O":
        array = _string_array(value, what)
    else:
        array = numeric_array(value, dtype=spec.dtype, what=what)
    expected = spec.item_shape
    if array.ndim != len(expected) or any(
        d is not None and d != a for d, a in zip(expected, array.shape, strict=True)
    ):
        got = "[" + ", ".join(str(d) for d in array.shape) + "]"
        raise InvalidInput(
            f"{what} must have shape {spec.describe()} (without the batch dimension), got {got}"
        )
    return array


def _string_array(value: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=object)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{what} is ragged: lists must be rectangular") from exc
    flat = array.reshape(-1)
    if not all(isinstance(v, str) for v in flat):
        raise InvalidInput(f"{what} must contain only strings")
    return array
