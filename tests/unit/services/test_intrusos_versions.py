"""A pushed version's own params reach the intruder processor (Processor.for_version)."""

from __future__ import annotations

import numpy as np

from mlgate.types import Manifest
from mlgate_services.intrusos.processing import IntruderProcessor


def _ssd_output(score: float, class_id: int) -> dict[str, object]:
    rows = np.array([[[[0, class_id, score, 0.1, 0.1, 0.5, 0.5]]]], dtype=np.float32)
    return {"output": rows, "height": 100, "width": 100}


def test_for_version_uses_the_manifest_params() -> None:
    base = IntruderProcessor()
    strict = base.for_version(
        Manifest(
            runtime="opencv-dnn", artifact="m.pb", params={"threshold": 0.9, "intruder_classes": ["car"]}
        )
    )
    out = _ssd_output(0.7, 1)  # a person at 0.7
    assert base.encode(out)["intruso_detectado"] is True
    assert strict.encode(out)["total_objetos"] == 0
    car = strict.encode(_ssd_output(0.95, 3))  # COCO id 3 = car
    assert car["intruso_detectado"] is True
