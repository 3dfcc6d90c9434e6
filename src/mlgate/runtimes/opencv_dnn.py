"""Image networks on OpenCV's DNN module (TensorFlow frozen graphs or ONNX).

Each item is one image: an HxWx3 uint8 BGR array, raw JPEG/PNG/WebP bytes or base64 text.
A batch becomes one ``cv2.dnn.blobFromImages`` and one ``net.forward``; each item's output
is what ``forward`` would return for that image alone, with the original size so
post-processing can map normalised boxes back to pixels::

    {"output": ndarray, "height": 480, "width": 640}

Outputs are split along their first axis. SSD-style detection outputs (``[1, 1, N, 7]``,
column 0 = image index) run one image per forward instead: OpenCV 5.0's batched
DetectionOutput mislabels and truncates rows (seen: 41-209 of 100 rows per image), and a
batched SSD forward is no faster on CPU anyway.

Params: ``framework`` ("tensorflow" | "onnx", default from the artifact suffix),
``config`` (.pbtxt path relative to the version, TensorFlow only), ``size`` [w, h]
(required), ``scale`` (1.0), ``mean`` [3] (0), ``swap_rb`` (false), ``crop`` (false),
``max_pixels`` (decoded image limit), ``threads`` (sets OpenCV's *process-wide* thread count).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.errors import ConfigurationError, InvalidInput
from mlgate.runtimes.base import LoadContext, ModelRuntime, import_optional, load_failed, oip_datatype
from mlgate.runtimes.images import DEFAULT_MAX_PIXELS, decode_image_input, image_tensor_metadata

__all__ = ["OpenCvDnnRuntime"]


class OpenCvDnnRuntime(ModelRuntime):
    """A ``cv2.dnn.Net`` on CPU; ``net.forward`` runs under a lock (the net is stateful)."""

    name = "opencv-dnn"
    heavy_decode = True

    def __init__(self) -> None:
        self._cv2: Any = None
        self._net: Any = None
        self._out_names: list[str] = []
        self._lock = threading.Lock()
        self._batchable = True
        self._size = (0, 0)
        self._scale = 1.0
        self._mean = (0.0, 0.0, 0.0)
        self._swap_rb = False
        self._crop = False
        self._max_pixels = DEFAULT_MAX_PIXELS
        #: one image's outputs as the net gives them (shape, dtype), seen at warm-up: the metadata's
        self._seen: list[tuple[tuple[int, ...], str]] | None = None

    def load(self, ctx: LoadContext) -> None:
        cv2 = import_optional("cv2", extra="opencv")
        p = ctx.params
        self._size = _size(p.get("size"))
        self._scale = _number(p.get("scale", 1.0), "scale")
        mean = p.get("mean", [0.0, 0.0, 0.0])
        if not isinstance(mean, list | tuple) or len(mean) != 3:
            raise ConfigurationError("opencv-dnn param 'mean' must be a list of 3 numbers")
        self._mean = (_number(mean[0], "mean"), _number(mean[1], "mean"), _number(mean[2], "mean"))
        self._swap_rb = _flag(p.get("swap_rb", False), "swap_rb")
        self._crop = _flag(p.get("crop", False), "crop")
        self._max_pixels = _count(p.get("max_pixels", DEFAULT_MAX_PIXELS), "max_pixels", minimum=1)
        threads = p.get("threads")
        if threads is not None:
            threads = _count(threads, "threads", minimum=0)
        suffix = ctx.artifact_path.suffix.lower()
        framework = p.get("framework", "tensorflow" if suffix == ".pb" else "onnx")
        try:
            if framework == "tensorflow":
                config = p.get("config")
                args = [str(ctx.artifact_path)]
                if config is not None:
                    args.append(str(_inside(ctx.artifact_dir, config)))
                if not hasattr(cv2.dnn, "readNetFromTensorflow"):
                    raise RuntimeError(
                        f"OpenCV {cv2.__version__} has no TensorFlow importer (removed in 5.1): "
                        "install opencv-python-headless<5.1 (mlgate[opencv]) or serve an ONNX export"
                    )
                net = cv2.dnn.readNetFromTensorflow(*args)
            elif framework == "onnx":
                net = cv2.dnn.readNetFromONNX(str(ctx.artifact_path))
            else:
                raise ConfigurationError(
                    f"opencv-dnn param 'framework' must be tensorflow or onnx: {framework!r}"
                )
        except ConfigurationError:
            raise
        except Exception as exc:
            raise load_failed(self.name, exc) from exc
        if threads is not None:
            cv2.setNumThreads(threads)
        self._out_names = list(net.getUnconnectedOutLayersNames())
        self._cv2, self._net = cv2, net

    def decode(self, payload: Any) -> np.ndarray:
        return decode_image_input(payload, max_pixels=self._max_pixels)

    def decode_tensors(self, tensors: dict[str, np.ndarray]) -> list[Any]:
        """One BYTES tensor of encoded images (str = base64) or one [N, H, W, 3] UINT8 tensor."""
        if len(tensors) != 1:
            raise InvalidInput(f"expected exactly one input tensor, got {len(tensors)}")
        (array,) = tensors.values()
        if array.ndim == 0:
            raise InvalidInput("input tensor must have a batch dimension")
        return [self.decode(np.asarray(row) if isinstance(row, np.ndarray) else row) for row in array]

    def predict(self, batch: list[Any]) -> list[Any]:
        if not batch:
            return []
        with self._lock:
            if self._batchable and len(batch) > 1:
                try:
                    parts = _split(self._forward(batch), len(batch))
                except self._cv2.error:
                    parts = None
                if parts is not None:
                    return [self._pack(p, img) for p, img in zip(parts, batch, strict=True)]
                self._batchable = False  # this net cannot batch: run images one by one from now on
            results = []
            for img in batch:
                outputs = self._forward([img])
                if any(_is_detections(o) for o in outputs):
                    self._batchable = False  # see the module docstring
                results.append(self._pack(outputs, img))
            return results

    def _forward(self, images: list[np.ndarray]) -> list[np.ndarray]:
        blob = self._cv2.dnn.blobFromImages(
            images, self._scale, self._size, self._mean, self._swap_rb, self._crop
        )
        self._net.setInput(blob)
        return [np.asarray(o) for o in self._net.forward(self._out_names)]

    def _pack(self, outputs: list[np.ndarray], image: np.ndarray) -> dict[str, Any]:
        if self._seen is None:
            self._seen = [(tuple(int(d) for d in o.shape), oip_datatype(o.dtype)) for o in outputs]
        output: Any = outputs[0] if len(outputs) == 1 else dict(zip(self._out_names, outputs, strict=True))
        return {"output": output, "height": int(image.shape[0]), "width": int(image.shape[1])}

    def encode_tensors(self, outputs: list[Any]) -> dict[str, np.ndarray]:
        result: dict[str, np.ndarray] = {}
        firsts = [o["output"] for o in outputs]
        if firsts and isinstance(firsts[0], dict):
            for name in self._out_names:
                result[name] = _concat([f[name] for f in firsts])
        else:
            result["output"] = _concat(firsts)
        result["height"] = np.asarray([o["height"] for o in outputs], dtype=np.int64)
        result["width"] = np.asarray([o["width"] for o in outputs], dtype=np.int64)
        return result

    def metadata(self) -> dict[str, Any]:
        """What :meth:`encode_tensors` returns: the net's output (``output``; its layer names when
        it has several) over the batch, then each image's ``height`` and ``width``."""
        width, height = self._size
        names = ["output"] if len(self._out_names) == 1 else self._out_names
        seen = self._seen or [((), "FP32")] * len(names)
        outputs = [
            {"name": n, "datatype": datatype, "shape": _batched_shape(shape)}
            for n, (shape, datatype) in zip(names, seen, strict=True)
        ]
        outputs += [{"name": n, "datatype": "INT64", "shape": [-1]} for n in ("height", "width")]
        return {
            "inputs": [image_tensor_metadata("image", self._max_pixels, size=[width, height])],
            "outputs": outputs,
        }

    def warmup_input(self) -> np.ndarray:
        width, height = self._size
        return np.full((height, width, 3), 127, dtype=np.uint8)

    def close(self) -> None:
        self._net = None


def _batched_shape(shape: tuple[int, ...]) -> list[int]:
    """An output's shape over a batch (see :func:`_concat`): SSD detections ``[1, 1, -1, 7]`` (the
    images' rows stacked, column 0 the image), anything else ``[-1, ...]``; ``[-1]`` if unseen."""
    if len(shape) == 4 and shape[:2] == (1, 1) and shape[3] == 7:
        return [1, 1, -1, 7]
    return [-1, *shape[1:]]


def _is_detections(array: np.ndarray) -> bool:
    return array.ndim == 4 and array.shape[:2] == (1, 1) and array.shape[3] == 7


def _split(outputs: list[np.ndarray], n: int) -> list[list[np.ndarray]] | None:
    """Per-image outputs of a batch forward, or None when an output has no batch axis."""
    per_output: list[list[np.ndarray]] = []
    for out in outputs:
        if _is_detections(out):
            return None
        if out.ndim >= 1 and out.shape[0] == n:
            per_output.append([out[i : i + 1] for i in range(n)])
        else:
            return None
    return [[parts[i] for parts in per_output] for i in range(n)]


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    if arrays and all(_is_detections(a) for a in arrays):
        numbered = [a.copy() for a in arrays]
        for i, a in enumerate(numbered):
            a[..., 0] = i  # column 0 = image index within the batch
        return np.concatenate(numbered, axis=2)
    return np.concatenate(arrays, axis=0)


def _inside(root: Path, relpath: Any) -> Path:
    if not isinstance(relpath, str) or not relpath:
        raise ConfigurationError("opencv-dnn param 'config' must be a relative path")
    path = (root / relpath).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ConfigurationError("opencv-dnn param 'config' must stay inside the version folder")
    return path


def _size(value: Any) -> tuple[int, int]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 8192 for v in value)
    ):
        raise ConfigurationError("opencv-dnn param 'size' must be [width, height] in pixels")
    return int(value[0]), int(value[1])


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"opencv-dnn param '{name}' must be a number")
    return float(value)


def _count(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"opencv-dnn param '{name}' must be an integer >= {minimum}")
    return value


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"opencv-dnn param '{name}' must be true or false")
    return value
