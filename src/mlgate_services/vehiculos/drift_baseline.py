"""Build the vehicle classifier's drift baseline (``baseline.json`` beside this file) from real photos.

Reference traffic: 200 seeded crops (50-100 % of each side, half of them mirrored) of
scikit-image's ``stereo_motorcycle`` pair (100 of each photo), as PNG. Per image the cheap features of
:func:`mlgate.monitoring.features.image_features`; per answer of the bundled EfficientNet-Lite3
(run in process, the same path as ``/v1/models/vehiculos/predict``) the top class, its
probability and ``[p_bicycle, p_motorcycle]``. Build time only (scikit-image is a dev
dependency); the JSON is committed and the service puts it in the manifest::

    python -m mlgate_services.vehiculos.drift_baseline
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlgate_services.photos import crops, photo

__all__ = ["BASELINE_FILE", "OUTPUT_SPEC", "build", "classifier", "crops", "main", "photo"]

BASELINE_FILE = Path(__file__).parent / "baseline.json"
OUTPUT_SPEC: dict[str, Any] = {
    "kind": "classifier",
    "label": "top.0.clase",
    "confidence": "top.0.probabilidad",
    "scores": "inferences",
    "labels": ["bicycle", "motorcycle"],
}
REFERENCE_CROPS = 100  # per photo of the stereo pair


def classifier() -> Callable[[bytes], dict[str, Any]] | None:
    """The bundled model's answer for an image (None when it is not installed)."""
    from mlgate_services.vehiculos.service import MODEL, service

    svc = service()
    if not svc.models:
        return None
    try:
        from mlgate.runtimes.base import LoadContext
        from mlgate.runtimes.tflite import TfliteRuntime
    except ImportError:
        return None
    bundled = svc.models[0]
    runtime = TfliteRuntime()
    runtime.load(LoadContext(bundled.artifact_dir, bundled.manifest))
    processor = svc.processors[MODEL]

    def run(image: bytes) -> dict[str, Any]:
        x = runtime.decode(processor.decode({"image": base64.b64encode(image).decode()}))
        [y] = runtime.predict([x])
        out: dict[str, Any] = processor.encode(runtime.encode(y))
        return out

    return run


def build() -> dict[str, Any]:
    from mlgate.monitoring.baseline import build_baseline
    from mlgate.monitoring.features import IMAGE_FEATURES, image_features, output_rows, rows_to_columns

    classify = classifier()
    if classify is None:
        raise SystemExit("the bundled vehicle model is not installed (pip install 'mlgate[serve]')")
    images = crops(photo("motorcycle_left"), REFERENCE_CROPS, seed=1)
    images += crops(photo("motorcycle_right"), REFERENCE_CROPS, seed=2)
    in_rows = [image_features(img) for img in images]
    out_rows = [row for img in images for row in output_rows(classify(img), OUTPUT_SPEC)]
    columns, _, _ = rows_to_columns(in_rows)
    out_columns, _, outputs = rows_to_columns(out_rows)
    columns.update(out_columns)
    return build_baseline(
        columns,
        feature_names=list(IMAGE_FEATURES),
        output_names=outputs,
        input_spec={"type": "image", "key": "image"},
        output_spec=OUTPUT_SPEC,
        meta={
            "source": f"{REFERENCE_CROPS} seeded crops of each of scikit-image's stereo_motorcycle photos, "
            "with the bundled EfficientNet-Lite3's answers (drift_baseline.py)",
        },
    )


def main() -> None:
    doc = build()
    BASELINE_FILE.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {BASELINE_FILE.name}: {doc['n_rows']} images, outputs {doc['output_names']}")


if __name__ == "__main__":
    main()
