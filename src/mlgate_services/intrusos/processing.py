"""The intruder detector's own request and response shapes (SPEC §2.1), around a generic image runtime.

``decode`` takes ``{"body": {"image": b64}}``, ``{"image": b64}``, API Gateway's
``{"body": "<json string>"}`` or an uploaded file (:class:`~mlgate.types.RawInput`) and
returns the image's bytes, checked for size (6 MB) and format (JPEG/PNG/WebP by magic
bytes). Decoding the pixels is left to the runtime's ``decode``, which the dataplane runs
off the event loop and which applies the pixel cap and EXIF orientation
(:func:`mlgate.runtimes.images.decode_image`).

``encode`` accepts either detector's output, so swapping the model is pushing a version:

- ``opencv-dnn`` SSD: ``{"output": [1, 1, N, 7], "height": h, "width": w}``, rows of
  (image, 90-map COCO class id, score, x1, y1, x2, y2) with normalised coordinates;
- ``yolo``: ``[{"class_id", "class", "confidence", "bbox": {xmin, ymin, xmax, ymax}}]`` in pixels;

and answers ``{"detectado", "intruso_detectado", "objetos": [{"clase", "confianza", "bbox"}],
"total_objetos"}`` with every detection scoring at least ``threshold``, best first.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import orjson

from mlgate.errors import InvalidInput, PayloadTooLarge, PredictionFailed
from mlgate.runtimes.images import sniff_image_format
from mlgate.types import Manifest, RawInput
from mlgate_services.intrusos.labels import class_name

__all__ = ["DEFAULT_INTRUDERS", "DEFAULT_THRESHOLD", "MAX_IMAGE_BYTES", "IntruderProcessor"]

MAX_IMAGE_BYTES = 6 * 1024 * 1024
DEFAULT_THRESHOLD = 0.5
DEFAULT_INTRUDERS = ("person", "dog", "cat", "bear")

_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,")
_EXPECTED = (
    'expected {"body": {"image": "<base64 JPEG/PNG/WebP>"}}, {"image": "<base64>"}, '
    "a multipart file upload or a raw image/jpeg, image/png or image/webp body"
)


class IntruderProcessor:
    """Image in; ``{"detectado", "intruso_detectado", "objetos", "total_objetos"}`` out."""

    def __init__(
        self,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        intruder_classes: Iterable[str] = DEFAULT_INTRUDERS,
        max_image_bytes: int = MAX_IMAGE_BYTES,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            raise ValueError("threshold must be a number between 0 and 1")
        classes = tuple(intruder_classes)
        if isinstance(intruder_classes, str) or not all(isinstance(c, str) and c for c in classes):
            raise ValueError("intruder_classes must be a list of class names")
        self.threshold = float(threshold)
        self.intruder_classes = frozenset(classes)
        self.max_image_bytes = max_image_bytes

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> IntruderProcessor:
        """Built from a manifest's ``threshold`` and ``intruder_classes`` params (defaults otherwise)."""
        return cls(
            threshold=params.get("threshold", DEFAULT_THRESHOLD),
            intruder_classes=params.get("intruder_classes", DEFAULT_INTRUDERS),
        )

    # -- request ---------------------------------------------------------------------------

    def for_version(self, manifest: Manifest) -> IntruderProcessor:
        """This version's own threshold and intruder classes (a pushed YOLO, say)."""
        return IntruderProcessor.from_params(manifest.params)

    def decode(self, payload: Any) -> bytes:
        if isinstance(payload, RawInput):
            data = payload.data
        else:
            data = self._base64(_image_field(payload))
        if not data:
            raise InvalidInput("the image is empty")
        if len(data) > self.max_image_bytes:
            raise PayloadTooLarge(f"the image is larger than {self.max_image_bytes // (1024 * 1024)} MB")
        if sniff_image_format(data) is None:
            raise InvalidInput("the image must be JPEG, PNG or WebP (GIF, BMP and other formats are refused)")
        return data

    def _base64(self, text: str) -> bytes:
        # Clients often wrap base64 at 76 columns (`base64 photo.jpg`): whitespace is not data.
        text = "".join(_DATA_URL.sub("", text.strip(), count=1).split())
        if len(text) * 3 // 4 > self.max_image_bytes + 3:
            raise PayloadTooLarge(f"the image is larger than {self.max_image_bytes // (1024 * 1024)} MB")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("'image' is not valid base64") from None

    # -- response --------------------------------------------------------------------------

    def encode(self, output: Any) -> dict[str, Any]:
        if isinstance(output, Mapping) and "output" in output:
            found = self._ssd(output)
        elif isinstance(output, list):
            found = self._yolo(output)
        else:
            raise PredictionFailed(
                "the detector's output is neither SSD ({'output': [1,1,N,7], 'height', 'width'}) "
                "nor a YOLO detection list"
            )
        found.sort(key=lambda d: d[1], reverse=True)
        objects = [
            {
                "clase": name,
                "confianza": round(score, 4),
                "bbox": {k: round(v, 1) for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)},
            }
            for name, score, box in found
        ]
        return {
            "detectado": bool(objects),
            "intruso_detectado": any(o["clase"] in self.intruder_classes for o in objects),
            "objetos": objects,
            "total_objetos": len(objects),
        }

    def _ssd(self, output: Mapping[str, Any]) -> list[tuple[str, float, list[float]]]:
        rows = np.asarray(output["output"], dtype=np.float64).reshape(-1, 7)
        width, height = float(output["width"]), float(output["height"])
        scale = np.asarray([width, height, width, height])
        found = []
        for row in rows[rows[:, 2] >= self.threshold]:
            box = (np.clip(row[3:7], 0.0, 1.0) * scale).tolist()
            found.append((class_name(int(row[1])), float(row[2]), box))
        return found

    def _yolo(self, output: list[Any]) -> list[tuple[str, float, list[float]]]:
        found = []
        for det in output:
            score = float(det["confidence"])
            if score >= self.threshold:
                b = det["bbox"]
                box = [float(b["xmin"]), float(b["ymin"]), float(b["xmax"]), float(b["ymax"])]
                found.append((str(det["class"]), score, box))
        return found


def _image_field(payload: Any) -> str:
    """The base64 text of ``{"image": ...}``, ``{"body": {"image": ...}}`` or ``{"body": "<json>"}``."""
    if isinstance(payload, dict) and "image" not in payload and "body" in payload:
        payload = payload["body"]
        if isinstance(payload, str | bytes):
            try:
                payload = orjson.loads(payload)
            except orjson.JSONDecodeError:
                raise InvalidInput(f"'body' is a string but not a JSON document; {_EXPECTED}") from None
    if not isinstance(payload, dict) or "image" not in payload:
        raise InvalidInput(_EXPECTED)
    image = payload["image"]
    if not isinstance(image, str) or not image.strip():
        raise InvalidInput("'image' must be a non-empty base64 string")
    return image
