"""Build the intruder detector's drift baseline (``baseline.json`` beside this file) from real photos.

Reference traffic: seeded crops (50-100 % of each side, half mirrored) of photos that ship with
scikit-image — people (``astronaut``, ``camera``), a cat (``chelsea``), objects (``coffee``,
``rocket``) — as PNG. Per image the cheap features of
:func:`mlgate.monitoring.features.image_features`; per answer of the bundled SSD-MobileNet-v2
(run in process, the path ``/prodfaces`` takes) the detection count, the top confidence and the
top class. Build time only (scikit-image is a dev dependency); the JSON is committed and the
service puts it in the manifest::

    python -m mlgate_services.intrusos.drift_baseline
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlgate_services.photos import crops, photo

__all__ = ["BASELINE_FILE", "OUTPUT_SPEC", "PHOTOS", "build", "crops", "detector", "main"]

BASELINE_FILE = Path(__file__).parent / "baseline.json"
OUTPUT_SPEC: dict[str, Any] = {
    "kind": "detector",
    "detections": "objetos",
    "confidence": "confianza",
    "label": "clase",
}
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket")
CROPS_PER_PHOTO = 40


def detector() -> Callable[[bytes], dict[str, Any]] | None:
    """The bundled detector's answer for an image (None when it is not installed)."""
    from mlgate_services.intrusos.service import MODEL, manifest, models_dir, service

    folder = models_dir()
    if folder is None:
        return None
    from mlgate.runtimes import create_runtime
    from mlgate.runtimes.base import LoadContext

    runtime = create_runtime("opencv-dnn")
    runtime.load(LoadContext(folder, manifest()))
    processor = service().processors[MODEL]

    def run(image: bytes) -> dict[str, Any]:
        item = runtime.decode(processor.decode({"image": base64.b64encode(image).decode()}))
        [output] = runtime.predict([item])
        out: dict[str, Any] = processor.encode(runtime.encode(output))
        return out

    return run


def build() -> dict[str, Any]:
    from mlgate.monitoring.baseline import build_baseline
    from mlgate.monitoring.features import IMAGE_FEATURES, image_features, output_rows, rows_to_columns

    detect = detector()
    if detect is None:
        raise SystemExit("the bundled detector is not installed (pip install 'mlgate[serve]')")
    images = [img for i, name in enumerate(PHOTOS) for img in crops(photo(name), CROPS_PER_PHOTO, seed=i)]
    in_rows = [image_features(img) for img in images]
    out_rows = [row for img in images for row in output_rows(detect(img), OUTPUT_SPEC)]
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
            "source": f"{CROPS_PER_PHOTO} seeded crops of each of scikit-image's {', '.join(PHOTOS)}, "
            "with the bundled SSD-MobileNet-v2's answers (drift_baseline.py)",
        },
    )


def main() -> None:
    doc = build()
    BASELINE_FILE.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {BASELINE_FILE.name}: {doc['n_rows']} images, outputs {doc['output_names']}")


if __name__ == "__main__":
    main()
