"""PyTorch models exported as TorchScript (``torch.jit.script``/``trace`` + ``save``), on CPU.

A TorchScript archive holds the model's code as TorchScript (not Python) and its tensors;
``torch.jit.load`` runs no arbitrary Python, so it needs no trust. A plain pickled model
(``torch.save(model)``) does execute code on load: it is refused unless the version is
trusted (then ``torch.load(..., weights_only=False)``) — export it instead::

    scripted = torch.jit.script(model)           # or torch.jit.trace(model, example)
    scripted.save("model.pt")
    # manifest: {"runtime": "torchscript", "artifact": "model.pt", "params": {"input_shape": [3]}}

Each item is one example without the batch dimension; a batch runs as one forward pass on
the stacked items (same shape). With one output tensor an item's output is its row; with a
tuple of tensors, a list of rows; with a dict, ``{name: row}``. Same rule as the ONNX runtime.

Params: ``dtype`` (input dtype, default ``float32``), ``input_shape`` (an item's shape: checked
on decode, and used for a warm-up forward pass at load), ``threads`` (torch's intra-op threads,
default 1 — process-wide, as torch allows).
Needs ``pip install 'mlgate[torch]'`` (torch is pinned: an unpinned torch pulls a CUDA build).
torch 2.13 deprecates TorchScript in favour of ``torch.export`` (its warning is silenced on
load): for new models prefer an ONNX export, which needs no torch at serving time.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.errors import ConfigurationError, InvalidInput, PredictionFailed, UnsafeArtifact
from mlgate.runtimes.base import (
    LoadContext,
    ModelRuntime,
    import_optional,
    load_failed,
    numeric_array,
    oip_datatype,
)

__all__ = ["TorchScriptRuntime", "is_torchscript"]

_DTYPES = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "int32": np.int32}


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with TorchScript code), not a pickled model."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(name.split("/", 2)[1:2] == ["code"] for name in names if name.count("/") >= 2)


class TorchScriptRuntime(ModelRuntime):
    """A TorchScript module in eval mode, batched by stacking items along a new first axis."""

    name = "torchscript"

    def __init__(self) -> None:
        self._torch: Any = None
        self._module: Any = None
        self._dtype: np.dtype[Any] = np.dtype(np.float32)
        self._shape: tuple[int, ...] | None = None

    def load(self, ctx: LoadContext) -> None:
        torch = import_optional("torch", extra="torch")
        params = ctx.params
        dtype = params.get("dtype", "float32")
        if dtype not in _DTYPES:
            raise ConfigurationError(f"torchscript param 'dtype' must be one of {', '.join(_DTYPES)}")
        self._dtype = np.dtype(_DTYPES[dtype])
        shape = params.get("input_shape")
        if shape is not None:
            if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
                raise ConfigurationError(
                    "torchscript param 'input_shape' must be a list of positive integers"
                )
            self._shape = tuple(shape)
        threads = params.get("threads", 1)
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ConfigurationError("torchscript param 'threads' must be a positive integer")
        torch.set_num_threads(threads)
        path = ctx.artifact_path
        try:
            if is_torchscript(path):
                with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript for torch.export
                    warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
                    module = torch.jit.load(str(path), map_location="cpu")
            elif ctx.trusted:
                module = torch.load(str(path), map_location="cpu", weights_only=False)
            else:
                raise UnsafeArtifact(
                    f"'{ctx.manifest.artifact}' is a pickled PyTorch model (torch.save), and loading it "
                    "executes code: export it with torch.jit.script/trace and save that (or to ONNX), "
                    "or mark the version trusted (--trusted)"
                )
        except UnsafeArtifact:
            raise
        except Exception as exc:
            raise load_failed(self.name, exc) from exc
        if not callable(module):
            raise ConfigurationError("the artifact is not a PyTorch module")
        module.eval()
        self._torch, self._module = torch, module

    def decode(self, payload: Any) -> Any:
        if isinstance(payload, dict) and "inputs" in payload:
            payload = payload["inputs"]
        array = numeric_array(payload, dtype=self._dtype)
        if self._shape is not None and array.shape != self._shape:
            raise InvalidInput(f"input must have shape {list(self._shape)}, got {list(array.shape)}")
        return array

    def predict(self, batch: list[Any]) -> list[Any]:
        torch = self._torch
        shapes = {item.shape for item in batch}
        groups = [batch] if len(shapes) == 1 else [[item] for item in batch]
        out: list[Any] = []
        with torch.inference_mode():
            for group in groups:
                result = self._module(torch.from_numpy(np.stack(group)))
                out.extend(_rows(result, len(group)))
        return out

    def warmup_input(self) -> Any | None:
        return None if self._shape is None else np.zeros(self._shape, dtype=self._dtype)

    def metadata(self) -> dict[str, Any]:
        shape = [-1, *self._shape] if self._shape is not None else [-1]
        return {
            "inputs": [{"name": "input_0", "datatype": oip_datatype(self._dtype), "shape": shape}],
            "outputs": [],
        }


def _rows(result: Any, n: int) -> list[Any]:
    """One output per item from a forward pass's tensor, tuple/list of tensors or dict of tensors."""
    if isinstance(result, tuple | list):
        parts = [_rows(r, n) for r in result]
        return [[p[i] for p in parts] for i in range(n)]
    if isinstance(result, dict):
        named = {str(k): _rows(v, n) for k, v in result.items()}
        return [{k: v[i] for k, v in named.items()} for i in range(n)]
    array = result.detach().cpu().numpy()
    if array.ndim == 0 or array.shape[0] != n:
        raise PredictionFailed(
            f"the model returned {list(array.shape)} for a batch of {n}: no batch dimension"
        )
    return list(array)
