"""TensorFlow Lite models on ai-edge-litert's ``Interpreter`` (one input, batch size 1).

Image models (the default when the input is ``[1, H, W, 1|3]``) take an image — HxWx3
uint8 BGR array, JPEG/PNG/WebP bytes or base64 text — resized to the input's HxW; other
models take a numeric tensor of the input's shape without the batch dimension
(``params["input"] = "tensor"``). Quantized inputs are quantized and quantized outputs are
dequantized, so an item's output is always float32::

    runtime.predict([runtime.decode(jpeg_bytes)])   # -> [array([...1000 scores...], float32)]

Image preprocessing: ``rgb`` (default true: feed RGB), then uint8 inputs get raw pixels,
int8 inputs ``pixel - 128``, float inputs ``(pixel - mean) / std`` (``mean``/``std`` default
127.5; given explicitly for a quantized input they are applied before quantizing).

Params: ``threads`` (default 1), ``input`` ("image" | "tensor"), ``rgb``, ``mean``, ``std``,
``max_pixels``. The interpreter is not thread-safe: a batch runs item by item under a lock.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from mlgate.errors import ConfigurationError, InvalidInput
from mlgate.runtimes.base import (
    LoadContext,
    ModelRuntime,
    import_optional,
    load_failed,
    numeric_array,
    oip_datatype,
)
from mlgate.runtimes.images import DEFAULT_MAX_PIXELS, decode_image_input, image_tensor_metadata

__all__ = ["TfliteRuntime"]


class TfliteRuntime(ModelRuntime):
    """A LiteRT interpreter; every invocation holds ``self._lock``."""

    name = "tflite"
    heavy_decode = True

    def __init__(self) -> None:
        self._interpreter: Any = None
        self._lock = threading.Lock()
        self._input: dict[str, Any] = {}
        self._outputs: list[dict[str, Any]] = []
        self._mode = "tensor"
        self._batched = True
        self._rgb = True
        self._normalize: tuple[np.ndarray, np.ndarray] | None = None
        self._max_pixels = DEFAULT_MAX_PIXELS

    def load(self, ctx: LoadContext) -> None:
        litert = import_optional("ai_edge_litert.interpreter", extra="tflite")
        p = ctx.params
        threads = p.get("threads", 1)
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ConfigurationError("tflite param 'threads' must be a positive integer")
        try:
            interpreter = litert.Interpreter(model_path=str(ctx.artifact_path), num_threads=threads)
            interpreter.allocate_tensors()
        except Exception as exc:
            raise load_failed(self.name, exc) from exc
        inputs = interpreter.get_input_details()
        if len(inputs) != 1:
            raise ConfigurationError(f"tflite runtime supports one input, the model has {len(inputs)}")
        self._input = inputs[0]
        self._outputs = list(interpreter.get_output_details())
        shape = tuple(int(d) for d in self._input["shape"])
        self._batched = len(shape) > 0 and shape[0] == 1
        looks_like_image = len(shape) == 4 and shape[0] == 1 and shape[3] in (1, 3)
        self._mode = p.get("input", "image" if looks_like_image else "tensor")
        if self._mode not in ("image", "tensor"):
            raise ConfigurationError("tflite param 'input' must be 'image' or 'tensor'")
        if self._mode == "image" and not looks_like_image:
            raise ConfigurationError(f"tflite input shape {list(shape)} is not an image [1, H, W, 1|3]")
        self._rgb = p.get("rgb", True)
        if not isinstance(self._rgb, bool):
            raise ConfigurationError("tflite param 'rgb' must be true or false")
        max_pixels = p.get("max_pixels", DEFAULT_MAX_PIXELS)
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise ConfigurationError("tflite param 'max_pixels' must be a positive integer")
        self._max_pixels = max_pixels
        dtype = np.dtype(self._input["dtype"])
        quantized = dtype.kind in "iu" and _scale(self._input) != 0.0
        if self._mode == "image" and dtype.kind != "f" and dtype not in (np.uint8, np.int8):
            raise ConfigurationError(f"tflite image input of type {dtype.name} is not supported")
        if dtype.kind == "f" or (quantized and ("mean" in p or "std" in p)):
            try:
                mean = np.asarray(p.get("mean", 127.5), dtype=np.float32)
                std = np.asarray(p.get("std", 127.5), dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError("tflite params 'mean'/'std' must be numbers or lists of 3") from exc
            if mean.size not in (1, 3) or std.size not in (1, 3) or not np.all(np.isfinite(std) & (std != 0)):
                raise ConfigurationError(
                    "tflite params 'mean'/'std' must be numbers or lists of 3; std not 0"
                )
            self._normalize = (mean, std)
        self._interpreter = interpreter

    @property
    def _item_shape(self) -> tuple[int, ...]:
        shape = tuple(int(d) for d in self._input["shape"])
        return shape[1:] if self._batched else shape

    # -- decoding --------------------------------------------------------------------------

    def decode(self, payload: Any) -> np.ndarray:
        if self._mode == "image":
            return self._decode_image(payload)
        dtype = np.dtype(self._input["dtype"])
        quantized = dtype.kind in "iu" and _scale(self._input) != 0.0
        values = numeric_array(payload, dtype=np.float64 if quantized else dtype)
        if values.shape != self._item_shape:
            raise InvalidInput(
                f"input must have shape {list(self._item_shape)} (without the batch dimension), "
                f"got {list(values.shape)}"
            )
        return _quantize(values, self._input) if quantized else values

    def _decode_image(self, payload: Any) -> np.ndarray:
        pil_image: Any = import_optional("PIL.Image", extra="runtimes")
        bgr = decode_image_input(payload, max_pixels=self._max_pixels)
        height, width, channels = self._item_shape
        im = pil_image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]) if self._rgb else bgr)
        if (im.width, im.height) != (width, height):
            im = im.resize((width, height), pil_image.Resampling.BILINEAR)
        if channels == 1:
            im = im.convert("L")
        pixels = np.asarray(im, dtype=np.uint8).reshape(height, width, channels)
        dtype = np.dtype(self._input["dtype"])
        if self._normalize is not None:
            mean, std = self._normalize
            real = (pixels.astype(np.float32) - mean) / std
            return _quantize(real, self._input) if dtype.kind in "iu" else real.astype(dtype)
        if dtype == np.int8:
            return (pixels.astype(np.int16) - 128).astype(np.int8)
        return pixels

    def decode_tensors(self, tensors: dict[str, np.ndarray]) -> list[Any]:
        if len(tensors) != 1:
            raise InvalidInput(f"expected exactly one input tensor, got {len(tensors)}")
        (array,) = tensors.values()
        if array.ndim == 0:
            raise InvalidInput("input tensor must have a batch dimension")
        return [self.decode(row) for row in array]

    # -- prediction ------------------------------------------------------------------------

    def predict(self, batch: list[Any]) -> list[Any]:
        results: list[Any] = []
        with self._lock:
            for x in batch:
                self._interpreter.set_tensor(self._input["index"], x[None] if self._batched else x)
                self._interpreter.invoke()
                outs = [_dequantize(self._interpreter.get_tensor(o["index"]), o) for o in self._outputs]
                if self._batched:
                    outs = [o[0] if o.ndim and o.shape[0] == 1 else o for o in outs]
                if len(outs) == 1:
                    results.append(outs[0])
                else:
                    results.append({o["name"]: v for o, v in zip(self._outputs, outs, strict=True)})
        return results

    def encode_tensors(self, outputs: list[Any]) -> dict[str, np.ndarray]:
        if len(self._outputs) == 1:
            return {self._outputs[0]["name"]: np.stack(outputs)}
        return {o["name"]: np.stack([item[o["name"]] for item in outputs]) for o in self._outputs}

    # -- description -----------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        name = self._input["name"]
        if self._mode == "image":
            height, width, _ = self._item_shape
            inputs = [image_tensor_metadata(name, self._max_pixels, size=[width, height])]
        else:
            dtype = np.dtype(self._input["dtype"])
            datatype = "FP32" if _scale(self._input) != 0.0 else oip_datatype(dtype)
            inputs = [{"name": name, "datatype": datatype, "shape": [-1, *self._item_shape]}]
        outputs = [
            {"name": o["name"], "datatype": "FP32", "shape": [-1, *(int(d) for d in o["shape"][1:])]}
            for o in self._outputs
        ]
        return {"inputs": inputs, "outputs": outputs}

    def warmup_input(self) -> np.ndarray:
        return np.zeros(self._item_shape, dtype=self._input["dtype"])

    def close(self) -> None:
        self._interpreter = None


def _scale(detail: dict[str, Any]) -> float:
    return float(detail.get("quantization", (0.0, 0))[0])


def _quantize(real: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    dtype = np.dtype(detail["dtype"])
    info = np.iinfo(dtype)
    q: np.ndarray = np.round(real / float(scale) + float(zero_point))
    quantized: np.ndarray = np.clip(q, info.min, info.max).astype(dtype)
    return quantized


def _dequantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if value.dtype.kind not in "iu":
        return value.astype(np.float32, copy=False)
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), dtype=np.float32)
    zero_points = np.asarray(params.get("zero_points", []), dtype=np.float32)
    if scales.size == 0:
        return value.astype(np.float32)
    if scales.size > 1:  # per-axis quantization
        axis = int(params.get("quantized_dimension", 0))
        shape = [1] * value.ndim
        shape[axis] = scales.size
        scales, zero_points = scales.reshape(shape), zero_points.reshape(shape)
    return ((value.astype(np.float32) - zero_points) * scales).astype(np.float32)
