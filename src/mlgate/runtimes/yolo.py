"""YOLO detectors (YOLOv8, YOLO11, YOLO26): ONNX exports on onnxruntime, trusted ``.pt`` via ultralytics.

Each item is one image, decoded like ``opencv-dnn``: an HxWx3 uint8 BGR array, JPEG/PNG/WebP
bytes, base64 text, a :class:`~mlgate.types.RawInput` upload or ``{"image": ...}``. Its
output is the list of detections, best first, in pixels of the (EXIF-rotated) image::

    [{"class_id": 0, "class": "person", "confidence": 0.91,
      "bbox": {"xmin": 12.0, "ymin": 30.5, "xmax": 200.0, "ymax": 410.0}}]

ONNX (what ``yolo export format=onnx`` writes): the image is letterboxed as ultralytics does
(aspect kept, centred, grey 114 padding), RGB, /255, NCHW. A classic head outputs
``[1, 4+C, N]`` (cx, cy, w, h in input pixels, then C class scores): each anchor keeps its best
class, the confidence filter keeps ``score >= conf``, class-wise NMS drops a box overlapping a
better one of the same class by IoU > ``iou``, at most ``max_det`` remain. An end-to-end head
(YOLO26, ``[1, N, 6]``: x1, y1, x2, y2, score, class) needs the confidence filter only. Boxes
are mapped back through the letterbox and clipped to the image.

Params: ``imgsz`` (int or [h, w]; default the model's fixed input size, else its ``imgsz``
metadata, else 640), ``conf`` (0.25), ``iou`` (0.45), ``max_det`` (300), ``names`` (list, or
{id: name}; default the ONNX metadata ``names`` that ultralytics writes), ``threads``
(onnxruntime intra-op threads, 1), ``max_pixels`` (decoded image limit).

``.pt``/``.pth`` checkpoints are pickles: loaded only for trusted versions, through ultralytics
(``pip install 'mlgate[yolo-pt]'``), with the same params and output.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

import numpy as np

from mlgate.errors import ConfigurationError, InvalidInput, PredictionFailed, UnsafeArtifact
from mlgate.runtimes.base import LoadContext, ModelRuntime, import_optional, load_failed
from mlgate.runtimes.images import DEFAULT_MAX_PIXELS, decode_image_input, image_tensor_metadata
from mlgate.types import RawInput

__all__ = ["YoloRuntime", "letterbox", "nms", "postprocess"]

PAD_VALUE = 114
_PICKLES = (".pt", ".pth")
_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class YoloRuntime(ModelRuntime):
    """A YOLO detector; ONNX sessions batch along a dynamic first dimension."""

    name = "yolo"
    heavy_decode = True

    def __init__(self) -> None:
        self._session: Any = None
        self._ultralytics: Any = None
        self._cv2: Any = None
        self._input = ""
        self._dtype: Any = np.float32
        self._dynamic_batch = False
        self._imgsz = (640, 640)
        self._conf = 0.25
        self._iou = 0.45
        self._max_det = 300
        self._names: dict[int, str] = {}
        self._max_pixels = DEFAULT_MAX_PIXELS

    # -- loading ---------------------------------------------------------------------------

    def load(self, ctx: LoadContext) -> None:
        p = ctx.params
        self._conf = _fraction(p.get("conf", 0.25), "conf")
        self._iou = _fraction(p.get("iou", 0.45), "iou")
        self._max_det = _count(p.get("max_det", 300), "max_det")
        self._max_pixels = _count(p.get("max_pixels", DEFAULT_MAX_PIXELS), "max_pixels")
        threads = p.get("threads", 1)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ConfigurationError("yolo param 'threads' must be a non-negative integer")
        suffix = ctx.artifact_path.suffix.lower()
        if suffix in _PICKLES:
            self._load_pt(ctx)
        elif suffix == ".onnx":
            self._load_onnx(ctx, threads)
        else:
            raise ConfigurationError("yolo runtime loads ONNX exports (.onnx) or trusted .pt checkpoints")
        if "names" in p:
            self._names = _names(p["names"])

    def _load_onnx(self, ctx: LoadContext, threads: int) -> None:
        import onnxruntime as ort

        self._cv2 = import_optional("cv2", extra="opencv")
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
        inputs = session.get_inputs()
        node = inputs[0] if len(inputs) == 1 else None
        if node is None or len(node.shape or []) != 4 or node.type not in _ONNX_DTYPES:
            raise ConfigurationError("yolo ONNX model must take one float NCHW image tensor")
        if len(session.get_outputs()[0].shape or []) != 3:
            raise ConfigurationError("yolo ONNX model's first output must be [batch, 4+classes, anchors]")
        self._input, self._dtype = node.name, _ONNX_DTYPES[node.type]
        batch, _, height, width = (d if isinstance(d, int) and d > 0 else None for d in node.shape)
        self._dynamic_batch = batch is None
        meta = dict(session.get_modelmeta().custom_metadata_map or {})
        fixed = (height, width) if height is not None and width is not None else None
        default = fixed or _meta_literal(meta, "imgsz") or 640
        self._imgsz = _imgsz(ctx.params.get("imgsz", default))
        if fixed is not None and self._imgsz != fixed:
            raise ConfigurationError(f"yolo param 'imgsz' {list(self._imgsz)} != model input {list(fixed)}")
        meta_names = _meta_literal(meta, "names")
        if meta_names is not None:
            self._names = _names(meta_names)
        self._session = session

    def _load_pt(self, ctx: LoadContext) -> None:
        if not ctx.trusted:
            raise UnsafeArtifact(
                f"'{ctx.manifest.artifact}' is a pickle (loading it executes code): mark the version "
                "trusted or pin its sha256, or export it to ONNX (`yolo export model=... format=onnx`)"
            )
        ultralytics = import_optional("ultralytics", extra="yolo-pt")
        try:
            model = ultralytics.YOLO(str(ctx.artifact_path))
        except Exception as exc:
            raise load_failed(self.name, exc) from exc
        self._imgsz = _imgsz(ctx.params.get("imgsz", 640))
        self._names = _names(dict(model.names))
        self._ultralytics = model

    # -- serving ---------------------------------------------------------------------------

    def decode(self, payload: Any) -> np.ndarray:
        if isinstance(payload, RawInput):
            payload = payload.data
        elif isinstance(payload, Mapping):
            if len(payload) != 1 or next(iter(payload)) not in ("image", "inputs"):
                raise InvalidInput('expected an image, or {"image": "<base64 JPEG/PNG/WebP>"}')
            payload = next(iter(payload.values()))
        return decode_image_input(payload, max_pixels=self._max_pixels)

    def decode_tensors(self, tensors: dict[str, np.ndarray]) -> list[Any]:
        """One BYTES tensor of encoded images (str = base64) or one [N, H, W, 3] UINT8 tensor."""
        if len(tensors) != 1:
            raise InvalidInput(f"expected exactly one input tensor, got {len(tensors)}")
        (array,) = tensors.values()
        if array.ndim == 0:
            raise InvalidInput("input tensor must have a batch dimension")
        return [self.decode(row) for row in array]

    def predict(self, batch: list[Any]) -> list[Any]:
        if not batch:
            return []
        if self._ultralytics is not None:
            return self._predict_pt(batch)
        boxed = [letterbox(img, self._imgsz, cv2=self._cv2) for img in batch]
        blobs = [
            (canvas[:, :, ::-1].transpose(2, 0, 1) / 255.0).astype(self._dtype) for canvas, _, _ in boxed
        ]
        if self._dynamic_batch and len(blobs) > 1:
            outputs = list(self._run(np.stack(blobs)))
        else:
            outputs = [self._run(blob[None])[0] for blob in blobs]
        return [
            self._detections(postprocess(out, shape=img.shape[:2], gain=gain, pad=pad, **self._limits()))
            for out, img, (_, gain, pad) in zip(outputs, batch, boxed, strict=True)
        ]

    def _run(self, blob: np.ndarray) -> np.ndarray:
        out = np.asarray(self._session.run(None, {self._input: blob})[0], dtype=np.float64)
        if out.ndim != 3 or out.shape[0] != len(blob):
            raise PredictionFailed(f"yolo output must be [batch, 4+classes, anchors], got {list(out.shape)}")
        return out

    def _limits(self) -> dict[str, Any]:
        return {"conf": self._conf, "iou": self._iou, "max_det": self._max_det, "classes": len(self._names)}

    def _predict_pt(self, batch: list[np.ndarray]) -> list[Any]:
        results = self._ultralytics.predict(
            list(batch), imgsz=list(self._imgsz), conf=self._conf, iou=self._iou,
            max_det=self._max_det, device="cpu", verbose=False,
        )  # fmt: skip
        out = []
        for r in results:
            b = r.boxes
            rows = np.concatenate(
                [b.xyxy.cpu().numpy(), b.conf.cpu().numpy()[:, None], b.cls.cpu().numpy()[:, None]], axis=1
            )
            out.append(self._detections(rows.astype(np.float64)))
        return out

    def _detections(self, rows: np.ndarray) -> list[dict[str, Any]]:
        found = []
        for x1, y1, x2, y2, score, cls in rows.tolist():
            class_id = int(cls)
            box = {"xmin": x1, "ymin": y1, "xmax": x2, "ymax": y2}
            name = self._names.get(class_id, str(class_id))
            found.append({"class_id": class_id, "class": name, "confidence": score, "bbox": box})
        return found

    def encode_tensors(self, outputs: list[Any]) -> dict[str, np.ndarray]:
        """Padded to the longest item: boxes [N, K, 4], scores [N, K], classes [N, K], num_detections [N]."""
        k = max((len(o) for o in outputs), default=0)
        boxes = np.zeros((len(outputs), k, 4), np.float32)
        scores = np.zeros((len(outputs), k), np.float32)
        classes = np.full((len(outputs), k), -1, np.int64)
        for i, dets in enumerate(outputs):
            for j, d in enumerate(dets):
                b = d["bbox"]
                boxes[i, j] = (b["xmin"], b["ymin"], b["xmax"], b["ymax"])
                scores[i, j], classes[i, j] = d["confidence"], d["class_id"]
        counts = np.asarray([len(o) for o in outputs], np.int64)
        return {"boxes": boxes, "scores": scores, "classes": classes, "num_detections": counts}

    def metadata(self) -> dict[str, Any]:
        height, width = self._imgsz
        names = [self._names[i] for i in sorted(self._names)]
        return {
            "inputs": [image_tensor_metadata("image", self._max_pixels, imgsz=[height, width])],
            "outputs": [
                {"name": "boxes", "datatype": "FP32", "shape": [-1, -1, 4]},
                {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
                {"name": "classes", "datatype": "INT64", "shape": [-1, -1], "parameters": {"names": names}},
                {"name": "num_detections", "datatype": "INT64", "shape": [-1]},
            ],
        }

    def warmup_input(self) -> np.ndarray:
        height, width = self._imgsz
        return np.full((height, width, 3), PAD_VALUE, dtype=np.uint8)

    def close(self) -> None:
        self._session = self._ultralytics = None


def letterbox(
    image: np.ndarray, size: tuple[int, int], *, cv2: Any
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping the aspect ratio and pad to ``size`` (h, w) as ultralytics' ``LetterBox``.

    Returns the canvas, the scale ``gain`` and the ``(left, top)`` padding.
    """
    height, width = image.shape[:2]
    new_h, new_w = size
    gain = min(new_h / height, new_w / width)
    unpad_w, unpad_h = round(width * gain), round(height * gain)
    if (unpad_w, unpad_h) != (width, height):
        image = cv2.resize(image, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (new_w - unpad_w) / 2, (new_h - unpad_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    canvas = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return canvas, gain, (left, top)


def postprocess(
    output: np.ndarray,
    *,
    shape: tuple[int, int],
    gain: float,
    pad: tuple[int, int],
    conf: float,
    iou: float,
    max_det: int,
    classes: int = 0,
) -> np.ndarray:
    """One image's raw output -> ``[K, 6]`` rows (x1, y1, x2, y2, score, class) in original pixels.

    ``output`` is ``[4+C(+extra), N]`` (classic head; ``classes`` > 0 ignores extra rows such as
    mask coefficients) or ``[N, 6(+extra)]`` (end-to-end head: more rows than columns).
    """
    if output.shape[0] > output.shape[1]:
        rows = output[:, :6]
        rows = rows[rows[:, 4] >= conf]
        rows = rows[np.argsort(-rows[:, 4], kind="stable")][:max_det]
    else:
        preds = output.T
        scores_all = preds[:, 4 : 4 + classes] if classes else preds[:, 4:]
        if scores_all.shape[1] == 0:
            raise PredictionFailed(f"yolo output has no class scores: shape {list(output.shape)}")
        cls = scores_all.argmax(axis=1)
        scores = scores_all[np.arange(len(preds)), cls]
        keep = scores >= conf
        xy, wh = preds[keep, :2], preds[keep, 2:4]
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
        cls, scores = cls[keep], scores[keep]
        order = nms(boxes, scores, iou, groups=cls)[:max_det]
        rows = np.concatenate([boxes[order], scores[order, None], cls[order, None]], axis=1)
    rows = rows.astype(np.float64, copy=True)
    height, width = shape
    rows[:, [0, 2]] = ((rows[:, [0, 2]] - pad[0]) / gain).clip(0, width)
    rows[:, [1, 3]] = ((rows[:, [1, 3]] - pad[1]) / gain).clip(0, height)
    return rows


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, *, groups: np.ndarray | None = None) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best first.

    A box is dropped when its IoU with a kept, better-scoring box of the same group exceeds ``iou``.
    """
    order = np.argsort(-scores, kind="stable")
    if groups is not None and len(boxes):
        # Shift each group far apart so boxes of different groups never overlap (batched NMS).
        boxes = boxes + (groups.astype(np.float64) * (np.abs(boxes).max() * 2 + 1))[:, None]
    areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    keep: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        inter_w = (
            np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0])
        ).clip(0)
        inter_h = (
            np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1])
        ).clip(0)
        inter = inter_w * inter_h
        union = areas[best] + areas[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def _meta_literal(meta: Mapping[str, str], key: str) -> Any:
    try:
        return ast.literal_eval(meta[key])  # literals only: never executes code
    except (KeyError, ValueError, SyntaxError):
        return None


def _names(value: Any) -> dict[int, str]:
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return dict(enumerate(value))
    if isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values()):
        try:
            return {int(k): v for k, v in value.items()}
        except (TypeError, ValueError):
            pass
    raise ConfigurationError("yolo param 'names' must be a list of class names or {id: name}")


def _imgsz(value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 8192 for v in value)
    ):
        raise ConfigurationError("yolo param 'imgsz' must be a size in pixels or [height, width]")
    return int(value[0]), int(value[1])


def _fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigurationError(f"yolo param '{name}' must be a number between 0 and 1")
    return float(value)


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"yolo param '{name}' must be a positive integer")
    return value
