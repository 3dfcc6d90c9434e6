"""Model runtimes: adapters from one inference library to the :class:`ModelRuntime` contract.

The registry is an explicit dict; heavy libraries are imported inside each adapter's
``load``, so importing this package is cheap::

    runtime = create_runtime("onnx")          # ConfigurationError for an unknown name
    runtime.load(LoadContext(artifact_dir, manifest))
"""

from __future__ import annotations

from mlgate.errors import ConfigurationError
from mlgate.runtimes.base import LoadContext, ModelRuntime
from mlgate.runtimes.keras import KerasRuntime
from mlgate.runtimes.onnx import OnnxRuntime
from mlgate.runtimes.opencv_dnn import OpenCvDnnRuntime
from mlgate.runtimes.python import PythonRuntime
from mlgate.runtimes.sklearn import SklearnRuntime
from mlgate.runtimes.tflite import TfliteRuntime
from mlgate.runtimes.torchscript import TorchScriptRuntime
from mlgate.runtimes.yolo import YoloRuntime

__all__ = [
    "RUNTIMES",
    "LoadContext",
    "ModelRuntime",
    "OnnxRuntime",
    "OpenCvDnnRuntime",
    "PythonRuntime",
    "SklearnRuntime",
    "TfliteRuntime",
    "TorchScriptRuntime",
    "create_runtime",
]

#: Runtime name (``Manifest.runtime``) -> adapter class.
RUNTIMES: dict[str, type[ModelRuntime]] = {
    "sklearn": SklearnRuntime,
    "onnx": OnnxRuntime,
    "opencv-dnn": OpenCvDnnRuntime,
    "tflite": TfliteRuntime,
    "python": PythonRuntime,
    "keras": KerasRuntime,
    "yolo": YoloRuntime,
    "torchscript": TorchScriptRuntime,
}


def create_runtime(name: str) -> ModelRuntime:
    """A fresh, unloaded runtime registered under ``name``."""
    try:
        cls = RUNTIMES[name]
    except KeyError:
        known = ", ".join(sorted(RUNTIMES))
        raise ConfigurationError(f"unknown runtime {name!r}; known runtimes: {known}") from None
    return cls()
