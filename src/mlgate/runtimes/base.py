"""The model runtime contract.

A runtime is a small synchronous adapter around one inference library::

    runtime = SklearnRuntime()
    runtime.load(LoadContext(artifact_dir, manifest, trusted=False))
    x = runtime.decode({"inputs": [1.0, 2.0]})      # InvalidInput on bad input, before batching
    [y] = runtime.predict([x])                      # always a batch: same length, same order
    runtime.encode(y)                               # -> JSON-able

Batching, concurrency, timeouts, metrics and capture live around it (dataplane,
batching, executor), never inside it. Heavy libraries are imported inside ``load``; a
missing one raises :class:`ConfigurationError` naming the pip extra.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from mlgate.errors import ConfigurationError, InvalidInput, ModelLoadError, exception_summary
from mlgate.types import Manifest

__all__ = [
    "LoadContext",
    "ModelRuntime",
    "import_optional",
    "numeric_array",
    "oip_datatype",
    "single_value",
    "tensor_rows",
]


@dataclass(frozen=True, slots=True)
class LoadContext:
    """What a runtime gets to load one version: its local files, manifest and trust."""

    artifact_dir: Path
    manifest: Manifest
    #: True when code-executing formats (pickle, joblib) may be loaded: the version is marked
    #: trusted or its sha256 is pinned in settings.
    trusted: bool = False

    @property
    def artifact_path(self) -> Path:
        return self.artifact_dir / self.manifest.artifact

    @property
    def params(self) -> dict[str, Any]:
        return self.manifest.params


class ModelRuntime(ABC):
    """Base class of every runtime adapter (see the module docstring for the contract)."""

    #: registry name used in manifests
    name: ClassVar[str]
    #: True when ``decode`` does real work (image decoding, resizing): the dataplane then runs
    #: it on a worker thread instead of the event loop.
    heavy_decode: ClassVar[bool] = False

    @abstractmethod
    def load(self, ctx: LoadContext) -> None:
        """Load the artifact; raise :class:`ModelLoadError`/:class:`UnsafeArtifact` on failure."""

    @abstractmethod
    def decode(self, payload: Any) -> Any:
        """Validate one request's payload into one batch item; raise :class:`InvalidInput`."""

    @abstractmethod
    def predict(self, batch: list[Any]) -> list[Any]:
        """Predict a batch of decoded items; return one output per item, in order."""

    def units(self, payload: Any) -> int:
        """What one request's ``payload`` costs, in plan units, counted *before* decoding it
        (cheap, syntactic): 1, or the rows a multi-row input asks for (a tabular model's list of
        records). ``decode`` must refuse a payload that would serve more than this."""
        return 1

    def encode(self, output: Any) -> Any:
        """Turn one output into JSON-able data (numpy arrays become lists).

        **One output shape rule for every runtime's native answer**: an item's output is the
        model's output for that item, its batch dimension removed; a row of exactly one number
        is that number. So the same regressor answers ``185.08`` whether it is scikit-learn
        (1-D ``predict``), ONNX (an ``[N, 1]`` output) or Keras (``Dense(1)``); a row of several
        values stays a list. The Open Inference Protocol keeps the tensors' shapes.
        """
        return to_jsonable(single_value(output))

    def metadata(self) -> dict[str, Any]:
        """Describe inputs/outputs for ``GET /v2/models/{name}``: ``{"inputs": [...], "outputs": [...]}``."""
        return {"inputs": [], "outputs": []}

    def warmup_input(self) -> Any | None:
        """A decoded item to run once at load time, or None to skip warm-up."""
        return None

    def decode_tensors(self, tensors: dict[str, np.ndarray]) -> list[Any]:
        """Open Inference Protocol input: split the (single) named tensor into batch rows."""
        if len(tensors) != 1:
            raise InvalidInput(f"runtime '{self.name}' takes exactly one input tensor, got {len(tensors)}")
        (array,) = tensors.values()
        # A numeric row is an ndarray (or a numpy scalar); a 1-D BYTES tensor's rows are str/bytes
        return [
            self.decode(row.tolist() if isinstance(row, np.ndarray | np.generic) else row)
            for row in tensor_rows(array)
        ]

    def encode_tensors(self, outputs: list[Any]) -> dict[str, np.ndarray]:
        """Open Inference Protocol output: stack the batch's outputs into one tensor."""
        return {"output_0": np.asarray([np.asarray(o) for o in outputs])}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (sessions, threads) when the version is unloaded."""


def tensor_rows(array: np.ndarray) -> list[np.ndarray]:
    if array.ndim == 0:
        raise InvalidInput("input tensor must have a batch dimension")
    return list(array)


def numeric_array(payload: Any, *, dtype: Any = np.float64, what: str = "input") -> np.ndarray:
    """Validate a number or (nested) list/array of numbers into a finite ndarray of ``dtype``.

    Raises :class:`InvalidInput` for ragged lists, strings, ``None``, booleans (unless ``dtype``
    is bool), NaN/inf, and values that do not fit an integer ``dtype``.
    """
    target = np.dtype(dtype)
    if isinstance(payload, np.ndarray):
        array = payload
    elif isinstance(payload, list | tuple | int | float | np.generic):
        if target.kind != "b" and _contains_bool(payload):
            raise InvalidInput(f"{what} must contain numbers, not booleans")
        try:
            array = np.asarray(payload)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(f"{what} is ragged or not numeric: lists must be rectangular") from exc
    else:
        raise InvalidInput(f"{what} must be a number or a list of numbers, not {type(payload).__name__}")
    kind = array.dtype.kind
    if target.kind == "b":
        if kind != "b":
            raise InvalidInput(f"{what} must contain booleans")
        return array.astype(target, copy=False)
    if kind not in "iuf":
        raise InvalidInput(f"{what} must contain only numbers")
    if kind == "f" and not np.isfinite(array).all():
        raise InvalidInput(f"{what} contains NaN or infinity")
    if array.dtype == target:
        return array  # already checked finite, nothing to convert (the common decoded row)
    if target.kind in "iu":
        if kind == "f" and not np.all(array == np.trunc(array)):
            raise InvalidInput(f"{what} must contain whole numbers")
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InvalidInput(f"{what} has values outside the {target.name} range")
        return array.astype(target, copy=False)
    with np.errstate(over="ignore"):
        result = array.astype(target, copy=False)
    if not np.all(np.isfinite(result)):
        raise InvalidInput(f"{what} has values too large for {target.name}")
    return result


def _contains_bool(value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return True
    if isinstance(value, list | tuple):
        if value and isinstance(value[0], list | tuple):
            return any(_contains_bool(v) for v in value)
        return bool in map(type, value) or np.bool_ in map(type, value)
    return False


def single_value(value: Any) -> Any:
    """An output row (an array) of exactly one number as that number (see :meth:`ModelRuntime.encode`);
    lists a runtime builds on purpose (a tabular model's list of answers) are left alone."""
    if isinstance(value, np.ndarray) and value.shape == (1,) and value.dtype.kind in "iuf":
        return value.item()
    return value


def to_jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


_OIP_DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}


def oip_datatype(dtype: Any) -> str:
    """Open Inference Protocol datatype of a numpy dtype: ``float32`` -> ``"FP32"``; text -> ``"BYTES"``."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        return "BYTES"
    return _OIP_DATATYPES.get(name, "BYTES")


def import_optional(module: str, *, extra: str) -> ModuleType:
    """Import a heavy optional library, naming the pip extra when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"runtime needs '{module}', which is not installed: pip install 'mlgate[{extra}]'"
        ) from exc


def load_failed(runtime: str, exc: BaseException) -> ModelLoadError:
    """The client's error for a library that could not load an artifact: the library's message
    summarised (no paths, one line). Raise it ``from exc``: the data plane logs the whole chain."""
    return ModelLoadError(f"{runtime} runtime could not load the artifact: {exception_summary(exc)}")
