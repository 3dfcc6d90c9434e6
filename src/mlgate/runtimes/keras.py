"""Keras 3 models: ``.keras`` archives and legacy ``.h5``/``.hdf5`` files (optional ``keras`` extra).

Each item is one example *without* the batch dimension, in the model input's dtype and shape
(``None`` dimensions are free, fixed ones are checked). Items of the same shape run as one
call; others run one by one::

    runtime = KerasRuntime()
    runtime.load(LoadContext(path, Manifest(runtime="keras", artifact="LSTM.h5")))
    [probs] = runtime.predict([runtime.decode(sequence_20x9)])     # the output's row

With one output an item's output is that output's row; with several, ``{output name: row}``.
Single-input models only (Sequential or functional; subclassed models without a known input
are refused at load).

**Backend.** Keras chooses its backend once, when first imported, from the ``KERAS_BACKEND``
environment variable (or ``~/.keras/keras.json``), defaulting to TensorFlow. The ``keras``
extra installs torch, not TensorFlow, so the server must run with ``KERAS_BACKEND=torch``
(``keras.config.set_backend`` cannot help: it re-imports Keras through that same variable).
This module does not set it (only ``mlgate.settings`` touches the environment); a missing
backend is a :class:`ConfigurationError` that says so.

**Safety.** Both formats can carry code: a ``Lambda`` layer's function is marshalled bytecode
(``.h5``) or a pickle (``.keras``). Untrusted versions load with ``safe_mode=True``, which refuses
it (:class:`UnsafeArtifact`); trusted versions load with ``safe_mode=False``. Keras before
3.13.1 did not enforce ``safe_mode`` everywhere (``.h5`` files ignored it: CVE-2025-9905), so
untrusted files are refused outright on older versions. Custom layers are not supported (no
``custom_objects``). Models load with ``compile=False``: inference needs no optimizer.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

from mlgate.errors import ConfigurationError, InvalidInput, UnsafeArtifact
from mlgate.runtimes.base import (
    LoadContext,
    ModelRuntime,
    import_optional,
    load_failed,
    numeric_array,
    oip_datatype,
    tensor_rows,
)

__all__ = ["SAFE_KERAS_VERSION", "KerasRuntime"]

_SUFFIXES = (".keras", ".h5", ".hdf5")
#: Oldest Keras that enforces ``safe_mode`` on both formats; older ones load untrusted files never.
SAFE_KERAS_VERSION = (3, 13, 1)
_CODE_REFUSAL = (
    "the Keras file holds code that would run on load (a Lambda layer or a custom object); "
    "mark the version trusted (models push --trusted) or pin its sha256 in MLGATE_TRUSTED_SHA256 to load it"
)


def _import_keras() -> ModuleType:
    try:
        return import_optional("keras", extra="keras")
    except ConfigurationError as exc:
        missing = getattr(exc.__cause__, "name", None) or ""
        if missing and missing.split(".")[0] != "keras":
            raise ConfigurationError(
                f"keras is installed but its configured backend needs '{missing}', which is not "
                "installed; the 'keras' extra ships torch: run the server with KERAS_BACKEND=torch "
                "(MLGATE_KERAS_BACKEND, default torch)"
            ) from exc
        raise


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _to_numpy(value: Any) -> np.ndarray:
    """A backend tensor as an ndarray (torch: detached, on the CPU)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


class KerasRuntime(ModelRuntime):
    """A Keras 3 model on its configured backend, batched along the first dimension."""

    name = "keras"

    def __init__(self) -> None:
        self._model: Any = None
        self._no_grad: Any = contextlib.nullcontext
        self._input_name = "input"
        self._dtype: np.dtype[Any] = np.dtype(np.float32)
        self._item_shape: tuple[int | None, ...] = ()
        #: (name, shape with the batch dimension, OIP datatype) per output
        self._outputs: list[tuple[str, tuple[int | None, ...], str]] = []

    def load(self, ctx: LoadContext) -> None:
        path = ctx.artifact_path
        if path.suffix.lower() not in _SUFFIXES:
            raise ConfigurationError(f"keras artifacts must be .keras, .h5 or .hdf5, not {path.name}")
        keras = _import_keras()
        if not ctx.trusted and _version(keras.__version__) < SAFE_KERAS_VERSION:
            wanted = ".".join(map(str, SAFE_KERAS_VERSION))
            raise UnsafeArtifact(
                f"keras {keras.__version__} does not enforce safe_mode on every format; install "
                f"keras>={wanted} (pip install 'mlgate[keras]') or mark the version trusted"
            )
        try:
            model = keras.saving.load_model(path, compile=False, safe_mode=not ctx.trusted)
        except Exception as exc:
            if not ctx.trusted and "safe_mode" in str(exc):
                raise UnsafeArtifact(_CODE_REFUSAL) from exc
            raise load_failed(self.name, exc) from exc
        try:
            inputs = list(model.inputs or [])
            outputs = list(model.outputs or [])
        except (AttributeError, ValueError) as exc:
            raise load_failed(self.name, exc) from exc
        if len(inputs) != 1 or not outputs:
            raise ConfigurationError(
                f"the keras runtime serves models with exactly one input and known outputs, "
                f"got {len(inputs)} inputs (subclassed models need a functional wrapper)"
            )
        spec = inputs[0]
        shape = tuple(spec.shape)
        if not shape:
            raise ConfigurationError("keras model input has no batch dimension")
        self._input_name = str(getattr(spec, "name", None) or "input")
        self._dtype = np.dtype(str(spec.dtype or "float32"))
        self._item_shape = tuple(d if isinstance(d, int) else None for d in shape[1:])
        names = list(getattr(model, "output_names", None) or [])
        if len(names) != len(outputs):
            names = [f"output_{i}" for i in range(len(outputs))]
        self._outputs = [
            (name, tuple(d if isinstance(d, int) else None for d in o.shape), oip_datatype(str(o.dtype)))
            for name, o in zip(names, outputs, strict=True)
        ]
        if keras.config.backend() == "torch":
            import torch  # the backend, already imported by keras

            self._no_grad = torch.no_grad
        self._model = model

    # -- decoding --------------------------------------------------------------------------

    def decode(self, payload: Any) -> np.ndarray:
        if isinstance(payload, Mapping):
            if len(payload) != 1 or next(iter(payload)) not in ("inputs", self._input_name):
                raise InvalidInput(f"expected a tensor or {{'{self._input_name}': tensor}}")
            payload = next(iter(payload.values()))
        return self._check(numeric_array(payload, dtype=self._dtype, what="input"))

    def decode_tensors(self, tensors: dict[str, np.ndarray]) -> list[Any]:
        if len(tensors) != 1:
            raise InvalidInput(f"expected exactly one input tensor, got {len(tensors)}")
        (array,) = tensors.values()
        return [
            self._check(numeric_array(row, dtype=self._dtype, what="input")) for row in tensor_rows(array)
        ]

    def _check(self, array: np.ndarray) -> np.ndarray:
        expected = self._item_shape
        if array.ndim != len(expected) or any(
            d is not None and d != a for d, a in zip(expected, array.shape, strict=True)
        ):
            want = "[" + ", ".join("?" if d is None else str(d) for d in expected) + "]"
            got = "[" + ", ".join(str(d) for d in array.shape) + "]"
            raise InvalidInput(f"input must have shape {want} (without the batch dimension), got {got}")
        return array

    # -- prediction ------------------------------------------------------------------------

    def predict(self, batch: list[Any]) -> list[Any]:
        if not batch:
            return []
        if len({x.shape for x in batch}) == 1:
            return self._run(np.stack(batch))
        return [self._run(x[None])[0] for x in batch]

    def _run(self, x: np.ndarray) -> list[Any]:
        with self._no_grad():
            raw = self._model(x, training=False)
        if isinstance(raw, Mapping):
            arrays = [_to_numpy(raw[name]) for name, _, _ in self._outputs]
        elif isinstance(raw, list | tuple):
            arrays = [_to_numpy(r) for r in raw]
        else:
            arrays = [_to_numpy(raw)]
        if len(arrays) == 1:
            return list(arrays[0])
        names = [name for name, _, _ in self._outputs]
        return [{n: a[i] for n, a in zip(names, arrays, strict=True)} for i in range(len(x))]

    def encode_tensors(self, outputs: list[Any]) -> dict[str, np.ndarray]:
        if outputs and isinstance(outputs[0], dict):
            return {name: np.stack([np.asarray(o[name]) for o in outputs]) for name, _, _ in self._outputs}
        return {
            self._outputs[0][0] if self._outputs else "output_0": np.stack([np.asarray(o) for o in outputs])
        }

    # -- description -----------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        return {
            "inputs": [
                {
                    "name": self._input_name,
                    "datatype": oip_datatype(self._dtype),
                    "shape": [-1, *(-1 if d is None else d for d in self._item_shape)],
                }
            ],
            "outputs": [
                {"name": name, "datatype": datatype, "shape": [-1 if d is None else d for d in shape]}
                for name, shape, datatype in self._outputs
            ],
        }

    def warmup_input(self) -> Any:
        return np.zeros(tuple(1 if d is None else d for d in self._item_shape), dtype=self._dtype)

    def close(self) -> None:
        self._model = None
